//! `MetricsHook` keeps the connection-duration histogram handles it looked up: every close is
//! still recorded under its own labels, and handles of one recorder are never used with
//! another.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;

use conntrack_core::metrics::MetricsHook;
use conntrack_core::{Registration, TlsInfo, Tracker};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The `_count` of the duration summary for the series whose labels contain all of `labels`.
fn count(rendered: &str, labels: &[&str]) -> u64 {
    rendered
        .lines()
        .filter(|l| l.starts_with("conntrack_connection_duration_count{"))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn close(tracker: &Tracker, category: &str, tls: bool) {
    let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let c = tracker.register(Registration::server(a, b).category(category));
    if tls {
        c.set_tls(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256"));
    }
    drop(c);
}

#[test]
fn kept_handles_record_every_close_under_its_labels_and_follow_the_recorder() {
    let hook = MetricsHook::new();
    let tracker = Tracker::builder().hook(hook.clone()).build();
    // Two recorders alive at once, each made current in turn: the handles kept under one must
    // not be used with the other.
    let recorders = [
        PrometheusBuilder::new().build_recorder(),
        PrometheusBuilder::new().build_recorder(),
    ];
    for round in 0..4 {
        metrics::with_local_recorder(&recorders[round % 2], || {
            close(&tracker, "a", false);
            close(&tracker, "a", true);
            close(&tracker, "b", false);
            close(&tracker, "a", false);
        });
    }
    for r in &recorders {
        let out = r.handle().render();
        assert_eq!(
            count(
                &out,
                &[
                    "category=\"a\"",
                    "role=\"server\"",
                    "network_transport=\"tcp\""
                ]
            ),
            6,
            "{out}"
        );
        assert_eq!(
            count(&out, &["category=\"a\"", "tls_protocol_version=\"1.3\""]),
            2,
            "{out}"
        );
        assert_eq!(count(&out, &["category=\"b\""]), 2, "{out}");
    }
}
