//! The OpenTelemetry-named metrics: `http.client.open_connections` by state and target,
//! `kestrel.active_connections` by listening address, the connection durations at close, and
//! `dns.question.name` only when asked for.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;

use conntrack_core::metrics::{MetricsCollector, MetricsHook};
use conntrack_core::{DialerConfig, Registration, Tracker};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the series `name{...}` whose labels contain all of `labels`, summed.
fn value(out: &str, name: &str, labels: &[&str]) -> f64 {
    out.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn open_connections_by_state_and_listening_address() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let tracker = Tracker::builder().hook(MetricsHook::new()).build();
    let collector = MetricsCollector::new(&tracker);
    metrics::with_local_recorder(&recorder, || {
        let reg = |target: &str| {
            tracker.register(
                Registration::client(addr("127.0.0.1:40000"), addr("127.0.0.1:8443"))
                    .category("pool")
                    .target(target),
            )
        };
        let active = reg("api.internal:8443");
        let idle = reg("api.internal:8443");
        let unused = reg("db.internal:5432"); // never carried an exchange: not HTTP
        let _ = active.begin_exchange();
        let _ = idle.begin_exchange();
        idle.end_exchange();
        let server = tracker.register(
            Registration::server(addr("127.0.0.1:8080"), addr("127.0.0.1:50000")).category("api"),
        );
        collector.collect();
        let out = handle.render();
        let open = "http_client_open_connections";
        let host = "server_address=\"api.internal\"";
        let port = "server_port=\"8443\"";
        assert_eq!(
            value(
                &out,
                open,
                &[host, port, "http_connection_state=\"active\""]
            ),
            1.0,
            "{out}"
        );
        assert_eq!(
            value(&out, open, &[host, port, "http_connection_state=\"idle\""]),
            1.0,
            "{out}"
        );
        assert_eq!(value(&out, open, &["db.internal"]), 0.0, "{out}");
        let kestrel = "kestrel_active_connections";
        let listen = [
            "category=\"api\"",
            "network_transport=\"tcp\"",
            "network_type=\"ipv4\"",
            "server_address=\"127.0.0.1\"",
            "server_port=\"8080\"",
        ];
        assert_eq!(value(&out, kestrel, &listen), 1.0, "{out}");

        // The active one finishes its exchange; the idle one and the server close.
        active.end_exchange();
        drop(idle);
        drop(server);
        collector.collect();
        let out = handle.render();
        assert_eq!(
            value(&out, open, &["http_connection_state=\"active\""]),
            0.0,
            "{out}"
        );
        assert_eq!(
            value(&out, open, &["http_connection_state=\"idle\""]),
            1.0,
            "{out}"
        );
        assert_eq!(value(&out, kestrel, &listen), 0.0, "{out}");
        // Their lifetimes went to the conventions' duration histograms.
        let d = "http_client_connection_duration_count";
        assert_eq!(
            value(&out, d, &[host, port, "category=\"pool\""]),
            1.0,
            "{out}"
        );
        assert_eq!(
            value(&out, "kestrel_connection_duration_count", &listen),
            1.0,
            "{out}"
        );
        drop((active, unused));
    });
}

#[test]
fn dns_question_name_is_opt_in_and_errors_use_well_known_values() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let addrs = [addr("127.0.0.1:443")];
    let not_found = std::io::Error::from(std::io::ErrorKind::NotFound);
    metrics::with_local_recorder(&recorder, || {
        for (hook, host) in [
            (MetricsHook::new(), "plain.example"),
            (MetricsHook::new().dns_question_name(true), "named.example"),
        ] {
            let tracker = Tracker::builder().hook(hook).build();
            let config = DialerConfig::new().category("out");
            let mut dial = tracker.dial(&config, format!("{host}:443"));
            dial.dns_start(host);
            dial.dns_done(host, Ok(&addrs));
            drop(dial.established(addr("127.0.0.1:40000"), addrs[0]));
            let mut dial = tracker.dial(&config, format!("{host}:443"));
            dial.dns_start(host);
            dial.dns_done(host, Err(&not_found));
            dial.failed(&not_found);
        }
    });
    let out = handle.render();
    let count = "dns_lookup_duration_count";
    assert!(!out.contains("plain.example"), "{out}");
    assert_eq!(
        value(&out, count, &["dns_question_name=\"named.example\""]),
        2.0,
        "{out}"
    );
    assert_eq!(
        value(&out, count, &["error_type=\"host_not_found\""]),
        2.0,
        "{out}"
    );
}

/// `kestrel.rejected_connections` counts the connections a listener refused at its limit.
#[test]
fn rejected_connections_are_counted() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let tracker = Tracker::new();
    let collector = MetricsCollector::new(&tracker);
    let config = conntrack_core::ListenerConfig::new()
        .category("api")
        .max_connections(1);
    metrics::with_local_recorder(&recorder, || {
        let kept = tracker
            .admit(&config, addr("127.0.0.1:8080"), addr("127.0.0.1:50000"))
            .expect("within the limit");
        for port in 50001..50004 {
            let refused = tracker.admit(
                &config,
                addr("127.0.0.1:8080"),
                addr(&format!("127.0.0.1:{port}")),
            );
            assert!(refused.is_err(), "over the limit");
        }
        collector.collect();
        let out = handle.render();
        assert_eq!(
            value(&out, "kestrel_rejected_connections", &["category=\"api\""]),
            3.0,
            "{out}"
        );
        drop(kept);
    });
}

/// Every close is counted in each of its series, also once the handles are kept: closes of
/// one category on two listening addresses, to two targets, with and without an error.
#[test]
fn kept_handles_count_every_close_in_its_own_series() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let tracker = Tracker::builder().hook(MetricsHook::new()).build();
    metrics::with_local_recorder(&recorder, || {
        let server = |listen: &str| {
            tracker.register(
                Registration::server(addr(listen), addr("127.0.0.1:50000")).category("mix"),
            )
        };
        let client = |target: &str| {
            let c = tracker.register(
                Registration::client(addr("127.0.0.1:40000"), addr("127.0.0.1:8443"))
                    .category("mix")
                    .target(target),
            );
            let _ = c.begin_exchange();
            c.end_exchange();
            c
        };
        for _ in 0..3 {
            drop(server("127.0.0.1:8080"));
        }
        for _ in 0..2 {
            drop(server("127.0.0.1:9090"));
        }
        let failed = server("127.0.0.1:8080");
        failed.record_error(&std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        drop(failed);
        for _ in 0..4 {
            drop(client("a.internal:8443"));
        }
        drop(client("b.internal:8443"));
        let out = handle.render();
        let kestrel = "kestrel_connection_duration_count";
        let plain = |port: &str| {
            value(&out, kestrel, &[&format!("server_port=\"{port}\"")])
                - value(
                    &out,
                    kestrel,
                    &[&format!("server_port=\"{port}\""), "error_type="],
                )
        };
        assert_eq!(plain("8080"), 3.0, "{out}");
        assert_eq!(plain("9090"), 2.0, "{out}");
        assert_eq!(value(&out, kestrel, &["error_type="]), 1.0, "{out}");
        let http = "http_client_connection_duration_count";
        assert_eq!(
            value(&out, http, &["server_address=\"a.internal\""]),
            4.0,
            "{out}"
        );
        assert_eq!(
            value(&out, http, &["server_address=\"b.internal\""]),
            1.0,
            "{out}"
        );
        let ours = "conntrack_connection_duration_count";
        let ok = |role: &str| {
            value(&out, ours, &[&format!("role=\"{role}\"")])
                - value(&out, ours, &[&format!("role=\"{role}\""), "error_type="])
        };
        assert_eq!(ok("server"), 5.0, "{out}");
        assert_eq!(ok("client"), 5.0, "{out}");
        assert_eq!(value(&out, ours, &["error_type="]), 1.0, "{out}");
    });
}

/// A close the tracker decided (here an abort) labels both connection durations with its
/// reason's `error.type`, which wins over an I/O error the connection saw (that one still
/// counts in `conntrack.errors`); an error kind the standard library named lately
/// (`ResourceBusy`) has its own `error.type`.
#[test]
fn a_tracker_close_reason_labels_both_durations() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let tracker = Tracker::builder().hook(MetricsHook::new()).build();
    metrics::with_local_recorder(&recorder, || {
        let server = || {
            tracker.register(
                Registration::server(addr("127.0.0.1:8080"), addr("127.0.0.1:50000"))
                    .category("api"),
            )
        };
        // Aborted, with no I/O error; then aborted after a reset (twice each, so that a kept
        // handle would have been used the second time).
        for _ in 0..2 {
            let a = server();
            assert!(a.abort());
            drop(a);
            let b = server();
            b.record_error(&std::io::Error::from(std::io::ErrorKind::ConnectionReset));
            assert!(b.abort());
            drop(b);
        }
        let c = server();
        c.record_error(&std::io::Error::from(std::io::ErrorKind::ResourceBusy));
        drop(c);
        let out = handle.render();
        for name in [
            "kestrel_connection_duration_count",
            "conntrack_connection_duration_count",
        ] {
            assert_eq!(
                value(&out, name, &["error_type=\"aborted_by_app\""]),
                4.0,
                "{name}: {out}"
            );
            assert_eq!(
                value(&out, name, &["error_type=\"connection_reset\""]),
                0.0,
                "{name}: {out}"
            );
        }
        assert_eq!(
            value(
                &out,
                "conntrack_errors",
                &[
                    "conntrack_phase=\"close\"",
                    "error_type=\"connection_reset\""
                ]
            ),
            2.0,
            "{out}"
        );
        assert_eq!(
            value(
                &out,
                "conntrack_errors",
                &["conntrack_phase=\"close\"", "error_type=\"resource_busy\""]
            ),
            1.0,
            "{out}"
        );
    });
}
