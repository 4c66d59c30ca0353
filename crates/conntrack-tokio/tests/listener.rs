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

/// Wraps `fut`, counting every poll in `polls` and the first pending one in `pending`.
async fn counted<F: std::future::Future>(
    fut: F,
    polls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut first = true;
    std::future::poll_fn(|cx| {
        polls.fetch_add(1, Ordering::SeqCst);
        let res = fut.as_mut().poll(cx);
        if res.is_pending() && std::mem::take(&mut first) {
            pending.fetch_add(1, Ordering::SeqCst);
        }
        res
    })
    .await
}

/// A task blocked reading and one blocked writing (the split halves of one accepted stream,
/// for tokio's streams are not `Clone`), on each of two connections dialed and accepted on a
/// TCP and a Unix socket: while the peer is silent they make no polls beyond their first (an
/// abort shuts the socket down, so nothing is parked with the connection), and one abort per
/// connection wakes both, each failing with `ConnectionAborted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_wakes_every_blocked_task_and_blocked_tasks_stay_quiet() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    async fn check<R, W>(tracker: &Tracker, id: conntrack_core::ConnectionId, mut r: R, mut w: W)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let polls = Arc::new(AtomicUsize::new(0));
        let pending = Arc::new(AtomicUsize::new(0));
        let read = tokio::spawn(counted(
            async move {
                let mut buf = [0; 16];
                r.read(&mut buf).await
            },
            Arc::clone(&polls),
            Arc::clone(&pending),
        ));
        let write = tokio::spawn(counted(
            async move {
                let chunk = vec![7u8; 64 * 1024];
                loop {
                    if let Err(e) = w.write(&chunk).await {
                        return e;
                    }
                }
            },
            Arc::clone(&polls),
            Arc::clone(&pending),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pending.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "both tasks block");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let before = polls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = polls.load(Ordering::SeqCst) - before;
        assert_eq!(during, 0, "blocked tasks polled {during} times while idle");
        assert!(tracker.abort(id));
        let timeout = Duration::from_secs(10);
        let err = tokio::time::timeout(timeout, read)
            .await
            .expect("the read is woken")
            .unwrap()
            .expect_err("the read fails");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
        let err = tokio::time::timeout(timeout, write)
            .await
            .expect("the write is woken")
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    }

    let tracker = Tracker::new();
    let listener = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ListenerConfig::new(),
    );
    let addr = listener.get_ref().local_addr().unwrap();
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let client = dialer.connect_addr(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let id = server.id();
    let (r, w) = server.into_split();
    check(&tracker, id, r, w).await;
    // The dialed side too.
    let (server, _) = {
        let c = dialer.connect_addr(addr).await.unwrap();
        let s = listener.accept().await.unwrap();
        let id = c.id();
        let (r, w) = c.into_split();
        check(&tracker, id, r, w).await;
        s
    };
    drop((client, server));

    #[cfg(unix)]
    {
        let dir = std::env::temp_dir().join(format!("conntrack-abort-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abort.sock");
        let _ = std::fs::remove_file(&path);
        let listener = Listener::new(
            &tracker,
            tokio::net::UnixListener::bind(&path).unwrap(),
            ListenerConfig::new(),
        );
        let client = dialer.connect_unix(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let id = server.id();
        let (r, w) = server.into_split();
        check(&tracker, id, r, w).await;
        drop(client);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// One half of a split stream blocked (a write on a full socket buffer, or a read of a silent
/// peer) after the other half was dropped: an abort still wakes it, failing it with
/// `ConnectionAborted` (the halves share the socket's registration, which ends only with the
/// last of them), on TCP and Unix, accepted and dialed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_wakes_a_half_whose_other_half_was_dropped() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    async fn wait_pending(pending: &AtomicUsize) {
        let deadline = std::time::Instant::now() + WAIT;
        while pending.load(Ordering::SeqCst) < 1 {
            assert!(std::time::Instant::now() < deadline, "the task blocks");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn write_blocked<R, W>(
        tracker: &Tracker,
        id: conntrack_core::ConnectionId,
        r: R,
        mut w: W,
    ) where
        R: Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let pending = Arc::new(AtomicUsize::new(0));
        let write = tokio::spawn(counted(
            async move {
                let chunk = vec![7u8; 64 * 1024];
                loop {
                    if let Err(e) = w.write(&chunk).await {
                        return e;
                    }
                }
            },
            Arc::new(AtomicUsize::new(0)),
            Arc::clone(&pending),
        ));
        wait_pending(&pending).await;
        drop(r);
        assert!(tracker.abort(id));
        let err = tokio::time::timeout(WAIT, write)
            .await
            .expect("the blocked write is woken by the abort")
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    }

    async fn read_blocked<R, W>(tracker: &Tracker, id: conntrack_core::ConnectionId, mut r: R, w: W)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: Send + 'static,
    {
        let pending = Arc::new(AtomicUsize::new(0));
        let read = tokio::spawn(counted(
            async move {
                let mut buf = [0; 16];
                r.read(&mut buf).await
            },
            Arc::new(AtomicUsize::new(0)),
            Arc::clone(&pending),
        ));
        wait_pending(&pending).await;
        drop(w);
        assert!(tracker.abort(id));
        let err = tokio::time::timeout(WAIT, read)
            .await
            .expect("the blocked read is woken by the abort")
            .unwrap()
            .expect_err("the read fails");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    }

    let tracker = Tracker::new();
    let listener = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ListenerConfig::new(),
    );
    let addr = listener.get_ref().local_addr().unwrap();
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    for read_side in [false, true] {
        // Accepted.
        let client = dialer.connect_addr(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let id = server.id();
        let (r, w) = server.into_split();
        if read_side {
            read_blocked(&tracker, id, r, w).await;
        } else {
            write_blocked(&tracker, id, r, w).await;
        }
        // Dialed.
        let c = dialer.connect_addr(addr).await.unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let id = c.id();
        let (r, w) = c.into_split();
        if read_side {
            read_blocked(&tracker, id, r, w).await;
        } else {
            write_blocked(&tracker, id, r, w).await;
        }
        drop((client, s));
    }

    #[cfg(unix)]
    {
        let dir = std::env::temp_dir().join(format!("conntrack-half-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("half.sock");
        let _ = std::fs::remove_file(&path);
        let listener = Listener::new(
            &tracker,
            tokio::net::UnixListener::bind(&path).unwrap(),
            ListenerConfig::new(),
        );
        for read_side in [false, true] {
            let client = dialer.connect_unix(&path).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let id = server.id();
            let (r, w) = server.into_split();
            if read_side {
                read_blocked(&tracker, id, r, w).await;
            } else {
                write_blocked(&tracker, id, r, w).await;
            }
            drop(client);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A stream replaced through `get_mut` is no longer the connection's: an abort does not shut
/// the old socket down (its descriptor number could belong to any socket by then).
#[tokio::test]
async fn abort_leaves_a_socket_replaced_through_get_mut_alone() {
    let tracker = Tracker::new();
    let listener = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ListenerConfig::new(),
    );
    let addr = listener.get_ref().local_addr().unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    // An untracked pair to put in its place.
    let other_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = TcpStream::connect(other_listener.local_addr().unwrap())
        .await
        .unwrap();
    let _other_peer = other_listener.accept().await.unwrap();
    let mut old = std::mem::replace(server.get_mut(), other);
    assert!(tracker.abort(server.id()));
    old.write_all(b"still mine")
        .await
        .expect("the old socket is not shut down");
    let mut buf = [0; 10];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still mine");
    let err = server
        .write_all(b"x")
        .await
        .expect_err("the tracked stream is aborted");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
}
