//! `conntrack_core::metrics` through a real metrics-exporter-prometheus HTTP endpoint on
//! loopback: after known traffic (plain and TLS connections, one still open, a refused dial,
//! a failed handshake) the scraped values are exactly what happened, and the exposition
//! passes `promtool check metrics` (Debian's `prometheus` package; under `CI=true` a missing
//! promtool fails the test). With axum, the hook also records served requests
//! (`server_requests(true)`): an axum server with `ExchangeLayer` answers a 200 and a 500 and
//! holds a third request in its handler while we scrape, so the exposition checked by promtool
//! holds `http_server_request_duration_seconds`, `http_server_active_requests` and
//! `conntrack_server_phase_duration_seconds` too.
#![cfg(feature = "tls")]

#[path = "support/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use conntrack_core::metrics::{
    describe, MetricsCollector, MetricsHook, CONNECTION_BUCKETS, CONNECTION_DURATION,
    CONNECT_DURATION, DNS_LOOKUP_DURATION, HTTP_SERVER_REQUEST_DURATION, PHASE_BUCKETS,
    SERVER_PHASE_DURATION, TLS_HANDSHAKE_DURATION,
};
use conntrack_core::{DialerConfig, ListenerConfig, RecordingHook, Tracker};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Installs the exporter with an HTTP listener on a free loopback port; returns its address.
fn install_exporter() -> SocketAddr {
    // The exporter wants an address, not a listener: take a free port and give it back.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut b = PrometheusBuilder::new()
        .with_http_listener(addr)
        .with_recommended_naming(true);
    for name in [
        TLS_HANDSHAKE_DURATION,
        DNS_LOOKUP_DURATION,
        CONNECT_DURATION,
        HTTP_SERVER_REQUEST_DURATION,
        SERVER_PHASE_DURATION,
    ] {
        b = b
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), PHASE_BUCKETS)
            .unwrap();
    }
    b = b
        .set_buckets_for_metric(
            Matcher::Full(CONNECTION_DURATION.to_owned()),
            CONNECTION_BUCKETS,
        )
        .unwrap();
    // Outside any runtime: the exporter runs its own thread.
    b.install().unwrap();
    describe();
    addr
}

/// `GET /metrics` over a plain TCP connection. The exporter's listener is bound by the time
/// `install` returns, so the connection is queued even before its thread accepts.
fn scrape(addr: SocketAddr) -> String {
    try_scrape(addr).unwrap_or_else(|e| panic!("scrape {addr}: {e}"))
}

fn try_scrape(addr: SocketAddr) -> io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no header end"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("status: {head}")));
    }
    // The exporter answers with a length or chunks; undo chunking if used.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (len, after) = rest.split_once("\r\n").unwrap();
            let len = usize::from_str_radix(len.trim(), 16).unwrap();
            if len == 0 {
                break;
            }
            out.push_str(&after[..len]);
            rest = &after[len + 2..];
        }
        return Ok(out);
    }
    Ok(body.to_owned())
}

/// Every sample line as `name{labels}` (labels sorted) → value.
fn samples(exposition: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let key = match key.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => key.to_owned(),
        };
        out.insert(key, value.parse().unwrap());
    }
    out
}

/// The key of a sample, labels sorted like [`samples`] does.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.sort_unstable();
    format!("{name}{{{}}}", l.join(","))
}

const N: usize = 3;
const WAIT: Duration = Duration::from_secs(10);

/// The traffic: `N` plain connections dialed by name (category "upstream") to a listener
/// (category "api"), each sending 5 bytes and getting 7 back, then closed; one more left
/// open; one TLS connection ("tls-in" / "tls-out") that closes; one TLS handshake that fails
/// (the client trusts nobody); one dial refused. Returns the connection kept open.
async fn traffic(tracker: &Tracker) -> Vec<conntrack_tokio::Tracked<tokio::net::TcpStream>> {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("api"));
    tokio::spawn(async move {
        for _ in 0..=N {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(b"7 bytes").await.unwrap();
                // Wait for the client to close.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    let dialer = Dialer::new(tracker, DialerConfig::new().category("upstream")).with_resolver(
        |_host: String, port: u16| async move { Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]) },
    );
    let mut kept = Vec::new();
    for i in 0..=N {
        let mut s = dialer
            .connect(&format!("svc.test:{}", addr.port()))
            .await
            .unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.unwrap();
        if i == N {
            kept.push(s);
        }
    }

    // TLS: one good handshake and one the client rejects.
    let (server_cfg, client_cfg) = pki::localhost_configs(&[b"h2"]);
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("tls-in"));
    let acceptor = TlsAcceptor::from(server_cfg);
    let server = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            match acceptor.accept(tcp).await {
                Ok(mut tls) => {
                    let mut buf = Vec::new();
                    tls.read_to_end(&mut buf).await.unwrap();
                    results.push(Ok(buf.len()));
                }
                Err(e) => results.push(Err(e.kind())),
            }
        }
        results
    });
    let tls_dialer = Dialer::new(tracker, DialerConfig::new().category("tls-out"));
    let good = TlsConnector::from(client_cfg);
    let mut tls = tls_dialer
        .connect_tls(&tls_addr.to_string(), &good, Some("localhost"))
        .await
        .unwrap();
    tls.write_all(b"over tls").await.unwrap();
    tls.shutdown().await.unwrap();
    drop(tls);
    let untrusting = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let bad = TlsConnector::from(std::sync::Arc::new(untrusting));
    let err = tls_dialer
        .connect_tls(&tls_addr.to_string(), &bad, Some("localhost"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let results = server.await.unwrap();
    assert_eq!(results[0], Ok(8));
    assert!(results[1].is_err());

    // A refused dial.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let err = dialer.connect(&closed_addr.to_string()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    kept
}

fn promtool() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    })
}

#[test]
fn prometheus_scrape_shows_the_traffic_and_passes_promtool() {
    let exporter = install_exporter();
    let rec = RecordingHook::new();
    let tracker = Tracker::builder()
        .hook(MetricsHook::new().server_requests(true))
        .hook(rec.clone())
        .build();
    let collector = MetricsCollector::new(&tracker);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kept = rt.block_on(traffic(&tracker));
    // Everything but the kept connection (both ends) leaves the tracker: N plain and two TLS
    // connections, each with two ends.
    let closes = 2 * N + 4;
    rec.wait_for(
        |ev| ev.iter().filter(|e| e.name() == "close").count() == closes,
        WAIT,
    )
    .unwrap_or_else(|_| panic!("left: {:?}", tracker.connections()));
    assert_eq!(tracker.len(), 2);
    // Served requests, one still in its handler (on a connection of its own, category `web`).
    #[cfg(feature = "axum")]
    let held = rt.block_on(served::serve(&tracker, &rec));
    collector.collect();
    let body = scrape(exporter);
    let s = samples(&body);
    let get = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let k = key(name, labels);
        *s.get(&k)
            .unwrap_or_else(|| panic!("no sample {k} in:\n{body}"))
    };
    let api = [("category", "api"), ("role", "server")];
    let up = [("category", "upstream"), ("role", "client")];
    let n = N as f64;

    // Counts, from the collector.
    assert_eq!(get("conntrack_connections_opened_total", &api), n + 1.0);
    assert_eq!(get("conntrack_connections_opened_total", &up), n + 1.0);
    assert_eq!(get("conntrack_connections_closed_total", &api), n);
    assert_eq!(get("conntrack_connections_closed_total", &up), n);
    assert_eq!(get("conntrack_active_connections", &api), 1.0);
    assert_eq!(get("conntrack_active_connections", &up), 1.0);
    assert_eq!(get("conntrack_connections_failed_total", &up), 1.0);
    assert_eq!(get("conntrack_connections_failed_total", &api), 0.0);
    let io = |labels: &[(&str, &str)], dir: &str| {
        let mut l = labels.to_vec();
        l.push(("network_io_direction", dir));
        get("conntrack_io_bytes_total", &l)
    };
    // Bytes include the connection still open.
    assert_eq!(io(&up, "transmit"), 5.0 * (n + 1.0));
    assert_eq!(io(&up, "receive"), 7.0 * (n + 1.0));
    assert_eq!(io(&api, "receive"), 5.0 * (n + 1.0));
    assert_eq!(io(&api, "transmit"), 7.0 * (n + 1.0));
    let tls_in = [("category", "tls-in"), ("role", "server")];
    let tls_out = [("category", "tls-out"), ("role", "client")];
    assert_eq!(get("conntrack_tls_handshakes_failed_total", &tls_in), 1.0);
    assert_eq!(get("conntrack_tls_handshakes_failed_total", &tls_out), 1.0);
    assert_eq!(get("conntrack_connections_closed_total", &tls_out), 2.0);

    // Durations, from the hook.
    let count = |name: &str, labels: &[(&str, &str)]| get(&format!("{name}_count"), labels);
    let tcp = ("network_transport", "tcp");
    assert_eq!(
        count(
            "conntrack_connection_duration_seconds",
            &[api[0], api[1], tcp]
        ),
        n
    );
    assert_eq!(
        count(
            "conntrack_connection_duration_seconds",
            &[up[0], up[1], tcp]
        ),
        n
    );
    assert_eq!(
        count(
            "conntrack_connection_duration_seconds",
            &[tls_out[0], tls_out[1], tcp, ("tls_protocol_version", "1.3")]
        ),
        1.0
    );
    assert_eq!(
        count("dns_lookup_duration_seconds", &[("category", "upstream")]),
        n + 1.0
    );
    assert_eq!(
        count(
            "conntrack_connect_duration_seconds",
            &[("category", "upstream"), tcp]
        ),
        n + 1.0
    );
    assert_eq!(
        count(
            "conntrack_connect_duration_seconds",
            &[
                ("category", "upstream"),
                tcp,
                ("error_type", "connection_refused")
            ]
        ),
        1.0
    );
    assert_eq!(
        count(
            "conntrack_tls_handshake_duration_seconds",
            &[tls_out[0], tls_out[1], ("tls_protocol_version", "1.3")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "conntrack_tls_handshake_duration_seconds",
            &[tls_out[0], tls_out[1], ("error_type", "invalid_data")]
        ),
        1.0
    );
    // Histograms, not summaries: buckets up to +Inf equal the count.
    assert_eq!(
        get(
            "conntrack_connection_duration_seconds_bucket",
            &[api[0], api[1], tcp, ("le", "+Inf")]
        ),
        n
    );
    assert_eq!(
        get(
            "conntrack_errors_total",
            &[
                up[0],
                up[1],
                ("conntrack_phase", "dial"),
                ("error_type", "connection_refused")
            ]
        ),
        1.0
    );
    assert_eq!(
        get(
            "conntrack_errors_total",
            &[
                tls_out[0],
                tls_out[1],
                ("conntrack_phase", "tls_handshake"),
                ("error_type", "invalid_data")
            ]
        ),
        1.0
    );
    assert!(body.contains("# TYPE conntrack_connection_duration_seconds histogram"));
    #[cfg(feature = "axum")]
    served::check(&get);
    assert!(body.contains("# HELP conntrack_active_connections Connections open now."));

    // The exposition is valid for Prometheus.
    match promtool() {
        Some(tool) => {
            let mut child = Command::new(&tool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed ({}):\n{}{}\n--- exposition:\n{body}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => conntrack_testkit::tool_missing(
            "metrics_prometheus: promtool check metrics",
            "promtool",
            "apt-get install prometheus",
        ),
    }
    #[cfg(feature = "axum")]
    rt.block_on(held.release());
    drop(kept);
}

/// Served HTTP requests (axum with `ExchangeLayer`, category `web`).
#[cfg(feature = "axum")]
mod served {
    use std::future::IntoFuture;
    use std::sync::Arc;

    use axum::routing::get;
    use conntrack_core::{ListenerConfig, RecordingHook, Role, ServerPhase, Tracker};
    use conntrack_tokio::exchange::ExchangeLayer;
    use conntrack_tokio::{Listener, TrackedConnectInfo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;

    use super::WAIT;

    /// A request held in its handler until [`Held::release`].
    pub(super) struct Held {
        gate: Arc<Semaphore>,
        client: JoinHandle<Vec<u8>>,
    }

    impl Held {
        /// Lets the held handler answer; waits for its response.
        pub(super) async fn release(self) {
            self.gate.add_permits(1);
            let response = tokio::time::timeout(WAIT, self.client)
                .await
                .expect("the held response")
                .unwrap();
            assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
        }
    }

    /// One request over a raw HTTP/1 connection that the server closes after answering.
    async fn request(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut response = Vec::new();
        c.read_to_end(&mut response).await.unwrap();
        response
    }

    /// Serves `/items/{id}` (200), `/fail` (500) and `/hold` (200 once released); makes one
    /// request to each of the first two and waits for their exchanges, then leaves a request
    /// to `/hold` in its handler.
    pub(super) async fn serve(tracker: &Tracker, rec: &RecordingHook) -> Held {
        let gate = Arc::new(Semaphore::new(0));
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let listener = Listener::new(tracker, inner, ListenerConfig::new().category("web"));
        let g = gate.clone();
        let app = axum::Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .route(
                "/fail",
                get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
            )
            .route(
                "/hold",
                get(move || async move {
                    let _permit = g.acquire().await.unwrap();
                    "held"
                }),
            )
            .layer(ExchangeLayer::new(tracker).timed_body());
        tokio::spawn(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
            )
            .into_future(),
        );
        for path in ["/items/7", "/fail"] {
            let response = request(addr, path).await;
            assert!(response.starts_with(b"HTTP/1.1 "), "{response:?}");
        }
        rec.until(|ev| ev.iter().filter(|e| e.name() == "server_exchange").count() == 2)
            .await;
        let client = tokio::spawn(request(addr, "/hold"));
        // Bounded wait until the held request is in its handler.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let in_handler = tracker.connections().into_iter().any(|c| {
                c.role == Role::Server
                    && &*c.category == "web"
                    && c.exchange.is_some_and(|x| x.phase == ServerPhase::Handler)
            });
            if in_handler {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never in the handler"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Held { gate, client }
    }

    /// A sample's value by name and labels.
    type Sample<'a> = &'a dyn Fn(&str, &[(&str, &str)]) -> f64;

    /// The served requests in the scrape.
    pub(super) fn check(get: Sample<'_>) {
        let web = ("category", "web");
        let v11 = ("network_protocol_version", "1.1");
        let get_ = ("http_request_method", "GET");
        assert_eq!(
            get(
                "http_server_request_duration_seconds_count",
                &[
                    web,
                    get_,
                    ("http_response_status_code", "200"),
                    ("http_route", "/items/{id}"),
                    v11
                ]
            ),
            1.0
        );
        assert_eq!(
            get(
                "http_server_request_duration_seconds_count",
                &[
                    web,
                    get_,
                    ("http_response_status_code", "500"),
                    ("http_route", "/fail"),
                    v11,
                    ("error_type", "500")
                ]
            ),
            1.0
        );
        // A histogram: its `+Inf` bucket holds every request.
        assert_eq!(
            get(
                "http_server_request_duration_seconds_bucket",
                &[
                    web,
                    get_,
                    ("http_response_status_code", "200"),
                    ("http_route", "/items/{id}"),
                    v11,
                    ("le", "+Inf")
                ]
            ),
            1.0
        );
        // The held request, from the collector.
        assert_eq!(get("http_server_active_requests", &[web]), 1.0);
        for phase in [
            "waiting",
            "request_head",
            "request_body",
            "handler",
            "response_write",
        ] {
            assert_eq!(
                get(
                    "conntrack_server_phase_duration_seconds_count",
                    &[web, ("conntrack_server_phase", phase), v11]
                ),
                2.0,
                "{phase}"
            );
        }
    }
}
