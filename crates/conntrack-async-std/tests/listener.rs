//! Listener and stream behaviour on smol and on async-std, on loopback (every scenario runs
//! once per runtime): clones share one entry, an abort wakes every clone blocked in a read, a
//! Unix listener with the dialer's `connect_unix`, a failed accept, vectored reads. (Dial behaviour is the testkit's dialer suite, in the
//! `conformance_*.rs` files.)

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use conntrack_async_std::{Accept, Listener};
use conntrack_core::{Addr, DialerConfig, ListenerConfig, RecordingHook, Role, Tracker};
use conntrack_testkit::EVENT_TIMEOUT;
use futures_lite::future::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

/// Fails the test if `f` has not finished within the event timeout.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    f.or(async {
        smol::Timer::after(EVENT_TIMEOUT).await;
        panic!("timed out")
    })
    .await
}

#[cfg(unix)]
async fn smol_unix_bind(path: &std::path::Path) -> io::Result<smol::net::unix::UnixListener> {
    smol::net::unix::UnixListener::bind(path)
}

/// Counts the tasks whose read or write went pending, and lets the test wait for a count
/// (each count is a message: no wake-up is lost, no polling).
#[derive(Clone)]
struct Pending {
    n: Arc<AtomicUsize>,
    tx: smol::channel::Sender<()>,
    rx: smol::channel::Receiver<()>,
}

impl Pending {
    fn new() -> Self {
        let (tx, rx) = smol::channel::unbounded();
        Pending {
            n: Arc::new(AtomicUsize::new(0)),
            tx,
            rx,
        }
    }

    fn mark(&self) {
        self.n.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.try_send(());
    }

    /// Waits until `k` tasks have gone pending (bounded by the test's `bounded`).
    async fn at_least(&self, k: usize) {
        while self.n.load(Ordering::SeqCst) < k {
            self.rx.recv().await.expect("the sender is held here");
        }
    }
}

/// Reads from `stream` once, counting in `pending` the first time the read is pending (its
/// task's waker is then parked with the connection).
async fn read_once<S>(mut stream: S, pending: Pending) -> io::Result<usize>
where
    S: futures_lite::io::AsyncRead + Unpin,
{
    let mut buf = [0; 16];
    let mut read = stream.read(&mut buf);
    let mut counted = false;
    std::future::poll_fn(|cx| {
        let res = Pin::new(&mut read).poll(cx);
        if res.is_pending() && !counted {
            counted = true;
            pending.mark();
        }
        res
    })
    .await
}

/// Counts every poll of `fut` in `polls`, and in `pending` the first pending one.
async fn counted<F: Future>(fut: F, polls: Arc<AtomicUsize>, pending: Pending) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut counted = false;
    std::future::poll_fn(|cx| {
        polls.fetch_add(1, Ordering::SeqCst);
        let res = fut.as_mut().poll(cx);
        if res.is_pending() && !counted {
            counted = true;
            pending.mark();
        }
        res
    })
    .await
}

/// Writes to `stream` until a write fails (the peer reads nothing: the socket buffers fill
/// and the write blocks until an abort).
async fn write_until_error<S>(mut stream: S) -> io::Error
where
    S: futures_lite::io::AsyncWrite + Unpin,
{
    let chunk = vec![7u8; 64 * 1024];
    loop {
        if let Err(e) = stream.write(&chunk).await {
            return e;
        }
    }
}

macro_rules! runtime_tests {
    ($m:ident, $block_on:path, $spawn:path, $rt:ident, $tcp_listener:ty, $unix_bind:path, $quiet:expr) => {
        mod $m {
            use super::*;
            use conntrack_async_std::$rt::Dialer;

            #[test]
            fn clone_shares_one_entry() {
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let rec = RecordingHook::new();
                    let l = Listener::new(
                        &tracker,
                        <$tcp_listener>::bind("127.0.0.1:0").await.unwrap(),
                        ListenerConfig::new().hook(rec.clone()),
                    );
                    let addr = l.get_ref().local_addr().unwrap();
                    let mut client = Dialer::new(&tracker, DialerConfig::new())
                        .connect_addr(addr)
                        .await
                        .unwrap();
                    let (mut server, _) = l.accept().await.unwrap();
                    let mut clone = server.clone();
                    assert_eq!(clone.id(), server.id());

                    client.write_all(b"abc").await.unwrap();
                    let mut buf = [0; 3];
                    server.read_exact(&mut buf).await.unwrap();
                    clone.write_all(b"de").await.unwrap();
                    client.read_exact(&mut buf[..2]).await.unwrap();
                    let info = tracker.get(server.id()).unwrap();
                    assert_eq!((info.read_bytes, info.write_bytes), (3, 2));

                    drop(server);
                    assert_eq!(tracker.len(), 2, "the clone keeps the entry");
                    assert_eq!(rec.count("close"), 0);
                    drop(clone);
                    rec.until(|ev| ev.iter().any(|e| e.name() == "close")).await;
                    assert_eq!(rec.count("close"), 1);
                    assert_eq!(tracker.len(), 1);
                }));
            }

            /// Two tasks blocked reading two clones of one stream (they share the entry): an
            /// abort wakes both, and both reads fail with `ConnectionAborted`.
            #[test]
            fn abort_wakes_every_clone_blocked_in_read() {
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let l = Listener::new(
                        &tracker,
                        <$tcp_listener>::bind("127.0.0.1:0").await.unwrap(),
                        ListenerConfig::new(),
                    );
                    let addr = l.get_ref().local_addr().unwrap();
                    let client = Dialer::new(&tracker, DialerConfig::new())
                        .connect_addr(addr)
                        .await
                        .unwrap();
                    let (server, _) = l.accept().await.unwrap();
                    let pending = Pending::new();
                    let reads = [server.clone(), server.clone()]
                        .map(|clone| $spawn(read_once(clone, pending.clone())));
                    // Both reads pending, each task's waker parked (bounded by `bounded`).
                    pending.at_least(2).await;
                    assert!(tracker.abort(server.id()));
                    for read in reads {
                        let err = read.await.expect_err("the blocked read fails");
                        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
                    }
                    drop((server, client));
                }));
            }

            /// Nine tasks blocked reading nine clones of one stream, and three blocked writing
            /// three more: one abort wakes all twelve, every one failing with
            /// `ConnectionAborted`. While the peer is silent, the blocked readers make no polls
            /// beyond their first (an abort shuts the socket down, so no task parks a waker
            /// with the connection: nothing pushes another task's waker out).
            #[test]
            fn abort_wakes_every_task_and_blocked_clones_stay_quiet() {
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let l = Listener::new(
                        &tracker,
                        <$tcp_listener>::bind("127.0.0.1:0").await.unwrap(),
                        ListenerConfig::new(),
                    );
                    let addr = l.get_ref().local_addr().unwrap();
                    let client = Dialer::new(&tracker, DialerConfig::new())
                        .connect_addr(addr)
                        .await
                        .unwrap();
                    let (server, _) = l.accept().await.unwrap();
                    let polls = Arc::new(AtomicUsize::new(0));
                    let pending = Pending::new();
                    let reads: Vec<_> = (0..9)
                        .map(|_| {
                            $spawn(counted(
                                read_once(server.clone(), Pending::new()),
                                Arc::clone(&polls),
                                pending.clone(),
                            ))
                        })
                        .collect();
                    pending.at_least(9).await;
                    // The peer stays silent for 300 ms: the nine readers stay parked.
                    let before = polls.load(Ordering::SeqCst);
                    smol::Timer::after(std::time::Duration::from_millis(300)).await;
                    let during = polls.load(Ordering::SeqCst) - before;
                    if $quiet {
                        assert_eq!(
                            during, 0,
                            "blocked readers polled {during} times while idle"
                        );
                    }

                    let write_pending = Pending::new();
                    let writes: Vec<_> = (0..3)
                        .map(|_| {
                            $spawn(counted(
                                write_until_error(server.clone()),
                                Arc::new(AtomicUsize::new(0)),
                                write_pending.clone(),
                            ))
                        })
                        .collect();
                    write_pending.at_least(3).await;
                    assert!(tracker.abort(server.id()));
                    for read in reads {
                        let err = read.await.expect_err("the blocked read fails");
                        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
                    }
                    for write in writes {
                        let err = write.await;
                        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
                    }
                    drop((server, client));
                }));
            }

            /// A clone blocked in a read, and one blocked in a write, after the stream they
            /// were cloned from was dropped: an abort still wakes both, failing them with
            /// `ConnectionAborted` (the clones share the socket's registration, which ends
            /// only with the last of them).
            #[test]
            fn abort_wakes_clones_after_the_original_is_dropped() {
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let l = Listener::new(
                        &tracker,
                        <$tcp_listener>::bind("127.0.0.1:0").await.unwrap(),
                        ListenerConfig::new(),
                    );
                    let addr = l.get_ref().local_addr().unwrap();
                    let dialer = Dialer::new(&tracker, DialerConfig::new());
                    // Accepted, then dialed.
                    for dialed in [false, true] {
                        let client = dialer.connect_addr(addr).await.unwrap();
                        let (server, _) = l.accept().await.unwrap();
                        let (stream, peer) = if dialed {
                            (client, server)
                        } else {
                            (server, client)
                        };
                        let id = stream.id();
                        let read_pending = Pending::new();
                        let read = $spawn(read_once(stream.clone(), read_pending.clone()));
                        let write_pending = Pending::new();
                        let write = $spawn(counted(
                            write_until_error(stream.clone()),
                            Arc::new(AtomicUsize::new(0)),
                            write_pending.clone(),
                        ));
                        read_pending.at_least(1).await;
                        write_pending.at_least(1).await;
                        drop(stream);
                        assert!(tracker.abort(id));
                        let err = read.await.expect_err("the blocked read fails");
                        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
                        let err = write.await;
                        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
                        drop(peer);
                    }
                }));
            }

            #[cfg(unix)]
            #[test]
            fn unix_listener_and_dialer() {
                let dir = std::env::temp_dir().join(format!(
                    "conntrack-{}-{}",
                    stringify!($m),
                    std::process::id()
                ));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("unix.sock");
                let _ = std::fs::remove_file(&path);
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let l = Listener::new(
                        &tracker,
                        $unix_bind(&path).await.unwrap(),
                        ListenerConfig::new().category("uds-in"),
                    );
                    let d = Dialer::new(&tracker, DialerConfig::new().category("uds-out"));
                    let mut client = d.connect_unix(&path).await.unwrap();
                    let (mut server, _) = l.accept().await.unwrap();
                    client.write_all(b"hi").await.unwrap();
                    client.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut got = String::new();
                    server.read_to_string(&mut got).await.unwrap();
                    assert_eq!(got, "hi");

                    let (s, c) = (server.info(), client.info());
                    assert_eq!(s.local_addr, Addr::unix(&path));
                    assert_eq!(c.remote_addr, Addr::unix(&path));
                    assert_eq!((s.read_bytes, c.write_bytes), (2, 2));
                    assert!(
                        s.tcp.is_none() && c.tcp.is_none(),
                        "Unix sockets have no TCP statistics"
                    );
                    let clone = server.clone();
                    drop((server, client, clone));
                    assert!(tracker.is_empty());
                }));
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    };
}

runtime_tests!(
    on_smol,
    smol::block_on,
    smol::spawn,
    smol,
    smol::net::TcpListener,
    smol_unix_bind,
    true
);
runtime_tests!(
    on_async_std,
    async_std::task::block_on,
    async_std::task::spawn,
    async_std,
    async_std::net::TcpListener,
    async_std::os::unix::net::UnixListener::bind,
    // async-std's clones share one `async_io::Async` and poll it through its single waker
    // slot per direction, which wakes the waker it replaces: several tasks blocked on clones
    // of one async-std stream wake each other with or without tracking (measured on raw
    // async-std clones: ~100,000 polls in 300 ms for nine readers) (smol's clones each
    // keep their own readiness future and stay quiet). Only the abort half is checked here.
    false
);

/// A listener whose accept always fails, to check the error path of [`Listener`].
struct Failing;

impl Accept for Failing {
    type Stream = smol::net::TcpStream;
    type PeerAddr = SocketAddr;

    async fn accept(&self) -> io::Result<(smol::net::TcpStream, SocketAddr)> {
        Err(io::Error::from_raw_os_error(24)) // EMFILE
    }

    fn listen_addr(&self) -> Addr {
        Addr::Unknown
    }

    fn stream_addrs(&self, _: &Addr, _: &smol::net::TcpStream, _: &SocketAddr) -> (Addr, Addr) {
        (Addr::Unknown, Addr::Unknown)
    }
}

#[test]
fn accept_error_reported_and_returned_unchanged() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = Listener::new(
        &tracker,
        Failing,
        ListenerConfig::new().category("in").hook(rec.clone()),
    );
    let err = smol::block_on(l.accept()).expect_err("fails");
    assert_eq!(err.raw_os_error(), Some(24));
    assert_eq!(rec.names(), ["accept"]);
    assert_eq!(rec.events()[0].error().unwrap().message, err.to_string());
    assert_eq!(tracker.stats().get("in", Role::Server).unwrap().failed, 1);
}

/// `Tracked` forwards vectored reads to the inner stream (the futures-io default would fill
/// only the first buffer) and counts what they returned.
#[test]
fn vectored_read_forwarded() {
    struct Twice;
    impl futures_lite::io::AsyncRead for Twice {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            unreachable!("vectored reads must not fall back to poll_read")
        }

        fn poll_read_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &mut [io::IoSliceMut<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for b in bufs.iter_mut() {
                b.fill(1);
                n += b.len();
            }
            Poll::Ready(Ok(n))
        }
    }
    let tracker = Tracker::new();
    let conn = tracker.register(conntrack_core::Registration::new(Role::Client));
    let mut t = conntrack_async_std::Tracked::new(Twice, conn);
    let (mut a, mut b) = ([0u8; 3], [0u8; 4]);
    let n = smol::block_on(
        t.read_vectored(&mut [io::IoSliceMut::new(&mut a), io::IoSliceMut::new(&mut b)]),
    )
    .unwrap();
    assert_eq!(n, 7);
    assert_eq!(t.info().read_bytes, 7);
}
