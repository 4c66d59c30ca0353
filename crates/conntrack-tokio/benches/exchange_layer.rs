//! What `ExchangeLayer` costs an axum server, under a real load generator: the same server on
//! a tracked `Listener` without the layer, with it and no hook (exchanges counted, not timed),
//! and with it and `MetricsHook` (every exchange timed phase by phase and recorded in
//! `http.server.request.duration` and the phase histograms). `wrk -t2 -c64` against a route
//! answering a short body, setups alternating round by round; each round prints requests per
//! second and the process' CPU time per request (wrk is another process). The summary gives
//! medians and the ratios to the server without the layer.
//!
//! `cargo bench -p conntrack-tokio --features axum,metrics --bench exchange_layer`; needs
//! `wrk` on the PATH, and says so if it is missing. `CONNTRACK_BENCH_QUICK=1` or `--quick`
//! runs 1-second rounds.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use conntrack_testkit::bench::{has_wrk, median, only_setup, wrk_round, Round};

use axum::routing::get;
use axum::Router;
use conntrack_core::metrics::MetricsHook;
use conntrack_core::{ListenerConfig, Tracker};
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::{Listener, TrackedConnectInfo};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    NoLayer,
    /// A layer that does nothing but wrap the route's future (tower's `MapResponseLayer` with
    /// the identity): what any axum layer costs, the floor under `ExchangeLayer`'s cost.
    PassThrough,
    Layer,
    LayerTimed,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::NoLayer,
        Setup::PassThrough,
        Setup::Layer,
        Setup::LayerTimed,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::NoLayer => "tracked, no ExchangeLayer",
            Setup::PassThrough => "a pass-through layer",
            Setup::Layer => "ExchangeLayer, no hook",
            Setup::LayerTimed => "ExchangeLayer, MetricsHook",
        }
    }
}

async fn start(setup: Setup) -> (SocketAddr, tokio::sync::watch::Sender<bool>, Tracker) {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let tracker = match setup {
        Setup::LayerTimed => Tracker::builder()
            .hook(MetricsHook::new().server_requests(true))
            .build(),
        _ => Tracker::new(),
    };
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http"));
    let mut app = Router::new().route("/", get(|| async { "hello, world" }));
    match setup {
        Setup::NoLayer => {}
        Setup::PassThrough => {
            app = app.layer(tower::util::MapResponseLayer::new(
                |r: axum::response::Response| r,
            ));
        }
        Setup::Layer | Setup::LayerTimed => app = app.layer(ExchangeLayer::new(&tracker)),
    }
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        })
        .into_future(),
    );
    (addr, stop_tx, tracker)
}

fn main() {
    if !has_wrk() {
        println!("exchange_layer bench: skipped, `wrk` is not installed (apt-get install wrk)");
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
    // One setup alone, for a profile (`perf record`) or an instruction count, which noise
    // does not change (`valgrind --tool=callgrind`; two runs of different lengths give the
    // cost of one more request): `-- only nolayer|passthrough|layer|timed`.
    if let Some(only) = only_setup() {
        let setup = match only.as_str() {
            "layer" => Setup::Layer,
            "passthrough" => Setup::PassThrough,
            "timed" => Setup::LayerTimed,
            _ => Setup::NoLayer,
        };
        let (addr, stop, _tracker) = rt.block_on(start(setup));
        let r = wrk_round(addr, secs);
        let _ = stop.send(true);
        r.print_single(setup.name());
        return;
    }
    println!(
        "conntrack-tokio ExchangeLayer (axum on a tracked Listener, wrk -t2 -c64, {secs} s \
         rounds, setups alternating), {rounds} rounds"
    );
    let mut results = vec![(Vec::new(), Vec::new()); Setup::ALL.len()];
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
            eprintln!(
                "round {round} {:<28} {rate:>10.0} req/s {per_request:>6.2} µs CPU/request",
                setup.name()
            );
            results[i].0.push(rate);
            results[i].1.push(per_request);
        }
    }
    let base_cpu = median(results[0].1.clone());
    let base_rate = median(results[0].0.clone());
    for (i, setup) in Setup::ALL.iter().enumerate() {
        let rate = median(results[i].0.clone());
        let cpu = median(results[i].1.clone());
        println!(
            "{:<28} {rate:>10.0} req/s  x{:.3} of no layer   {cpu:>6.2} µs CPU/request  (x{:.3} of no layer)",
            setup.name(),
            rate / base_rate,
            cpu / base_cpu,
        );
    }
}
