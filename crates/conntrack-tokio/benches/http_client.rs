//! The cost of `TracedClient` with no hook: `n` keep-alive GETs through hyper-util's client on
//! the tracked `Dialer`, plain vs wrapped in `TracedClient`, alternated in one process (see
//! `conntrack_testkit::bench`), against a hyper server on loopback.
//!
//! `cargo bench -p conntrack-tokio --features hyper --bench http_client`; `-- --quick` (or
//! `CONNTRACK_BENCH_QUICK=1`) shrinks the size tenfold; `plain` or `traced` picks one case.
//! By default client and server run on one current-thread runtime and each round is measured
//! as the CPU time of its thread (kernel time included, as in `loopback`), so the ratio is the
//! cost of tracing and not where a scheduler put two threads; `--multi-thread` runs them on a
//! two-worker runtime and measures wall time. The `plain` case compares the plain client with
//! a second plain client: the noise floor of the machine, to read the `traced` ratio against.
//! The `events` case compares `TracedClient` with a hook that wants every request event (all
//! with empty bodies) against `TracedClient` with no hook: what tracing a request costs once
//! someone listens, Go's httptrace with its 16 hooks set.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conntrack_core::{DialerConfig, Hook, Tracker};
use conntrack_testkit::bench::{compare, cpu_time_of, wanted, ROUNDS};
use conntrack_tokio::hyper::{RequestBody, TracedClient};
use conntrack_tokio::Dialer;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

type Plain = Client<Dialer, Empty<Bytes>>;
type Traced = TracedClient<Dialer, Empty<Bytes>>;

/// Wants every request event and does nothing with them.
struct EveryRequestEvent;

impl Hook for EveryRequestEvent {
    fn wants_request_events(&self) -> bool {
        true
    }
}

async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `n` GETs, each response body read to its end, through `get` (one client's `get`).
async fn gets<F, Fut, Bd, E>(n: usize, get: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<hyper::Response<Bd>, E>>,
    Bd: hyper::body::Body,
    Bd::Error: std::fmt::Debug,
    E: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..n {
        let res = get().await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 5);
    }
    start.elapsed()
}

async fn plain(client: &Plain, uri: &Uri, n: usize) -> Duration {
    gets(n, || client.get(uri.clone())).await
}

async fn traced(client: &Traced, uri: &Uri, n: usize) -> Duration {
    gets(n, || client.get(uri.clone())).await
}

fn scale(n: usize) -> usize {
    if std::env::args().any(|a| a == "--quick") {
        (n / 10).max(1)
    } else {
        conntrack_testkit::bench::scale(n)
    }
}

fn main() {
    let current_thread = !std::env::args().any(|a| a == "--multi-thread");
    let rt: Runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let tracker = Tracker::new();
    let addr = rt.block_on(server());
    let uri: Uri = format!("http://{addr}/").parse().unwrap();
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("bench-http"));
    let plain_client: Plain = Client::builder(TokioExecutor::new()).build(dialer.clone());
    let plain_client2: Plain = Client::builder(TokioExecutor::new()).build(dialer.clone());
    let traced_client: Traced = TracedClient::new(
        &tracker,
        Client::builder(TokioExecutor::new()).build::<_, RequestBody<Empty<Bytes>>>(dialer.clone()),
    );
    let events_client: Traced = TracedClient::new(
        &tracker,
        Client::builder(TokioExecutor::new()).build::<_, RequestBody<Empty<Bytes>>>(dialer),
    )
    .hook(EveryRequestEvent);
    let runtime = if current_thread {
        "current-thread runtime, CPU time of its thread"
    } else {
        "multi-thread runtime, 2 workers, wall time"
    };
    println!("conntrack-tokio http_client ({runtime}), median of {ROUNDS} alternating rounds");
    let n = scale(20_000);
    // The noise floor: the plain client against a second plain client (ratio ~1.0 up to noise).
    // One round: CPU time of this thread on the current-thread runtime, wall time otherwise.
    let measure = |f: &mut dyn FnMut() -> Duration| {
        if current_thread {
            cpu_time_of(|| {
                f();
            })
        } else {
            f()
        }
    };
    // One client alone for `N` requests, for an instruction count, which noise does not change:
    // `valgrind --tool=callgrind` of `-- only plain|traced|events N` for two values of `N`; the
    // difference of the counts over the difference of the `N`s is one request's cost.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "only") {
        let n: usize = args.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(1000);
        match args.get(i + 1).map(String::as_str) {
            Some("traced") => rt.block_on(traced(&traced_client, &uri, n)),
            Some("events") => rt.block_on(traced(&events_client, &uri, n)),
            _ => rt.block_on(plain(&plain_client, &uri, n)),
        };
        println!("{n} requests");
        return;
    }
    let unit = if current_thread { "req/cpu-s" } else { "req/s" };
    if wanted("plain") {
        compare("GET plain vs plain", 0.98, unit, n as f64, |t| {
            let client = if t { &plain_client2 } else { &plain_client };
            measure(&mut || rt.block_on(plain(client, &uri, n)))
        });
    }
    if wanted("traced") {
        // Issue 29, acceptance 4: at most 0.35 µs more CPU a request, a ratio of at least 0.96.
        compare("GET traced, no hook", 0.96, unit, n as f64, |t| {
            measure(&mut || {
                if t {
                    rt.block_on(traced(&traced_client, &uri, n))
                } else {
                    rt.block_on(plain(&plain_client, &uri, n))
                }
            })
        });
    }
    if wanted("events") {
        // The bound is 1 µs a request over no hook: a ratio of about 0.92 here.
        compare(
            "GET every request event vs no hook",
            0.92,
            unit,
            n as f64,
            |t| {
                measure(&mut || {
                    if t {
                        rt.block_on(traced(&events_client, &uri, n))
                    } else {
                        rt.block_on(traced(&traced_client, &uri, n))
                    }
                })
            },
        );
    }
}
