//! The std listener's handling of accept results that are not failures.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};

use conntrack_core::{Addr, ListenerConfig, RecordingHook, Role, Tracker};
use conntrack_std::{Accept, Listener};

/// A TCP listener whose first `interrupts` accepts fail with `Interrupted`, as a blocking
/// `accept(2)` does when a signal handler runs (on a handler installed without `SA_RESTART`).
struct Interrupting {
    inner: TcpListener,
    interrupts: AtomicU32,
}

impl Accept for Interrupting {
    type Stream = TcpStream;
    type PeerAddr = SocketAddr;

    fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let left = self.interrupts.load(Ordering::Relaxed);
        if left > 0 {
            self.interrupts.store(left - 1, Ordering::Relaxed);
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.inner.accept()
    }

    fn listen_addr(&self) -> Addr {
        Accept::listen_addr(&self.inner)
    }

    fn stream_addrs(&self, listen: &Addr, stream: &TcpStream, peer: &SocketAddr) -> (Addr, Addr) {
        self.inner.stream_addrs(listen, stream, peer)
    }
}

#[test]
fn an_interrupted_accept_is_retried_and_not_counted() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(
        &tracker,
        Interrupting {
            inner,
            interrupts: AtomicU32::new(3),
        },
        ListenerConfig::new().category("intr"),
    );
    // The connect completes in the listen backlog, before the accept.
    let client = TcpStream::connect(addr).unwrap();
    let (server, peer) = listener.accept().expect("interrupts are retried");
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(listener.get_ref().interrupts.load(Ordering::Relaxed), 0);

    let stats = tracker.stats();
    let s = stats.get("intr", Role::Server).unwrap();
    assert_eq!((s.opened, s.failed, s.active), (1, 0, 1));
    assert_eq!(rec.names(), ["accept"], "no failed accept reported");
    assert!(rec.events()[0].error().is_none());
    drop(server);
    assert!(tracker.is_empty());
}

#[test]
fn another_accept_error_is_counted_and_returned_unchanged() {
    struct Failing(TcpListener);
    impl Accept for Failing {
        type Stream = TcpStream;
        type PeerAddr = SocketAddr;
        fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
            Err(io::Error::from_raw_os_error(24)) // EMFILE
        }
        fn listen_addr(&self) -> Addr {
            Accept::listen_addr(&self.0)
        }
        fn stream_addrs(&self, l: &Addr, s: &TcpStream, p: &SocketAddr) -> (Addr, Addr) {
            self.0.stream_addrs(l, s, p)
        }
    }

    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let listener = Listener::new(
        &tracker,
        Failing(TcpListener::bind("127.0.0.1:0").unwrap()),
        ListenerConfig::new().category("fail"),
    );
    let err = listener.accept().map(|_| ()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(24));
    let stats = tracker.stats();
    let s = stats.get("fail", Role::Server).unwrap();
    assert_eq!((s.opened, s.failed), (0, 1));
    assert_eq!(rec.names(), ["accept"]);
    assert_eq!(
        rec.events()[0].error().unwrap().message,
        io::Error::from_raw_os_error(24).to_string()
    );
}
