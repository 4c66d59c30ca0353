//! A service set up as the README recommends, under a real load generator, against the same
//! topology with no tracking at all: what tracking costs a whole service.
//!
//! The topology (one process, a tokio runtime with two workers): an axum front on a tracked
//! `Listener` with `ExchangeLayer`, the debug page and Prometheus metrics (`MetricsHook` +
//! `MetricsCollector`), forwarding each request through a `TracedClient` over the tracked
//! `Dialer` to an axum upstream on a tracked `Listener` answering 2 KiB. `wrk -t2 -c64` loads
//! the front for a few seconds per round; the setups alternate round by round:
//!
//! - `untracked`: the same two axum services on plain listeners, hyper-util's plain client;
//! - `no hook`: everything tracked, no hook on the tracker;
//! - `MetricsHook`: everything tracked, `MetricsHook` on the tracker (the README's setup);
//! - `all request events`: a no-op hook that wants every request event, on the tracker.
//!
//! Each round prints the requests per second and the process' CPU time per request (the load
//! generator is another process). The summary gives medians and the ratios to `untracked`.
//!
//! `cargo bench -p conntrack-tokio --features axum,hyper,metrics --bench service`
//! (`cargo xtask bench service`); needs `wrk` on the PATH (`apt-get install wrk`), and says so
//! if it is missing. `CONNTRACK_BENCH_QUICK=1` or `--quick` runs 1-second rounds.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use conntrack_testkit::bench::{has_wrk, median, only_setup, wrk_round, Round};

use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use conntrack_core::metrics::{MetricsCollector, MetricsHook};
use conntrack_core::{DialerConfig, Hook, ListenerConfig, Tracker};
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::hyper::TracedClient;
use conntrack_tokio::{debug_router, Dialer, Listener, TrackedConnectInfo};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const ANSWER: [u8; 2048] = [b'x'; 2048];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Untracked,
    NoHook,
    Metrics,
    /// A hook that wants every client request event (the upstream request's httptrace
    /// events), not the servers' exchange phases: Go's httptrace with its 16 hooks set.
    ClientRequestEvents,
    /// A hook that wants every request event, the two servers' exchange phases too.
    AllRequestEvents,
    // Steps between `Untracked` and `NoHook`, for the single-setup mode only (a profile or an
    // instruction count of each part of the cost):
    /// Tracked listeners and dialer, hyper-util's plain client over the `Dialer`, no
    /// `ExchangeLayer`, no connect info.
    Streams,
    /// `Streams`, and the front and upstream served with `TrackedConnectInfo`.
    ConnectInfo,
    /// `ConnectInfo`, and `ExchangeLayer` on both (still the plain client).
    Layers,
}

impl Setup {
    const ALL: [Setup; 5] = [
        Setup::Untracked,
        Setup::NoHook,
        Setup::Metrics,
        Setup::ClientRequestEvents,
        Setup::AllRequestEvents,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::Untracked => "untracked",
            Setup::NoHook => "tracked, no hook",
            Setup::Metrics => "tracked, MetricsHook",
            Setup::ClientRequestEvents => "tracked, client request events",
            Setup::AllRequestEvents => "tracked, all request events",
            Setup::Streams => "tracked streams only",
            Setup::ConnectInfo => "tracked streams + connect info",
            Setup::Layers => "tracked streams + connect info + ExchangeLayer",
        }
    }
}

/// A hook that wants every request event and does nothing with them.
struct EveryRequestEvent;

impl Hook for EveryRequestEvent {
    fn wants_request_events(&self) -> bool {
        true
    }
}

/// A hook that wants every client request event, and no server exchange.
struct EveryClientRequestEvent;

impl Hook for EveryClientRequestEvent {
    fn wants_request_events(&self) -> bool {
        true
    }

    fn wants_server_exchanges(&self) -> bool {
        false
    }
}

/// How the front reaches the upstream.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // made once per setup, cloned (shallowly) per request
enum Upstream {
    Plain(Client<HttpConnector, Empty<Bytes>>, String),
    PlainTracked(Client<Dialer, Empty<Bytes>>, String),
    Traced(TracedClient<Dialer, Empty<Bytes>>, String),
}

async fn forward(State(up): State<Upstream>) -> axum::response::Response {
    let res = match &up {
        Upstream::Plain(client, uri) => {
            let res = client.get(uri.parse().unwrap()).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        }
        Upstream::PlainTracked(client, uri) => {
            let res = client.get(uri.parse().unwrap()).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        }
        Upstream::Traced(client, uri) => {
            let res = client.get(uri.parse().unwrap()).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        }
    };
    axum::response::Response::new(Body::from(res))
}

async fn answer() -> &'static [u8] {
    &ANSWER
}

fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .with_recommended_naming(true)
            .install_recorder()
            .expect("one recorder");
        conntrack_core::metrics::describe();
        handle
    })
}

/// Serves `app` on a tracked listener, with `TrackedConnectInfo` or without connect info.
fn serve(
    listener: Listener<tokio::net::TcpListener>,
    app: Router,
    connect_info: bool,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if connect_info {
        tokio::spawn(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
            )
            .with_graceful_shutdown(stopped)
            .into_future(),
        );
    } else {
        tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        );
    }
}

/// Starts the topology for `setup`; returns the front's address and what stops it.
async fn start(setup: Setup) -> (SocketAddr, tokio::sync::watch::Sender<bool>, Tracker) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tracker = match setup {
        Setup::Metrics => Tracker::builder().hook(MetricsHook::new()).build(),
        Setup::ClientRequestEvents => Tracker::builder().hook(EveryClientRequestEvent).build(),
        Setup::AllRequestEvents => Tracker::builder().hook(EveryRequestEvent).build(),
        _ => Tracker::new(),
    };
    let up_inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up_inner.local_addr().unwrap();
    let front_inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front_inner.local_addr().unwrap();
    let up_uri = format!("http://{up_addr}/");
    if setup == Setup::Untracked {
        let upstream = Router::new().route("/", get(answer));
        tokio::spawn(
            axum::serve(up_inner, upstream)
                .with_graceful_shutdown(stopped())
                .into_future(),
        );
        let client = Client::builder(TokioExecutor::new()).build_http();
        let front = Router::new()
            .route("/", get(forward))
            .with_state(Upstream::Plain(client, up_uri));
        tokio::spawn(
            axum::serve(front_inner, front)
                .with_graceful_shutdown(stopped())
                .into_future(),
        );
    } else {
        let layers = !matches!(setup, Setup::Streams | Setup::ConnectInfo);
        let connect_info = setup != Setup::Streams;
        let traced = matches!(
            setup,
            Setup::NoHook | Setup::Metrics | Setup::ClientRequestEvents | Setup::AllRequestEvents
        );
        let mut upstream = Router::new().route("/", get(answer));
        if layers {
            upstream = upstream.layer(ExchangeLayer::new(&tracker));
        }
        let up_listener = Listener::new(
            &tracker,
            up_inner,
            ListenerConfig::new().category("upstream-in"),
        );
        serve(up_listener, upstream, connect_info, stopped());
        let dialer = Dialer::new(&tracker, DialerConfig::new().category("upstream-out"));
        let builder = Client::builder(TokioExecutor::new());
        let upstream = if traced {
            Upstream::Traced(TracedClient::new(&tracker, builder.build(dialer)), up_uri)
        } else {
            Upstream::PlainTracked(builder.build(dialer), up_uri)
        };
        let collector = MetricsCollector::new(&tracker);
        let mut front = Router::new()
            .route("/", get(forward))
            .with_state(upstream)
            .nest("/debug/conntrack", debug_router(&tracker))
            .route(
                "/metrics",
                get(move || {
                    let collector = collector.clone();
                    async move {
                        collector.collect();
                        prometheus().render()
                    }
                }),
            );
        if layers {
            front = front.layer(ExchangeLayer::new(&tracker));
        }
        let front_listener = Listener::new(
            &tracker,
            front_inner,
            ListenerConfig::new().category("front-in"),
        );
        serve(front_listener, front, connect_info, stopped());
    }
    (front_addr, stop_tx, tracker)
}

fn main() {
    if !has_wrk() {
        println!("service bench: skipped, `wrk` is not installed (apt-get install wrk)");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("CONNTRACK_BENCH_QUICK").is_some_and(|v| v == "1");
    let (secs, rounds) = if quick { (1, 1) } else { (4, 5) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { prometheus() });
    // For profiling one setup alone: `-- only untracked|streams|connectinfo|layers|nohook|metrics|client|all`.
    if let Some(only) = only_setup() {
        let setup = match only.as_str() {
            "nohook" => Setup::NoHook,
            "metrics" => Setup::Metrics,
            "client" => Setup::ClientRequestEvents,
            "all" => Setup::AllRequestEvents,
            "streams" => Setup::Streams,
            "connectinfo" => Setup::ConnectInfo,
            "layers" => Setup::Layers,
            _ => Setup::Untracked,
        };
        let (addr, stop, _tracker) = rt.block_on(start(setup));
        let r = wrk_round(addr, secs);
        let _ = stop.send(true);
        r.print_single(setup.name());
        return;
    }
    println!(
        "conntrack-tokio service (axum front + TracedClient upstream, wrk -t2 -c64, {secs} s \
         rounds, setups alternating), {rounds} rounds"
    );
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); Setup::ALL.len()];
    for round in 0..=rounds {
        for (i, &setup) in Setup::ALL.iter().enumerate() {
            let (addr, stop, tracker) = rt.block_on(start(setup));
            // A warm-up (connections made, not measured), then the measured part.
            let Round {
                requests,
                rate,
                cpu_per_request_us: per_request,
                ..
            } = wrk_round(addr, secs);
            let _ = stop.send(true);
            drop(tracker);
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
            if round == 0 || requests == 0.0 {
                continue; // the first round warms everything up
            }
            if std::env::var_os("CONNTRACK_BENCH_VERBOSE").is_some_and(|v| v == "1") {
                eprintln!(
                    "round {round} {:<28} {rate:>10.0} req/s {per_request:>6.1} µs CPU/request",
                    setup.name()
                );
            }
            results[i].0.push(rate);
            results[i].1.push(per_request);
        }
    }
    let base_rate = median(results[0].0.clone());
    let base_cpu = median(results[0].1.clone());
    let none_cpu = median(results[1].1.clone());
    for (i, setup) in Setup::ALL.iter().enumerate() {
        let rate = median(results[i].0.clone());
        let cpu = median(results[i].1.clone());
        println!(
            "{:<28} {rate:>10.0} req/s  x{:.3} of untracked   {cpu:>6.1} µs CPU/request  ({:+.1} µs vs untracked, {:+.2} µs vs no hook)",
            setup.name(),
            rate / base_rate,
            cpu - base_cpu,
            cpu - none_cpu,
        );
    }
}
