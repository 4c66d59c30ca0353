//! The debug page's events stream does not slow connections: 10,000 connections opened and
//! closed with and without a subscriber that never reads, side by side, as the CPU time of
//! the thread doing the churn (see `conntrack_testkit::bench`). The stalled subscriber is
//! measured in its steady state: its socket and its queue full, its hook removed (an
//! unmeasured churn gets it there first). A row for a subscriber that reads everything shows
//! what a live page costs.
//!
//! `cargo bench -p conntrack-tokio --features axum --bench debug_events`; `-- --quick` (or
//! `CONNTRACK_BENCH_QUICK=1`) shrinks the sizes tenfold; `loopback` or `registrations` picks
//! a case.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conntrack_core::{DialerConfig, ListenerConfig, Registration, Tracker};
use conntrack_testkit::bench::{compare, cpu_time_of, wanted, ROUNDS};
use conntrack_tokio::{DebugPage, Dialer, Listener};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// `n`, or a tenth of it for a smoke run.
fn scale(n: usize) -> usize {
    if std::env::args().any(|a| a == "--quick") {
        (n / 10).max(1)
    } else {
        conntrack_testkit::bench::scale(n)
    }
}

/// The debug page, served on its own runtime (other threads than the churn's).
struct PageServer {
    rt: Runtime,
    page: DebugPage,
    addr: SocketAddr,
}

/// What a subscriber does with the stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads nothing once the response head is in (a small receive buffer, the HTTP
    /// connection not driven): the server's writes stall, its queue fills.
    Stalled,
    /// Reads every event as it comes.
    Reading,
}

/// A subscriber, gone when dropped.
struct Subscriber {
    rt_task: tokio::task::JoinHandle<u64>,
}

impl PageServer {
    fn new(tracker: &Tracker) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let page = DebugPage::new(tracker).max_subscribers(64);
        let addr = rt.block_on(async {
            let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = inner.local_addr().unwrap();
            let app = axum::Router::new().merge(page.clone().router());
            tokio::spawn(
                axum::serve(
                    inner,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .into_future(),
            );
            addr
        });
        PageServer { rt, page, addr }
    }

    /// Subscribes, and returns once the subscription (its hook) is in place.
    fn subscribe(&self, mode: Mode) -> Subscriber {
        let addr = self.addr;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let rt_task = self.rt.spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            if mode == Mode::Stalled {
                socket.set_recv_buffer_size(4096).unwrap();
            }
            let stream = socket.connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            let mut conn = Box::pin(conn);
            let req = hyper::Request::get("/events")
                .header("host", addr.to_string())
                .body(Empty::<Bytes>::new())
                .unwrap();
            let res = tokio::select! {
                res = sender.send_request(req) => res.unwrap(),
                _ = &mut conn => panic!("the connection ended"),
            };
            ready_tx.send(()).unwrap();
            match mode {
                // Hold the connection, never driving it, until aborted.
                Mode::Stalled => {
                    std::future::pending::<()>().await;
                    0
                }
                Mode::Reading => {
                    tokio::spawn(conn);
                    let mut body = res.into_body();
                    let mut bytes = 0u64;
                    while let Some(Ok(frame)) = body.frame().await {
                        bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    bytes
                }
            }
        });
        ready_rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.page.subscribers() == 0 {
            assert!(Instant::now() < deadline, "the subscription never began");
            std::thread::sleep(Duration::from_millis(1));
        }
        Subscriber { rt_task }
    }

    /// Churns (unmeasured) until a stalled subscriber has filled its socket and its queue and
    /// stopped listening for good: the steady state of a subscriber that never reads.
    fn stall(&self, tracker: &Tracker) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            registration_churn(tracker, 1000);
            if hooks(tracker) == 0 {
                // Still off once the server has written what it could.
                std::thread::sleep(Duration::from_millis(50));
                if hooks(tracker) == 0 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the subscriber never stalled");
        }
    }

    /// Ends `sub` and waits until the page has no subscriber.
    fn unsubscribe(&self, sub: Subscriber) {
        sub.rt_task.abort();
        drop(sub);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.page.subscribers() > 0 {
            assert!(Instant::now() < deadline, "the subscription never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The tracker's hook count (from its `Debug`).
fn hooks(tracker: &Tracker) -> usize {
    let debug = format!("{tracker:?}");
    let at = debug.find("hooks: ").expect("hooks in Debug") + "hooks: ".len();
    debug[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `n` loopback connections dialed, accepted and closed, one at a time, both ends tracked.
async fn loopback_churn(tracker: &Tracker, n: usize) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let l = Listener::new(tracker, l, ListenerConfig::new().category("churn-in"));
    let d = Dialer::new(tracker, DialerConfig::new().category("churn-out"));
    let server = tokio::spawn(async move {
        for _ in 0..n {
            drop(l.accept().await.unwrap());
        }
    });
    for _ in 0..n {
        drop(d.connect_addr(addr).await.unwrap());
    }
    server.await.unwrap();
}

/// `n` registrations (no socket) opened and closed: the tracking and the hooks alone.
fn registration_churn(tracker: &Tracker, n: usize) {
    let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
    for i in 0..n {
        let port = u16::try_from(1024 + i % 60_000).unwrap();
        drop(tracker.register(
            Registration::server(local, SocketAddr::from(([127, 0, 0, 1], port))).category("churn"),
        ));
    }
}

fn main() {
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tracker = Tracker::new();
    let server = PageServer::new(&tracker);
    println!(
        "conntrack-tokio debug page events: churn without (\"raw\") and with (\"tracked\") a subscriber, CPU time of the churning thread, median of {ROUNDS} alternating rounds"
    );
    let n = scale(10_000);

    if wanted("noop") {
        // The floor: any tracker hook at all (a no-op one) against none.
        compare(
            "loopback, no-op hook",
            0.95,
            "conn/cpu-s",
            n as f64,
            |with| {
                let hook = with.then(|| tracker.add_hook(conntrack_core::NoopHook));
                let took = cpu_time_of(|| rt.block_on(loopback_churn(&tracker, n)));
                drop(hook);
                took
            },
        );
    }
    for (mode, label) in [(Mode::Stalled, "stalled"), (Mode::Reading, "reading")] {
        if wanted("loopback") {
            let name = format!("loopback, {label} sub");
            compare(&name, 0.95, "conn/cpu-s", n as f64, |with| {
                let sub = with.then(|| {
                    let sub = server.subscribe(mode);
                    if mode == Mode::Stalled {
                        server.stall(&tracker);
                    }
                    sub
                });
                let took = cpu_time_of(|| rt.block_on(loopback_churn(&tracker, n)));
                if let Some(sub) = sub {
                    server.unsubscribe(sub);
                }
                took
            });
        }
        if wanted("registrations") {
            let name = format!("registrations, {label} sub");
            compare(&name, 0.95, "conn/cpu-s", n as f64, |with| {
                let sub = with.then(|| {
                    let sub = server.subscribe(mode);
                    if mode == Mode::Stalled {
                        server.stall(&tracker);
                    }
                    sub
                });
                // Wall time: too short for the scheduler's per-thread CPU accounting.
                let start = Instant::now();
                registration_churn(&tracker, n);
                let took = start.elapsed();
                if let Some(sub) = sub {
                    server.unsubscribe(sub);
                }
                took
            });
        }
    }
}
