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

/// The hooks a request lends to a connection dialed for it last as long as its dial scope is
/// held (the request's future, a captured copy), as a scope's hooks always do: once the scope
/// is dropped (hyper-util has answered the request and dropped its future), the connection,
/// pooled and maybe serving other requests, no longer reports to the request, even while the
/// request's body is still being read.
#[test]
fn dial_scope_hooks_end_when_the_scope_is_dropped() {
    let tracker = Tracker::new();
    let own = RecordingHook::new();
    let req = tracker.request_with_hook("GET", "http://example.test/", Arc::new(own.clone()));
    let dial_scope = req.dial_scope();
    let copy = dial_scope.clone();
    let conn = dial_scope.run(|| {
        let dial = tracker.dial(&DialerConfig::new(), "example.test:80");
        let (local, remote) = addrs();
        dial.established(local, remote)
    });
    conn.report_tls_handshake_start(Some("example.test"));
    drop(dial_scope);
    // A copy still holds the scope.
    conn.report_tls_handshake_start(Some("example.test"));
    assert_eq!(
        own.names(),
        ["dial", "tls_handshake_start", "tls_handshake_start"]
    );
    drop(copy);
    conn.report_tls_handshake_start(Some("example.test"));
    drop(conn);
    assert_eq!(
        own.names(),
        ["dial", "tls_handshake_start", "tls_handshake_start"],
        "nothing once the scope is gone, though the request has not ended"
    );
    req.finish();
}

/// A scope asked for after the request ended (a dial the request left running in the
/// background starts later) has no hooks.
#[test]
fn dial_scope_asked_after_the_request_ended_is_silent() {
    let tracker = Tracker::new();
    let own = RecordingHook::new();
    let req = tracker.request_with_hook("GET", "http://example.test/", Arc::new(own.clone()));
    let dial_scope = req.dial_scope();
    req.finish();
    dial_scope.run(|| {
        let mut dial = tracker.dial(&DialerConfig::new(), "example.test:80");
        dial.dns_start("example.test");
    });
    assert!(own.names().is_empty(), "{:?}", own.names());
}
