//! Loopback benchmarks for conntrack-async-std on smol: tracked vs raw `smol::net` streams,
//! client and server each on their own thread under `smol::block_on`.
//!
//! Each case runs raw and tracked rounds alternately in one process and prints the median
//! ratio tracked/raw of their throughputs per CPU-second (1.0 = no overhead): the process's
//! CPU time for bulk and ping-pong, the two threads' for churn. `CONNTRACK_BENCH_QUICK=1`
//! shrinks every size tenfold for a smoke run.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use conntrack_testkit::bench::{
    compare, cpu_time_of, process_cpu_time, run_only, scale, wanted, ROUNDS,
};

use conntrack_async_std::{smol::Dialer, Listener};
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

/// Raw or tracked connections.
trait Mode: Sync {
    type S: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A connected (server, client) pair.
    fn pair(&self) -> (Self::S, Self::S);
    /// Connects and accepts `n` connections, closing each at once; returns the CPU time the
    /// client and server threads spent.
    fn churn(&self, n: usize) -> Duration;
}

struct Raw;
struct Tracked(Tracker);

fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::try_from(backlog_listener()).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A loopback listener with a backlog of 4,096 (the kernel caps it at `net.core.somaxconn`):
/// the churn client connects without waiting for the server to accept, and when the accept
/// queue is full the kernel drops the SYN and that connect waits a whole second for the
/// retransmission, which swamps the round. `nstat`'s `ListenOverflows` stays 0 with this.
fn backlog_listener() -> std::net::TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(4096).unwrap();
    s.into()
}

impl Mode for Raw {
    type S = TcpStream;

    fn pair(&self) -> (TcpStream, TcpStream) {
        let (l, addr) = bind();
        smol::block_on(async {
            let c = TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            (s, c)
        })
    }

    fn churn(&self, n: usize) -> Duration {
        let (l, addr) = bind();
        let server = thread::spawn(move || {
            cpu_time_of(|| {
                smol::block_on(async {
                    for _ in 0..n {
                        drop(l.accept().await.unwrap());
                    }
                });
            })
        });
        let client = cpu_time_of(|| {
            smol::block_on(async {
                for _ in 0..n {
                    drop(TcpStream::connect(addr).await.unwrap());
                }
            });
        });
        client + server.join().unwrap()
    }
}

impl Mode for Tracked {
    type S = conntrack_async_std::Tracked<TcpStream>;

    fn pair(&self) -> (Self::S, Self::S) {
        let (l, addr) = bind();
        let l = Listener::new(&self.0, l, ListenerConfig::new().category("bench-in"));
        let d = Dialer::new(&self.0, DialerConfig::new().category("bench-out"));
        smol::block_on(async {
            let c = d.connect_addr(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            (s, c)
        })
    }

    fn churn(&self, n: usize) -> Duration {
        let (l, addr) = bind();
        let l = Listener::new(&self.0, l, ListenerConfig::new().category("bench-in"));
        let d = Dialer::new(&self.0, DialerConfig::new().category("bench-out"));
        let server = thread::spawn(move || {
            cpu_time_of(|| {
                smol::block_on(async {
                    for _ in 0..n {
                        drop(l.accept().await.unwrap());
                    }
                });
            })
        });
        let client = cpu_time_of(|| {
            smol::block_on(async {
                for _ in 0..n {
                    drop(d.connect_addr(addr).await.unwrap());
                }
            });
        });
        client + server.join().unwrap()
    }
}

/// Client writes `total` bytes in 64 KiB chunks; the server reads them all.
fn bulk<M: Mode>(m: &M, total: usize) -> Duration {
    let (mut s, mut c) = m.pair();
    // The CPU time of the whole process (both threads, and smol's reactor thread where it
    // runs): wall time on two threads measures where the scheduler put them as much as the
    // work, and a round trip's wake-ups dominate it.
    let cpu0 = process_cpu_time();
    let reader = thread::spawn(move || {
        smol::block_on(async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < total {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "early end of stream");
                got += n;
            }
        });
    });
    smol::block_on(async {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            c.write_all(&chunk[..n]).await.unwrap();
            sent += n;
        }
    });
    reader.join().unwrap();
    process_cpu_time().saturating_sub(cpu0)
}

/// `n` round trips of a 64-byte message.
fn ping_pong<M: Mode>(m: &M, n: usize) -> Duration {
    let (mut s, mut c) = m.pair();
    // The CPU time of the whole process (both threads, and smol's reactor thread where it
    // runs): wall time on two threads measures where the scheduler put them as much as the
    // work, and a round trip's wake-ups dominate it.
    let cpu0 = process_cpu_time();
    let echo = thread::spawn(move || {
        smol::block_on(async {
            let mut buf = [0u8; 64];
            for _ in 0..n {
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
            }
        });
    });
    smol::block_on(async {
        let mut buf = [1u8; 64];
        for _ in 0..n {
            c.write_all(&buf).await.unwrap();
            c.read_exact(&mut buf).await.unwrap();
        }
    });
    echo.join().unwrap();
    process_cpu_time().saturating_sub(cpu0)
}

/// CPU time of the client and server threads (see `Pair::churn`): wall time on two threads
/// measures where the scheduler put them as much as the work.
fn churn<M: Mode>(m: &M, n: usize) -> Duration {
    m.churn(n)
}

fn main() {
    let tracker = Tracker::new();
    let tracked = Tracked(tracker.clone());
    // One side of one case alone (`-- only churn|ping|bulk raw|tracked`, see `run_only`).
    let ran = run_only(|case, t, n| match (case, t) {
        ("ping", true) => ping_pong(&tracked, n),
        ("ping", false) => ping_pong(&Raw, n),
        ("bulk", true) => bulk(&tracked, n),
        ("bulk", false) => bulk(&Raw, n),
        (_, true) => churn(&tracked, n),
        (_, false) => churn(&Raw, n),
    });
    if ran {
        assert!(tracker.is_empty(), "connections left behind");
        return;
    }
    println!("conntrack-async-std loopback (smol), median of {ROUNDS} alternating rounds");

    if wanted("bulk") {
        let total = scale(512 * 1024 * 1024);
        let mib = total as f64 / (1024.0 * 1024.0);
        // The noise floor first: raw against raw.
        compare("bulk raw vs raw", 0.99, "MiB/cpu-s", mib, |_| {
            bulk(&Raw, total)
        });
        compare("bulk transfer", 0.99, "MiB/cpu-s", mib, |t| {
            if t {
                bulk(&tracked, total)
            } else {
                bulk(&Raw, total)
            }
        });
    }
    if wanted("churn") {
        let n = scale(4000);
        compare("churn raw vs raw", 0.96, "conn/cpu-s", n as f64, |_| {
            churn(&Raw, n)
        });
        compare("connection churn", 0.96, "conn/cpu-s", n as f64, |t| {
            if t {
                churn(&tracked, n)
            } else {
                churn(&Raw, n)
            }
        });
    }
    if wanted("ping") {
        let n = scale(20_000);
        compare("ping-pong raw vs raw", 0.98, "rt/cpu-s", n as f64, |_| {
            ping_pong(&Raw, n)
        });
        compare("64-byte ping-pong", 0.98, "rt/cpu-s", n as f64, |t| {
            if t {
                ping_pong(&tracked, n)
            } else {
                ping_pong(&Raw, n)
            }
        });
    }
    assert!(tracker.is_empty(), "connections left behind");
}
