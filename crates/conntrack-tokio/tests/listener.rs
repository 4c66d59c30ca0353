//! Listener behaviour: a Unix listener with the dialer's `connect_unix`; a failed accept is
//! counted, reported and returned unchanged, and the listener keeps serving; split halves of
//! an accepted stream share one entry.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use conntrack_core::{Addr, DialerConfig, ListenerConfig, RecordingHook, Role, Tracker};
use conntrack_tokio::{Accept, Dialer, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose first accept fails (as EMFILE would).
struct FailsOnce {
    inner: TcpListener,
    failed: AtomicBool,
}

impl Accept for FailsOnce {
    type Stream = TcpStream;
    type PeerAddr = std::net::SocketAddr;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, Self::PeerAddr)>> {
        if !self.failed.swap(true, Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::from_raw_os_error(24))); // EMFILE
        }
        Accept::poll_accept(&self.inner, cx)
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
    let listener = Listener::new(
        &tracker,
        FailsOnce {
            inner,
            failed: AtomicBool::new(false),
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

/// A fresh directory for this test's socket, removed on drop.
#[cfg(unix)]
struct TempDir(std::path::PathBuf);

#[cfg(unix)]
impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "conntrack-tokio-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

#[cfg(unix)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
#[tokio::test]
async fn unix_listener_and_connect_unix_round_trip() {
    let dir = TempDir::new("uds");
    let path = dir.0.join("server.sock");
    let tracker = Tracker::new();
    let server_rec = RecordingHook::new();
    let client_rec = RecordingHook::new();
    let inner = tokio::net::UnixListener::bind(&path).unwrap();
    let listener = Listener::new(
        &tracker,
        inner,
        ListenerConfig::new()
            .category("uds")
            .hook(server_rec.clone()),
    );
    assert_eq!(listener.listen_addr(), &Addr::unix(&path));
    let bound = listener.local_addr().unwrap();
    assert_eq!(bound.as_pathname(), Some(path.as_path()));
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new()
            .category("uds-out")
            .hook(client_rec.clone()),
    );
    let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect_unix(&path));
    let (mut server, _peer) = accepted.unwrap();
    let mut client = dialed.unwrap();

    let s = server.info();
    assert_eq!(s.role, Role::Server);
    assert_eq!(&*s.category, "uds");
    assert_eq!(
        s.local_addr,
        Addr::unix(&path),
        "the server's side is the socket path"
    );
    assert!(
        matches!(s.remote_addr, Addr::Unix(_)),
        "the client's side is unnamed: {:?}",
        s.remote_addr
    );
    let c = client.info();
    assert_eq!(c.role, Role::Client);
    assert_eq!(c.remote_addr, Addr::unix(&path));
    assert!(matches!(c.local_addr, Addr::Unix(_)), "{:?}", c.local_addr);
    assert_eq!(
        c.target.as_deref(),
        Some(path.display().to_string().as_str())
    );
    assert_eq!(
        client_rec.names(),
        ["connect_start", "connect_done", "dial"]
    );
    assert_eq!(server_rec.names(), ["accept"]);
    assert_eq!(tracker.len(), 2);

    client.write_all(b"ping").await.unwrap();
    let mut buf = [0; 4];
    server.read_exact(&mut buf).await.unwrap();
    server.write_all(b"pong!").await.unwrap();
    let mut buf = [0; 5];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong!");
    let (s, c) = (server.info(), client.info());
    assert_eq!((s.read_bytes, s.write_bytes), (4, 5));
    assert_eq!((c.read_bytes, c.write_bytes), (5, 4));

    // Split halves of a Unix stream share its one entry.
    let id = client.id();
    let (r, w) = client.into_split();
    drop(r);
    assert!(
        tracker.get(id).is_some(),
        "the write half still holds the entry"
    );
    drop(w);
    assert!(tracker.get(id).is_none());
    drop(server);
    assert!(tracker.is_empty());
    assert_eq!(client_rec.count("close"), 1);
    assert_eq!(server_rec.count("close"), 1);
}

#[tokio::test]
async fn split_halves_share_one_entry() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().hook(rec.clone()));
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect_addr(addr));
    let (server, _) = accepted.unwrap();
    let mut client = dialed.unwrap();
    let id = server.id();
    let (mut r, mut w) = server.into_split();
    w.write_all(b"hello").await.unwrap();
    let mut buf = [0; 5];
    client.read_exact(&mut buf).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0; 2];
    r.read_exact(&mut buf).await.unwrap();
    let info = tracker.get(id).unwrap();
    assert_eq!((info.read_bytes, info.write_bytes), (2, 5));
    drop(w);
    assert!(tracker.get(id).is_some(), "one half still holds the entry");
    assert_eq!(rec.count("close"), 0);
    drop(r);
    assert!(tracker.get(id).is_none());
    assert_eq!(rec.count("close"), 1);
}

/// `Listener::local_addr` answers as the wrapped listener does (`io::Result<SocketAddr>`), so
/// `listener.local_addr()?` reads as it does on tokio's own listener.
#[tokio::test]
async fn local_addr_is_the_wrapped_listeners() -> std::io::Result<()> {
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let want = inner.local_addr()?;
    let listener = Listener::new(&tracker, inner, ListenerConfig::new());
    let addr: std::net::SocketAddr = listener.local_addr()?;
    assert_eq!(addr, want);
    assert_eq!(listener.listen_addr().port(), Some(want.port()));
    assert_eq!(Addr::from(addr).ip(), Some(want.ip()));
    Ok(())
}
