//! Loopback benchmarks for conntrack-std: tracked vs raw `std::net` streams on threads.
//!
//! Each case runs raw and tracked rounds alternately in one process and prints the median
//! ratio tracked/raw of their throughputs per CPU-second (1.0 = no overhead): the process's
//! CPU time for bulk and ping-pong, the two threads' for churn. `CONNTRACK_BENCH_QUICK=1`
//! shrinks every size tenfold for a smoke run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use conntrack_testkit::bench::{
    compare, cpu_time_of, process_cpu_time, run_only, scale, wanted, ROUNDS,
};

use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_std::{Dialer, Listener};

/// A connected (server, client) pair, raw or tracked.
trait Pair {
    type S: Read + Write + Send + 'static;
    fn pair(&self) -> (Self::S, Self::S);
    /// Connects and accepts `n` connections, closing each at once; returns the CPU time the
    /// client and server threads spent.
    fn churn(&self, n: usize) -> Duration;
}

struct Raw;
struct Tracked(Tracker);

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

impl Pair for Raw {
    type S = TcpStream;

    fn pair(&self) -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (s, c)
    }

    fn churn(&self, n: usize) -> Duration {
        let l = backlog_listener();
        let addr = l.local_addr().unwrap();
        let server = thread::spawn(move || {
            cpu_time_of(|| {
                for _ in 0..n {
                    drop(l.accept().unwrap());
                }
            })
        });
        let client = cpu_time_of(|| {
            for _ in 0..n {
                drop(TcpStream::connect(addr).unwrap());
            }
        });
        client + server.join().unwrap()
    }
}

impl Pair for Tracked {
    type S = conntrack_std::Tracked<TcpStream>;

    fn pair(&self) -> (Self::S, Self::S) {
        let l = Listener::new(
            &self.0,
            TcpListener::bind("127.0.0.1:0").unwrap(),
            ListenerConfig::new().category("bench-in"),
        );
        let d = Dialer::new(&self.0, DialerConfig::new().category("bench-out"));
        let c = d.connect_addr(l.get_ref().local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (s, c)
    }

    fn churn(&self, n: usize) -> Duration {
        let l = Listener::new(
            &self.0,
            backlog_listener(),
            ListenerConfig::new().category("bench-in"),
        );
        let addr = l.get_ref().local_addr().unwrap();
        let d = Dialer::new(&self.0, DialerConfig::new().category("bench-out"));
        let server = thread::spawn(move || {
            cpu_time_of(|| {
                for _ in 0..n {
                    drop(l.accept().unwrap());
                }
            })
        });
        let client = cpu_time_of(|| {
            for _ in 0..n {
                drop(d.connect_addr(addr).unwrap());
            }
        });
        client + server.join().unwrap()
    }
}

/// Client writes `total` bytes in 64 KiB chunks; the server reads them all.
fn bulk<P: Pair>(p: &P, total: usize) -> Duration {
    let (mut s, mut c) = p.pair();
    // The CPU time of the whole process (both threads, and smol's reactor thread where it
    // runs): wall time on two threads measures where the scheduler put them as much as the
    // work, and a round trip's wake-ups dominate it.
    let cpu0 = process_cpu_time();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "early end of stream");
            got += n;
        }
    });
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        c.write_all(&chunk[..n]).unwrap();
        sent += n;
    }
    reader.join().unwrap();
    process_cpu_time().saturating_sub(cpu0)
}

/// `n` round trips of a 64-byte message.
fn ping_pong<P: Pair>(p: &P, n: usize) -> Duration {
    let (mut s, mut c) = p.pair();
    // The CPU time of the whole process (both threads, and smol's reactor thread where it
    // runs): wall time on two threads measures where the scheduler put them as much as the
    // work, and a round trip's wake-ups dominate it.
    let cpu0 = process_cpu_time();
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
    });
    let mut buf = [1u8; 64];
    for _ in 0..n {
        c.write_all(&buf).unwrap();
        c.read_exact(&mut buf).unwrap();
    }
    echo.join().unwrap();
    process_cpu_time().saturating_sub(cpu0)
}

/// CPU time of the client and server threads (see `Pair::churn`): wall time on two threads
/// measures where the scheduler put them as much as the work.
fn churn<P: Pair>(p: &P, n: usize) -> Duration {
    p.churn(n)
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
    println!("conntrack-std loopback (threads), median of {ROUNDS} alternating rounds");

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
