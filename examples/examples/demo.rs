//! The conntrack demo: an axum server and a pool of HTTP clients on loopback, both tracked by
//! one tracker, with traffic flowing; the live connection table is printed every second.
//!
//! ```text
//! cargo run --release -p conntrack-examples --example demo [-- --seconds N]
//! ```
//!
//! - `http-in`: the server's connections (axum on a tracked `Listener` limited to 8
//!   connections, rejecting more, with a 5 s idle timeout);
//! - `http-pool`: four keep-alive clients (hyper-util on the tracked `Dialer`), each making a
//!   request every few tens of milliseconds, so their connections live for the whole run;
//! - `http-churn`: a client without connection reuse, one new connection per request, so
//!   connections keep opening and closing (see the closed list at the end).
//!
//! The server also serves the debug page at `/debug/conntrack` (HTML; `?format=json`,
//! `?format=text`) and Prometheus metrics at `/metrics` (conntrack-core's `metrics` feature
//! through metrics-exporter-prometheus) while it runs.
//!
//! After `--seconds` (default 10) the clients stop; a plain connection sends half a request and
//! stalls, then a burst of 11 more (12 at once) shows the limit rejecting 4 or so, and
//! `tracker.shutdown(1 s)` (driving axum's graceful shutdown through
//! `tracker.shutdown_signal()`) closes the rest, aborts the stalled one at the deadline and
//! lists it; the demo prints the totals and the most recently closed
//! connections with why they closed. `cargo xtask ci` checks that it ends this way and that its
//! tables have the columns of the README's sample.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path};
use axum::routing::get;
use axum::Router;
use conntrack_core::metrics::{MetricsCollector, MetricsHook};
use conntrack_core::{render, DialerConfig, LimitMode, ListenerConfig, Role, Tracker};
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::hyper::TracedClient;
use conntrack_tokio::{DebugPage, Dialer, Listener, TrackedConnectInfo};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::AsyncWriteExt;

/// hyper-util's client on a tracked dialer, traced: each request is an exchange on its
/// client connection too (the REQS and STATE columns on both sides).
type HttpClient = TracedClient<Dialer, Empty<Bytes>>;

/// `GET /data/{n}`: `n` bytes (at most 1 MiB), and which connection served them.
async fn data(
    Path(n): Path<usize>,
    ConnectInfo(conn): ConnectInfo<TrackedConnectInfo>,
) -> ([(&'static str, String); 1], Vec<u8>) {
    (
        [("x-conntrack-id", conn.id.to_string())],
        vec![b'x'; n.min(1 << 20)],
    )
}

fn seconds_arg() -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// A small deterministic pseudo-random sequence (no dependency needed for a demo).
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn client_loop(
    client: HttpClient,
    base: String,
    seed: u64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
) {
    let mut rng = seed;
    while !stop.load(Ordering::Relaxed) {
        let size = 64 + next_rand(&mut rng) % (64 * 1024);
        let uri = format!("{base}/data/{size}").parse().expect("valid uri");
        match client.get(uri).await {
            Ok(res) => {
                let _ = res.into_body().collect().await;
                requests.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("request failed: {e}"),
        }
        tokio::time::sleep(pause).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = seconds_arg();
    let prometheus = install_prometheus()?;
    let tracker = Tracker::builder()
        .history(32)
        // The debug page's waterfall of recent traced requests (off by default).
        .recent_requests(32)
        .hook(MetricsHook::new())
        .build();
    let collector = MetricsCollector::new(&tracker);

    // The server: axum on a tracked listener.
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = inner.local_addr()?;
    // At most 8 server connections (more are accepted and closed at once, counted as
    // rejected), none idle for more than 5 s; the policies are enforced by one task.
    let listener = Listener::new(
        &tracker,
        inner,
        ListenerConfig::new()
            .category("http-in")
            .max_connections(8)
            .limit_mode(LimitMode::Reject)
            .idle_timeout(Duration::from_secs(5)),
    );
    tokio::spawn({
        let tracker = tracker.clone();
        async move { tracker.run_policies(tokio::time::sleep).await }
    });
    let page = DebugPage::new(&tracker);
    let app = Router::new()
        .route("/data/{n}", get(data))
        .nest("/debug/conntrack", page.clone().router())
        .route("/metrics", {
            let (collector, prometheus) = (collector.clone(), prometheus.clone());
            get(move || async move { scrape(&collector, &prometheus) })
        })
        // Each request counted on its server connection: the table's REQS and STATE columns.
        .layer(ExchangeLayer::new(&tracker));
    // One line wires axum's graceful shutdown to the tracker's: when `tracker.shutdown(..)`
    // starts, axum stops accepting and lets each connection finish its response.
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .with_graceful_shutdown({
            let signal = tracker.shutdown_signal();
            async move {
                signal.await;
                // A browser following the page's events would hold the shutdown up: end them.
                page.close_events();
            }
        })
        .into_future(),
    );
    let base = format!("http://{addr}");
    println!("conntrack demo: server on {base}, running for {seconds}s");
    println!("debug page: {base}/debug/conntrack (JSON: ?format=json, text: ?format=text)");
    println!("metrics:    {base}/metrics\n");

    // The clients: a keep-alive pool and a churning client, each on a tracked dialer.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let pool: HttpClient = TracedClient::new(
        &tracker,
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4)
            .build(Dialer::new(
                &tracker,
                DialerConfig::new().category("http-pool"),
            )),
    );
    let churn: HttpClient = TracedClient::new(
        &tracker,
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(Dialer::new(
                &tracker,
                DialerConfig::new().category("http-churn"),
            )),
    );
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let pause = Duration::from_millis(20 + 10 * i);
        tasks.push(tokio::spawn(client_loop(
            pool.clone(),
            base.clone(),
            0x9E37_79B9 + i,
            pause,
            stop.clone(),
            requests.clone(),
        )));
    }
    tasks.push(tokio::spawn(client_loop(
        churn.clone(),
        base.clone(),
        42,
        Duration::from_millis(250),
        stop.clone(),
        requests.clone(),
    )));

    // The live table, every second.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for _ in 0..seconds {
        tick.tick().await;
        let conns = tracker.connections();
        let total = tracker.stats().total();
        println!(
            "--- t={:>4.1}s  {} live  {} opened  {} closed  {} failed  read {}  written {}  ({} requests) ---",
            started.elapsed().as_secs_f64(),
            conns.len(),
            total.opened,
            total.closed,
            total.failed,
            render::bytes(total.read_bytes),
            render::bytes(total.write_bytes),
            requests.load(Ordering::Relaxed)
        );
        print!("{}", render::text_table(&conns));
        println!();
    }

    // Stop the clients.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    drop((pool, churn));

    // A connection that sends half a request and stalls: graceful shutdown waits for it. It is
    // opened before the burst below, and the demo waits until the server has admitted it and
    // read its half request, so it is neither one the limit rejects nor one that axum's
    // graceful shutdown closes as never used.
    let stuck = stalled_connection(&tracker, addr).await?;
    // The limit: with it, a burst of 12 plain connections against `max_connections(8)`.
    let burst = limit_burst(&tracker, addr).await?;

    // Shut down: the tracker's signal makes axum stop accepting and finish its requests; the
    // tracker waits up to 1 s, then aborts the stalled connection and says which it was.
    let report = tracker
        .shutdown(Duration::from_secs(1), tokio::time::sleep)
        .await;
    println!(
        "shutdown: drained={} after {:.2?}; aborted at the deadline:",
        report.drained, report.elapsed
    );
    print!("{}", render::text_table(&report.still_open));
    server.await??;
    drop((stuck, burst));
    println!();

    println!("totals:");
    print!("{}", render::text_stats(&tracker.stats()));
    println!("\nrecently closed (newest first):");
    let closed: Vec<_> = tracker.recently_closed().into_iter().take(6).collect();
    print!("{}", render::text_closed(&closed));

    println!("\nfrom /metrics (excerpt):");
    for line in scrape(&collector, &prometheus).lines().filter(|l| {
        l.starts_with("conntrack_connections_opened_total")
            || l.starts_with("conntrack_connection_duration_seconds_count")
    }) {
        println!("{line}");
    }
    Ok(())
}

/// Opens a plain connection that sends half a request and then nothing, and waits (bounded)
/// until the server has admitted it and read those bytes.
async fn stalled_connection(
    tracker: &Tracker,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    const HALF_REQUEST: &[u8] = b"GET /data/1 HTTP/1.1\r\n";
    let mut stuck = tokio::net::TcpStream::connect(addr).await?;
    stuck.write_all(HALF_REQUEST).await?;
    let local = stuck.local_addr()?;
    // Polled rather than waited for with a hook: an `on_read` hook on the server's config
    // would make every read of the demo's traffic call it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tracker.connections().iter().any(|c| {
        c.role == Role::Server
            && c.remote_addr.socket_addr() == Some(local)
            && c.read_bytes >= HALF_REQUEST.len() as u64
    }) {
        if Instant::now() >= deadline {
            eprintln!("the server has not read the stalled connection's half request after 5 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(stuck)
}

/// Opens 11 more plain connections at once to the limited server (12 with the stalled one)
/// and says how many it rejected.
async fn limit_burst(
    tracker: &Tracker,
    addr: SocketAddr,
) -> std::io::Result<Vec<tokio::net::TcpStream>> {
    let rejected_before = tracker.stats().total().rejected;
    let mut burst = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..11 {
        let conn = tokio::net::TcpStream::connect(addr).await?;
        ours.push(conn.local_addr()?);
        burst.push(conn);
    }
    // The server admits each connection (a live entry) or rejects it (counted, closed at
    // once): wait (bounded) until it has done one or the other with all of them.
    let rejected = || tracker.stats().total().rejected - rejected_before;
    let admitted = || {
        tracker
            .connections()
            .iter()
            .filter(|c| c.role == Role::Server)
            .filter(|c| {
                c.remote_addr
                    .socket_addr()
                    .is_some_and(|a| ours.contains(&a))
            })
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while admitted() + rejected() < 11 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rejected = rejected();
    println!("limit: 12 connections at once against max_connections(8): {rejected} rejected");
    Ok(burst)
}

/// A Prometheus recorder for the `metrics` facade, with OpenTelemetry-to-Prometheus naming
/// (`_total`, unit suffixes) and histogram buckets for conntrack's durations.
fn install_prometheus() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    use conntrack_core::metrics::{self, CONNECTION_BUCKETS, PHASE_BUCKETS};
    let handle = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets(PHASE_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(metrics::CONNECTION_DURATION.to_owned()),
            CONNECTION_BUCKETS,
        )?
        .install_recorder()?;
    metrics::describe();
    Ok(handle)
}

/// One scrape: the tracker's counts are set just before rendering.
fn scrape(collector: &MetricsCollector, prometheus: &PrometheusHandle) -> String {
    collector.collect();
    prometheus.run_upkeep();
    prometheus.render()
}
