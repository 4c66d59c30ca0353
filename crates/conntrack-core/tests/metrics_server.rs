//! `MetricsHook` and `MetricsCollector` for served requests: `MetricsHook` wants server
//! exchanges and no client request events; an exchange timed through the core API lands in
//! `http.server.request.duration` with OpenTelemetry's attributes and in the phase histogram,
//! and `http.server.active_requests` counts the exchanges in flight.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;

use conntrack_core::metrics::{MetricsCollector, MetricsHook};
use conntrack_core::{Hook, Registration, Tracker};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the one rendered line starting with `name{` that holds all of `labels`.
fn value(rendered: &str, name: &str, labels: &[&str]) -> f64 {
    let lines: Vec<&str> = rendered
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .collect();
    assert_eq!(lines.len(), 1, "{name} {labels:?} in:\n{rendered}");
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn served_requests_are_recorded_with_opentelemetry_attributes() {
    let hook = MetricsHook::new().server_requests(true);
    assert!(!hook.wants_request_events());
    assert!(hook.wants_server_exchanges());
    let tracker = Tracker::builder().hook(hook).build();
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let conn = tracker.register(Registration::server(a, b).category("web"));
        let r = conn.downgrade();
        // One request answered 503 and written whole.
        conn.record_read(40);
        r.begin_exchange();
        let mut x = r
            .server_exchange("GET", Some("/items/{id}"), "1.1")
            .expect("timed: the hook wants server exchanges");
        x.response_head(503);
        conn.record_write(100);
        x.finish_when_flushed();
        r.end_exchange_when_flushed();
        conn.record_flush();
        // A second one still in flight.
        r.begin_exchange();
        MetricsCollector::new(&tracker).collect();

        let out = recorder.handle().render();
        let count = value(
            &out,
            "http_server_request_duration_count",
            &[
                "category=\"web\"",
                "http_request_method=\"GET\"",
                "http_response_status_code=\"503\"",
                "http_route=\"/items/{id}\"",
                "network_protocol_version=\"1.1\"",
                "error_type=\"503\"",
            ],
        );
        assert_eq!(count, 1.0);
        for phase in ["waiting", "request_head", "handler", "response_write"] {
            let n = value(
                &out,
                "conntrack_server_phase_duration_count",
                &[&format!("conntrack_server_phase=\"{phase}\"")],
            );
            assert_eq!(n, 1.0, "{phase}");
        }
        // Not timed (no body timer): no request_body series.
        assert!(
            !out.contains("conntrack_server_phase=\"request_body\""),
            "{out}"
        );
        assert_eq!(
            value(&out, "http_server_active_requests", &["category=\"web\""]),
            1.0
        );
        r.end_exchange();
    });
}

/// One exchange answered `status` on route `route` over HTTP/1.1, ended at the flush.
fn serve(tracker: &Tracker, category: &str, route: Option<&str>, status: u16) {
    let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let conn = tracker.register(Registration::server(a, b).category(category));
    let r = conn.downgrade();
    conn.record_read(40);
    r.begin_exchange();
    let mut x = r.server_exchange("GET", route, "1.1").expect("timed");
    x.response_head(status);
    conn.record_write(100);
    x.finish_when_flushed();
    r.end_exchange_when_flushed();
    conn.record_flush();
}

/// The `_count` of `name`'s series holding all of `labels` (0 when there is none).
fn count(rendered: &str, name: &str, labels: &[&str]) -> u64 {
    rendered
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn kept_server_handles_record_every_exchange_under_its_labels_and_follow_the_recorder() {
    let hook = MetricsHook::new().server_requests(true);
    let tracker = Tracker::builder().hook(hook).build();
    // Two recorders alive at once, each current in turn: handles kept under one are never
    // used with the other.
    let recorders = [
        PrometheusBuilder::new().build_recorder(),
        PrometheusBuilder::new().build_recorder(),
    ];
    for round in 0..4 {
        metrics::with_local_recorder(&recorders[round % 2], || {
            serve(&tracker, "web", Some("/a"), 200);
            serve(&tracker, "web", Some("/a"), 200);
            serve(&tracker, "web", Some("/b"), 200);
            serve(&tracker, "web", Some("/a"), 500);
            serve(&tracker, "web", None, 200);
            serve(&tracker, "api", Some("/a"), 200);
        });
    }
    let requests = "http_server_request_duration_count";
    let phases = "conntrack_server_phase_duration_count";
    for r in &recorders {
        let out = r.handle().render();
        let ok = "http_response_status_code=\"200\"";
        let web = "category=\"web\"";
        assert_eq!(count(&out, requests, &[web, "http_route=\"/a\"", ok]), 4);
        assert_eq!(count(&out, requests, &[web, "http_route=\"/b\"", ok]), 2);
        assert_eq!(
            count(
                &out,
                requests,
                &[web, "http_route=\"/a\"", "error_type=\"500\""]
            ),
            2
        );
        let routed: u64 = count(&out, requests, &[web, "http_route="]);
        assert_eq!(count(&out, requests, &[web]) - routed, 2, "no route");
        assert_eq!(count(&out, requests, &["category=\"api\""]), 2);
        for phase in ["waiting", "request_head", "handler", "response_write"] {
            let p = format!("conntrack_server_phase=\"{phase}\"");
            assert_eq!(count(&out, phases, &[web, &p]), 10, "{phase}");
            assert_eq!(count(&out, phases, &["category=\"api\"", &p]), 2, "{phase}");
        }
    }
}
