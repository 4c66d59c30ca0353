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

/// Whether the tracked listener and dialer carry a connection limit, an idle timeout and a
/// maximum age (the `policies` rows: tracked with them against tracked without).
static POLICIES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn configs() -> (ListenerConfig, DialerConfig) {
    let (mut l, mut d) = (
        ListenerConfig::new().category("bench-in"),
        DialerConfig::new().category("bench-out"),
    );
    if POLICIES.load(std::sync::atomic::Ordering::Relaxed) {
        l = l
            .max_connections(10_000)
            .idle_timeout(Duration::from_secs(60))
            .max_age(Duration::from_secs(3600));
        d = d
            .max_connections(10_000)
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
    churn_with(tracker, n, false).await
}

/// [`churn`], the tracked configs also reading TCP statistics at each close or not
/// (`tcp_info_at_close`, off by default).
async fn churn_with(tracker: Option<&Tracker>, n: usize, at_close: bool) -> Duration {
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
            let (lc, dc) = configs();
            let l = Listener::new(t, l, lc.tcp_info_at_close(at_close));
            let d = Dialer::new(t, dc.tcp_info_at_close(at_close));
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
    // For profiling one side alone (`perf record`, `perf stat`, `strace -c`, an instruction
    // count): `-- only churn|ping|bulk raw|tracked` runs one case's raw or tracked side:
    // 40,000 connections, 200,000 round trips or 2 GiB (a tenth of each with `--quick` or
    // `CONNTRACK_BENCH_QUICK=1`). `-- churn-only raw|tracked` is `only churn`.
    let args: Vec<String> = std::env::args().collect();
    let single = match args.iter().position(|a| a == "only" || a == "churn-only") {
        Some(i) if args[i] == "churn-only" => Some(("churn", args.get(i + 1))),
        Some(i) => Some((
            args.get(i + 1).map_or("churn", String::as_str),
            args.get(i + 2),
        )),
        None => None,
    };
    if let Some((case, side)) = single {
        let tracked = side.is_some_and(|a| a == "tracked");
        let (n, unit) = match case {
            "ping" => (scale(200_000), "round trips"),
            "bulk" => (scale(2048), "MiB"),
            _ => (scale(40_000), "connections"),
        };
        let cpu = cpu_time_of(|| {
            rt.block_on(async {
                match case {
                    "ping" => ping_pong(pick(tracked), n).await,
                    "bulk" => bulk(pick(tracked), n * 1024 * 1024).await,
                    _ => churn(pick(tracked), n).await,
                }
            });
        });
        println!(
            "only {case} {}: {n} {unit}, {:.2} µs CPU each",
            if tracked { "tracked" } else { "raw" },
            cpu.as_secs_f64() * 1e6 / n as f64
        );
        return;
    }
    println!("conntrack-tokio loopback (current-thread runtime, CPU time of its thread), median of {ROUNDS} alternating rounds");
    // Each case first runs raw against raw: the noise floor of the machine for that case,
    // to read the tracked row against (this VM's rounds vary by several percent).

    if wanted("bulk") {
        let total = scale(512 * 1024 * 1024);
        let mib = total as f64 / (1024.0 * 1024.0);
        compare("bulk raw vs raw", 0.99, "MiB/cpu-s", mib, |_| {
            cpu_time_of(|| {
                rt.block_on(bulk(None, total));
            })
        });
        compare("bulk transfer", 0.99, "MiB/cpu-s", mib, |t| {
            cpu_time_of(|| {
                rt.block_on(bulk(pick(t), total));
            })
        });
    }
    if wanted("ping") {
        let n = scale(20_000);
        compare("ping-pong raw vs raw", 0.98, "rt/cpu-s", n as f64, |_| {
            cpu_time_of(|| {
                rt.block_on(ping_pong(None, n));
            })
        });
        compare("64-byte ping-pong", 0.98, "rt/cpu-s", n as f64, |t| {
            cpu_time_of(|| {
                rt.block_on(ping_pong(pick(t), n));
            })
        });
    }
    if wanted("churn") {
        let n = scale(4000);
        compare("churn raw vs raw", 0.96, "conn/cpu-s", n as f64, |_| {
            cpu_time_of(|| {
                rt.block_on(churn(None, n));
            })
        });
        compare("connection churn", 0.96, "conn/cpu-s", n as f64, |t| {
            cpu_time_of(|| {
                rt.block_on(churn(pick(t), n));
            })
        });
        // For reference: with the TCP statistics' `getsockopt` at each close (opt-in).
        compare(
            "churn, tcp_info_at_close",
            0.96,
            "conn/cpu-s",
            n as f64,
            |t| {
                cpu_time_of(|| {
                    rt.block_on(churn_with(pick(t), n, true));
                })
            },
        );
    }
    if wanted("policies") {
        // Both sides tracked; "raw" is the default configuration, "tracked" the same with a
        // connection limit, an idle timeout and a maximum age on both configs and the
        // tracker's enforcer running on the runtime (it sleeps until the first deadline, an
        // hour away: the cost measured is the hot path's and the registration's).
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
        let n = scale(4000);
        compare("churn +policies/none", 0.99, "conn/cpu-s", n as f64, |p| {
            with(p);
            cpu_time_of(|| {
                rt.block_on(churn(Some(&tracker), n));
            })
        });
        with(false);
    }
    assert!(tracker.is_empty(), "connections left behind");
}
