//! Listener behaviour: a failed accept is counted, reported and returned unchanged, and the
//! listener keeps serving.

use std::io;
use std::task::{Context, Poll};

use conntrack_core::{Addr, ListenerConfig, RecordingHook, Role, Tracker};
use conntrack_tokio::{Accept, Listener};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose first accept fails (as EMFILE would).
struct FailsOnce {
    inner: TcpListener,
    failed: bool,
}

impl Accept for FailsOnce {
    type Stream = TcpStream;
    type PeerAddr = std::net::SocketAddr;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, Self::PeerAddr)>> {
        if !self.failed {
            self.failed = true;
            return Poll::Ready(Err(io::Error::from_raw_os_error(24))); // EMFILE
        }
        Accept::poll_accept(&mut self.inner, cx)
    }

    fn listen_addr(&self) -> Addr {
        self.inner.listen_addr()
    }

    fn stream_addrs(
        &self,
        listen: &Addr,
        stream: &TcpStream,
        peer: &Self::PeerAddr,
    ) -> (Addr, Addr) {
        self.inner.stream_addrs(listen, stream, peer)
    }
}

#[tokio::test]
async fn failed_accept_is_reported_counted_and_returned() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let mut listener = Listener::new(
        &tracker,
        FailsOnce {
            inner,
            failed: false,
        },
        ListenerConfig::new().category("api").hook(rec.clone()),
    );
    let err = listener.accept().await.expect_err("first accept fails");
    assert_eq!(
        err.raw_os_error(),
        Some(24),
        "the error comes back unchanged"
    );
    let ev = rec.events();
    assert_eq!(rec.names(), ["accept"]);
    assert_eq!(ev[0].error().unwrap().kind, err.kind());
    assert!(ev[0].id().is_none(), "no connection on a failed accept");
    let stats = tracker.stats();
    let s = stats.get("api", Role::Server).unwrap();
    assert_eq!((s.failed, s.opened), (1, 0));

    // The listener keeps working.
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, peer) = listener.accept().await.expect("second accept works");
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(server.info().remote_addr, Addr::Inet(peer));
    assert_eq!(tracker.len(), 1);
    drop(server);
    assert!(tracker.is_empty());
    assert_eq!(rec.names(), ["accept", "accept", "close"]);
}
