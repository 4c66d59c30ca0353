//! Helpers shared by the core test files: loopback addresses, a minimal executor and wakers,
//! and a hook that logs every event under a name.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use conntrack_core::{
    AcceptEvent, CloseEvent, ConnectDoneEvent, ConnectStartEvent, DialEvent, DnsDoneEvent,
    DnsStartEvent, Hook, ReadEvent, Registration, TlsHandshakeDoneEvent, TlsHandshakeStartEvent,
    WriteEvent,
};

/// `127.0.0.1:port`.
pub(crate) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An accepted loopback connection of category `cat`.
pub(crate) fn server(cat: &str) -> Registration {
    Registration::server(addr(80), addr(50_000)).category(cat)
}

/// A dialed loopback connection of category `cat`.
pub(crate) fn client(cat: &str) -> Registration {
    Registration::client(addr(40_000), addr(443)).category(cat)
}

/// A waker that only remembers that it was woken.
#[derive(Debug, Default)]
pub(crate) struct Flag(AtomicBool);

impl Flag {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Flag::default())
    }

    /// Whether it was woken since the last `take`, and resets it.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls `fut` once with `flag` as its waker.
pub(crate) fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>, flag: &Arc<Flag>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::clone(flag));
    fut.poll(&mut Context::from_waker(&waker))
}

/// Drives a future to completion on this thread, parking between polls. Panics if it has not
/// finished within `timeout` (bounded in time, and in polls: a spurious wake-up storm cannot
/// spin it forever).
pub(crate) fn block_on_timeout<F: Future>(fut: F, timeout: Duration) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let deadline = Instant::now() + timeout;
    for _ in 0..100_000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "future not ready after {timeout:?}");
        std::thread::park_timeout(left);
    }
    panic!("future polled 100000 times without finishing");
}

/// [`block_on_timeout`] with a generous 10 s limit.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    block_on_timeout(fut, Duration::from_secs(10))
}

/// A shared, ordered log of `"hook:event"` lines.
pub(crate) type Lines = Arc<Mutex<Vec<String>>>;

/// A hook that appends `"<name>:<event>"` to a shared log for every event it sees.
pub(crate) struct Log {
    pub(crate) name: &'static str,
    pub(crate) lines: Lines,
}

impl Log {
    pub(crate) fn new(name: &'static str, lines: &Lines) -> Self {
        Log {
            name,
            lines: Arc::clone(lines),
        }
    }

    fn push(&self, ev: &str) {
        self.lines
            .lock()
            .unwrap()
            .push(format!("{}:{ev}", self.name));
    }
}

impl Hook for Log {
    fn on_accept(&self, _: &AcceptEvent<'_>) {
        self.push("accept");
    }
    fn on_dial(&self, _: &DialEvent<'_>) {
        self.push("dial");
    }
    fn on_dns_start(&self, _: &DnsStartEvent<'_>) {
        self.push("dns_start");
    }
    fn on_dns_done(&self, _: &DnsDoneEvent<'_>) {
        self.push("dns_done");
    }
    fn on_connect_start(&self, _: &ConnectStartEvent<'_>) {
        self.push("connect_start");
    }
    fn on_connect_done(&self, _: &ConnectDoneEvent<'_>) {
        self.push("connect_done");
    }
    fn on_tls_handshake_start(&self, _: &TlsHandshakeStartEvent<'_>) {
        self.push("tls_handshake_start");
    }
    fn on_tls_handshake_done(&self, _: &TlsHandshakeDoneEvent<'_>) {
        self.push("tls_handshake_done");
    }
    fn on_read(&self, _: &ReadEvent<'_>) {
        self.push("read");
    }
    fn on_write(&self, _: &WriteEvent<'_>) {
        self.push("write");
    }
    fn on_close(&self, _: &CloseEvent<'_>) {
        self.push("close");
    }
}

/// The hook names that logged `event`, in the order they ran.
pub(crate) fn order_of(lines: &Lines, event: &str) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let (hook, ev) = l.split_once(':')?;
            (ev == event).then(|| hook.to_owned())
        })
        .collect()
}
