//! The fleet path: a real Prometheus server (Debian's `prometheus` package) scrapes the
//! metrics of a tracked process on loopback, and its query API answers with what happened.
//!
//! Known traffic: 2 connections dialed under category `kept` stay open, 3 under `churn` open,
//! make one round trip and close; the server side counts 5 accepted. The test starts
//! Prometheus with a generated config (1 s scrape interval) against the exporter's HTTP
//! listener, waits until a scrape holds the final values, then asks Prometheus for active
//! connections by category, the opened/closed totals and a quantile of the connection
//! duration histogram. With axum, an HTTP server (category `web`, `ExchangeLayer`) answers one
//! request 200 and one 500, and Prometheus shows `http_server_request_duration_seconds` with
//! OpenTelemetry's attributes and the per-phase histogram. Without the `prometheus` binary the
//! test fails under `CI=true`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conntrack_core::metrics::{
    describe, MetricsCollector, MetricsHook, CONNECTION_BUCKETS, CONNECTION_DURATION,
};
use conntrack_core::{DialerConfig, ListenerConfig, RecordingHook, Tracker};
use conntrack_tokio::{Dialer, Listener};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback port (bound, read, released).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The Prometheus server process, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_prometheus(target: SocketAddr) -> Option<Prometheus> {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        conntrack_testkit::tool_missing(
            "prometheus_server::prometheus_scrapes_and_answers_with_the_known_traffic",
            "prometheus",
            "apt-get install prometheus",
        );
        return None;
    }
    let dir = std::env::temp_dir().join(format!("conntrack-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: conntrack\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let addr = free_addr();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Some(Prometheus {
        child,
        addr,
        _dir: TempDir(dir),
    })
}

/// An axum server (category `web`) with `ExchangeLayer`: `/items/{id}` answers 200, `/fail`
/// 500. Makes one request to each over a raw connection and returns once both have ended.
#[cfg(feature = "axum")]
async fn serve_http(tracker: &Tracker, rec: &RecordingHook) {
    use axum::routing::get;
    use conntrack_tokio::exchange::ExchangeLayer;
    use std::future::IntoFuture;
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("web"));
    let app = axum::Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route(
            "/fail",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .layer(ExchangeLayer::new(tracker).timed_body());
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<conntrack_tokio::TrackedConnectInfo>(),
        )
        .into_future(),
    );
    for path in ["/items/7", "/fail"] {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut response = Vec::new();
        c.read_to_end(&mut response).await.unwrap();
        assert!(response.starts_with(b"HTTP/1.1 "), "{response:?}");
    }
    rec.until(|ev| ev.iter().filter(|e| e.name() == "server_exchange").count() == 2)
        .await;
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asks Prometheus' HTTP API for an instant query; the values of the result vector.
fn query(prometheus: SocketAddr, q: &str) -> Option<Vec<f64>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(prometheus).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /api/v1/query?query={} HTTP/1.1\r\nHost: {prometheus}\r\nConnection: close\r\n\r\n",
        encode(q)
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (len, after) = rest.split_once("\r\n")?;
            let len = usize::from_str_radix(len.trim(), 16).ok()?;
            if len == 0 {
                break;
            }
            out.push_str(&after[..len]);
            rest = &after[len + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse().ok())
            .collect(),
    )
}

/// Polls `q` until it answers exactly `want` (one series), within `limit`.
fn wait_for_value(prometheus: SocketAddr, q: &str, want: f64, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let got = query(prometheus, q);
        if let Some([v]) = got.as_deref() {
            if (*v - want).abs() < 1e-9 {
                return *v;
            }
        }
        assert!(
            start.elapsed() < limit,
            "{q}: Prometheus answered {got:?}, expected {want}"
        );
        // Prometheus scrapes once a second; ask again a little later.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_answers_with_the_known_traffic() {
    let exporter = free_addr();
    PrometheusBuilder::new()
        .with_http_listener(exporter)
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Full(CONNECTION_DURATION.to_owned()),
            CONNECTION_BUCKETS,
        )
        .unwrap()
        .install()
        .unwrap();
    describe();

    let rec = RecordingHook::new();
    let tracker = Tracker::builder()
        .hook(MetricsHook::new().server_requests(true))
        .hook(rec.clone())
        .build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    #[cfg(feature = "axum")]
    serve_http(&tracker, &rec).await;

    let kept_dialer = Dialer::new(&tracker, DialerConfig::new().category("kept"));
    let churn_dialer = Dialer::new(&tracker, DialerConfig::new().category("churn"));
    let target = addr.to_string();
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut c = kept_dialer.connect(&target).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).await.unwrap();
        kept.push(c);
    }
    for _ in 0..3 {
        let mut c = churn_dialer.connect(&target).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).await.unwrap();
    }
    // The three churn connections' server ends close too (client and server sides: 6 closes;
    // with axum, the two HTTP connections' server ends too).
    let closes = if cfg!(feature = "axum") { 8 } else { 6 };
    rec.until(|ev| ev.iter().filter(|e| e.name() == "close").count() == closes)
        .await;
    // A close moves its totals right after its hooks ran: wait for the last one to land.
    let settled = Instant::now();
    while tracker
        .stats()
        .get("api", conntrack_core::Role::Server)
        .map_or(0, |c| c.active)
        != 2
    {
        assert!(
            settled.elapsed() < Duration::from_secs(10),
            "server ends did not close"
        );
        tokio::task::yield_now().await;
    }
    MetricsCollector::new(&tracker).collect();

    let Some(prometheus) = start_prometheus(exporter) else {
        return;
    };
    let limit = Duration::from_secs(60);
    let p = prometheus.addr;
    let blocking = tokio::task::spawn_blocking(move || {
        wait_for_value(p, "up{job=\"conntrack\"}", 1.0, limit);
        // Active connections by category and role.
        wait_for_value(
            p,
            "conntrack_active_connections{category=\"kept\",role=\"client\"}",
            2.0,
            limit,
        );
        wait_for_value(
            p,
            "conntrack_active_connections{category=\"churn\",role=\"client\"}",
            0.0,
            limit,
        );
        wait_for_value(
            p,
            "conntrack_active_connections{category=\"api\",role=\"server\"}",
            2.0,
            limit,
        );
        // Totals.
        wait_for_value(
            p,
            "conntrack_connections_opened_total{category=\"churn\",role=\"client\"}",
            3.0,
            limit,
        );
        wait_for_value(
            p,
            "conntrack_connections_closed_total{category=\"churn\",role=\"client\"}",
            3.0,
            limit,
        );
        wait_for_value(
            p,
            "conntrack_connections_opened_total{category=\"api\",role=\"server\"}",
            5.0,
            limit,
        );
        wait_for_value(
            p,
            "sum(conntrack_connection_duration_seconds_count{category=\"churn\",role=\"client\"})",
            3.0,
            limit,
        );
        // A duration quantile from the histogram: three loopback round trips, each well under
        // the bucket that holds a second.
        let q = "histogram_quantile(0.5, sum by (le) \
                 (conntrack_connection_duration_seconds_bucket{category=\"churn\",role=\"client\"}))";
        let median = query(p, q).expect("quantile query")[0];
        assert!(
            median > 0.0 && median <= 1.0,
            "median churn duration {median}"
        );
        // Served HTTP requests, with OpenTelemetry's attributes.
        if cfg!(feature = "axum") {
            wait_for_value(
                p,
                "http_server_request_duration_seconds_count{category=\"web\",\
                 http_request_method=\"GET\",http_response_status_code=\"200\",\
                 http_route=\"/items/{id}\",network_protocol_version=\"1.1\"}",
                1.0,
                limit,
            );
            wait_for_value(
                p,
                "http_server_request_duration_seconds_count{category=\"web\",\
                 http_request_method=\"GET\",http_response_status_code=\"500\",\
                 http_route=\"/fail\",network_protocol_version=\"1.1\",error_type=\"500\"}",
                1.0,
                limit,
            );
            // Each phase, for both requests (on a new HTTP/1 connection the waiting runs from
            // the accept to the first byte).
            for phase in [
                "waiting",
                "request_head",
                "request_body",
                "handler",
                "response_write",
            ] {
                wait_for_value(
                    p,
                    &format!(
                        "sum(conntrack_server_phase_duration_seconds_count{{category=\"web\",\
                         conntrack_server_phase=\"{phase}\"}})"
                    ),
                    2.0,
                    limit,
                );
            }
        }
    });
    blocking.await.unwrap();
    drop(kept);
    drop(prometheus);
}
