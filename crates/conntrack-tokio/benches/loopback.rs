//! Loopback benchmarks for conntrack-tokio: tracked vs raw tokio streams on one current-thread
//! runtime, measured side by side as the CPU time of that one thread (see
//! `conntrack_testkit::bench`): client, server and the kernel's loopback work all run on it, so
//! the ratio is the cost of tracking, not of where the scheduler put two threads.
//!
//! `cargo xtask bench loopback` or `cargo bench -p conntrack-tokio --bench loopback`;
//! `-- --quick` (or `CONNTRACK_BENCH_QUICK=1`) shrinks every size tenfold for a smoke run, and
//! any other argument picks cases by name (`bulk`, `churn`, `ping`, `policies`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_testkit::bench::{compare, cpu_time_of, wanted, ROUNDS};
use conntrack_tokio::{Dialer, Listener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

type Stream = Box<dyn Io>;
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Whether the tracked listener and dialer carry an idle timeout and a maximum age (the
/// `policies` rows: tracked with policies against tracked without).
static POLICIES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn configs() -> (ListenerConfig, DialerConfig) {
    let (mut l, mut d) = (
        ListenerConfig::new().category("bench-in"),
        DialerConfig::new().category("bench-out"),
    );
    if POLICIES.load(std::sync::atomic::Ordering::Relaxed) {
        l = l
            .idle_timeout(Duration::from_secs(60))
            .max_age(Duration::from_secs(3600));
        d = d
            .idle_timeout(Duration::from_secs(60))
            .max_age(Duration::from_secs(3600));
    }
    (l, d)
}

/// A connected (server, client) pair, raw or tracked.
async fn pair(tracker: Option<&Tracker>) -> (Stream, Stream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    match tracker {
        None => {
            let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
            (Box::new(s.unwrap().0), Box::new(c.unwrap()))
        }
        Some(t) => {
            let (lc, dc) = configs();
            let l = Listener::new(t, l, lc);
            let d = Dialer::new(t, dc);
            let (c, s) = tokio::join!(d.connect_addr(addr), l.accept());
            (Box::new(s.unwrap().0), Box::new(c.unwrap()))
        }
    }
}

/// The client writes `total` bytes in 64 KiB chunks; the server reads them all.
async fn bulk(tracker: Option<&Tracker>, total: usize) -> Duration {
    let (mut s, mut c) = pair(tracker).await;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "early end of stream");
            got += n;
        }
    });
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        c.write_all(&chunk[..n]).await.unwrap();
        sent += n;
    }
    reader.await.unwrap();
    start.elapsed()
}

/// `n` round trips of a 64-byte message.
async fn ping_pong(tracker: Option<&Tracker>, n: usize) -> Duration {
    let (mut s, mut c) = pair(tracker).await;
    let start = Instant::now();
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        }
    });
    let mut buf = [1u8; 64];
    for _ in 0..n {
        c.write_all(&buf).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
    }
    echo.await.unwrap();
    start.elapsed()
}

/// `n` connections connected, accepted and closed, one at a time.
async fn churn(tracker: Option<&Tracker>, n: usize) -> Duration {
    churn_with(tracker, n, true).await
}

/// [`churn`], the tracked configs reading TCP statistics or not (`tcp_info`).
async fn churn_with(tracker: Option<&Tracker>, n: usize, tcp_info: bool) -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let start = Instant::now();
    match tracker {
        None => {
            let server = tokio::spawn(async move {
                for _ in 0..n {
                    drop(l.accept().await.unwrap());
                }
            });
            for _ in 0..n {
                drop(TcpStream::connect(addr).await.unwrap());
            }
            server.await.unwrap();
        }
        Some(t) => {
            let l = Listener::new(
                t,
                l,
                ListenerConfig::new()
                    .category("bench-in")
                    .tcp_info(tcp_info),
            );
            let d = Dialer::new(
                t,
                DialerConfig::new().category("bench-out").tcp_info(tcp_info),
            );
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
    }
    start.elapsed()
}

/// `n`, or a tenth of it for a smoke run (`--quick` or `CONNTRACK_BENCH_QUICK=1`).
fn scale(n: usize) -> usize {
    if std::env::args().any(|a| a == "--quick") {
        (n / 10).max(1)
    } else {
        conntrack_testkit::bench::scale(n)
    }
}

fn main() {
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tracker = Tracker::new();
    let pick = |tracked: bool| tracked.then_some(&tracker);
    println!("conntrack-tokio loopback (current-thread runtime, CPU time of its thread), median of {ROUNDS} alternating rounds");

    if wanted("bulk") {
        let total = scale(512 * 1024 * 1024);
        let mib = total as f64 / (1024.0 * 1024.0);
        compare("bulk transfer", 0.99, "MiB/cpu-s", mib, |t| {
            cpu_time_of(|| {
                rt.block_on(bulk(pick(t), total));
            })
        });
    }
    if wanted("churn") {
        // The noise floor: raw against raw. This VM's connection churn varies by ±10% from
        // round to round, so a median of 15 still moves by a few points from run to run.
        let n = scale(4000);
        compare("churn raw vs raw", 0.97, "conn/cpu-s", n as f64, |_| {
            cpu_time_of(|| {
                rt.block_on(churn(None, n));
            })
        });
    }
    if wanted("churn") {
        let n = scale(4000);
        compare("connection churn", 0.97, "conn/cpu-s", n as f64, |t| {
            cpu_time_of(|| {
                rt.block_on(churn(pick(t), n));
            })
        });
    }
    if wanted("churn") {
        // The same, without the TCP statistics' `getsockopt` at each close.
        let n = scale(4000);
        compare(
            "churn, tcp_info(false)",
            0.97,
            "conn/cpu-s",
            n as f64,
            |t| {
                cpu_time_of(|| {
                    rt.block_on(churn_with(pick(t), n, false));
                })
            },
        );
    }
    if wanted("ping") {
        let n = scale(20_000);
        compare("64-byte ping-pong", 0.985, "rt/cpu-s", n as f64, |t| {
            cpu_time_of(|| {
                rt.block_on(ping_pong(pick(t), n));
            })
        });
    }
    if wanted("policies") {
        // Both sides tracked; "raw" is without policies, "tracked" with an idle timeout and a
        // maximum age on both configs and the tracker's enforcer running on the runtime (it
        // sleeps until the first deadline, an hour away: the cost measured is the hot path's).
        let enforcer = tracker.clone();
        rt.spawn(async move { enforcer.run_policies(tokio::time::sleep).await });
        let with = |p: bool| POLICIES.store(p, std::sync::atomic::Ordering::Relaxed);
        let total = scale(512 * 1024 * 1024);
        let mib = total as f64 / (1024.0 * 1024.0);
        compare("bulk +policies/none", 0.98, "MiB/cpu-s", mib, |p| {
            with(p);
            cpu_time_of(|| {
                rt.block_on(bulk(Some(&tracker), total));
            })
        });
        let n = scale(20_000);
        compare(
            "ping-pong +policies/none",
            0.98,
            "rt/cpu-s",
            n as f64,
            |p| {
                with(p);
                cpu_time_of(|| {
                    rt.block_on(ping_pong(Some(&tracker), n));
                })
            },
        );
        with(false);
    }
    assert!(tracker.is_empty(), "connections left behind");
}
