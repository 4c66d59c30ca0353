//! A request's hooks on the connections dialed for it (`RequestTrace::dial_scope`) stop at the
//! end of the request; `trace::capture` carries a scope to code run later.

use std::net::SocketAddr;
use std::sync::Arc;

use conntrack_core::{trace, DialerConfig, RecordingHook, Tracker};

fn addrs() -> (SocketAddr, SocketAddr) {
    (
        "127.0.0.1:50000".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    )
}

#[test]
fn dial_scope_reports_to_the_request_only_while_it_lasts() {
    let tracker = Tracker::new();
    let scope = RecordingHook::new();
    let own = RecordingHook::new();
    let (req, dial_scope) = trace::with(scope.clone(), || {
        let req = tracker.request_with_hook("GET", "http://example.test/", Arc::new(own.clone()));
        let s = req.dial_scope();
        (req, s)
    });
    // Dialed outside any scope, as a background task would: the captured scope applies.
    let conn = dial_scope.run(|| {
        let mut dial = tracker.dial(&DialerConfig::new(), "example.test:80");
        dial.dns_start("example.test");
        let (local, remote) = addrs();
        dial.established(local, remote)
    });
    conn.report_tls_handshake_start(Some("example.test"));
    for rec in [&scope, &own] {
        assert_eq!(rec.names(), ["dns_start", "dial", "tls_handshake_start"]);
    }
    req.finish();
    // The connection goes on (a pooled one serving other requests): the request's hooks hear
    // no more of it.
    conn.report_tls_handshake_start(Some("example.test"));
    drop(conn);
    for rec in [&scope, &own] {
        assert_eq!(rec.names(), ["dns_start", "dial", "tls_handshake_start"]);
    }
}

#[test]
fn dial_scope_is_empty_without_hooks() {
    let tracker = Tracker::new();
    let req = tracker.request("GET", "http://example.test/");
    assert!(req.dial_scope().is_empty());
}

#[test]
fn captured_scope_applies_later_and_elsewhere() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let captured = trace::with(rec.clone(), trace::capture);
    assert!(!captured.is_empty());
    std::thread::scope(|s| {
        s.spawn(|| {
            captured.run(|| {
                let mut dial = tracker.dial(&DialerConfig::new(), "example.test:80");
                dial.dns_start("example.test");
            });
            // Outside `run`, nothing is in scope on this thread.
            let mut dial = tracker.dial(&DialerConfig::new(), "other.test:80");
            dial.dns_start("other.test");
        });
    });
    assert_eq!(rec.names(), ["dns_start"]);
}
