//! Dialer, listener and stream behaviour on smol and on async-std, on loopback: every scenario
//! runs once per runtime.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use conntrack_async_std::{Accept, Listener};
use conntrack_core::{Addr, DialerConfig, ListenerConfig, Recorded, RecordingHook, Role, Tracker};
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

/// A closed loopback port: bound, read back, and released.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A listener with a backlog of 0 and one connection waiting in it: the kernel drops further
/// SYNs, so a connect to it stays pending (until SYN retries give up, minutes later).
fn full_listener() -> (socket2::Socket, StdTcpStream, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let filler = StdTcpStream::connect(addr).unwrap();
    (s, filler, addr)
}

#[cfg(unix)]
async fn smol_unix_bind(path: &std::path::Path) -> io::Result<smol::net::unix::UnixListener> {
    smol::net::unix::UnixListener::bind(path)
}

macro_rules! runtime_tests {
    ($m:ident, $block_on:path, $rt:ident, $tcp_listener:ty, $unix_bind:path) => {
        mod $m {
            use super::*;
            use conntrack_async_std::$rt::Dialer;

            fn recording_dialer(tracker: &Tracker) -> (Dialer, RecordingHook) {
                let rec = RecordingHook::new();
                let d = Dialer::new(
                    tracker,
                    DialerConfig::new().category("out").hook(rec.clone()),
                );
                (d, rec)
            }

            #[test]
            fn localhost_dial_reports_dns() {
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let l = <$tcp_listener>::bind("127.0.0.1:0").await.unwrap();
                    let port = l.local_addr().unwrap().port();
                    let (d, rec) = recording_dialer(&tracker);
                    let target = format!("localhost:{port}");
                    let client = d.connect(&target).await.expect("dial localhost");

                    let ev = rec.events();
                    let names: Vec<_> = ev.iter().map(Recorded::name).collect();
                    assert_eq!(names[..2], ["dns_start", "dns_done"], "{names:?}");
                    let Recorded::DnsStart { host } = &ev[0] else {
                        unreachable!()
                    };
                    assert_eq!(host, "localhost");
                    let Recorded::DnsDone { addrs, error, .. } = &ev[1] else {
                        unreachable!()
                    };
                    assert!(error.is_none());
                    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                    assert!(addrs.contains(&v4), "{addrs:?}");
                    assert_eq!(names.last(), Some(&"dial"));
                    assert_eq!(rec.count("connect_start"), rec.count("connect_done"));

                    let info = client.info();
                    assert_eq!(info.role, Role::Client);
                    assert_eq!(info.target.as_deref(), Some(target.as_str()));
                    assert!(info.timings.dns.is_some() && info.timings.connect.is_some());
                    assert_eq!(client.peer_addr().unwrap().port(), port);
                    drop(client);
                    assert!(tracker.is_empty());
                }));
            }

            #[test]
            fn unresolvable_name_reports_dns_error() {
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let (d, rec) = recording_dialer(&tracker);
                    let err = d
                        .connect("nonexistent.invalid:80")
                        .await
                        .expect_err("no such name");

                    assert_eq!(rec.names(), ["dns_start", "dns_done", "dial"]);
                    let ev = rec.events();
                    let Recorded::DnsDone {
                        host, addrs, error, ..
                    } = &ev[1]
                    else {
                        unreachable!()
                    };
                    assert_eq!(host, "nonexistent.invalid");
                    assert!(addrs.is_empty());
                    assert_eq!(error.as_ref().expect("dns error").message, err.to_string());
                    let Recorded::Dial {
                        target,
                        connection,
                        error,
                        ..
                    } = &ev[2]
                    else {
                        unreachable!()
                    };
                    assert_eq!(target, "nonexistent.invalid:80");
                    assert!(connection.is_none());
                    assert_eq!(error.as_ref().expect("dial error").kind, err.kind());

                    let stats = tracker.stats();
                    let s = stats.get("out", Role::Client).expect("client stats");
                    assert_eq!((s.failed, s.opened), (1, 0));
                    assert!(tracker.is_empty());
                }));
            }

            #[test]
            fn refused_port_reports_connect_error() {
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let (d, rec) = recording_dialer(&tracker);
                    let addr = closed_port();
                    let err = d
                        .connect(&addr.to_string())
                        .await
                        .expect_err("port is closed");
                    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

                    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
                    let ev = rec.events();
                    let Recorded::ConnectDone { addr: a, error, .. } = &ev[1] else {
                        unreachable!()
                    };
                    assert_eq!(*a, Addr::Inet(addr));
                    assert_eq!(
                        error.as_ref().unwrap().kind,
                        io::ErrorKind::ConnectionRefused
                    );
                    assert_eq!(
                        ev[2].error().unwrap().kind,
                        io::ErrorKind::ConnectionRefused
                    );
                    assert_eq!(tracker.stats().get("out", Role::Client).unwrap().failed, 1);
                    assert!(tracker.is_empty());
                }));
            }

            #[test]
            fn connect_timeout_reported() {
                let (_listener, _filler, addr) = full_listener();
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let rec = RecordingHook::new();
                    let d = Dialer::new(
                        &tracker,
                        DialerConfig::new()
                            .category("out")
                            .connect_timeout(std::time::Duration::from_millis(200))
                            .hook(rec.clone()),
                    );
                    let err = d.connect_addr(addr).await.expect_err("backlog is full");
                    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
                    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
                    assert_eq!(
                        rec.events()[1].error().unwrap().kind,
                        io::ErrorKind::TimedOut
                    );
                    assert_eq!(tracker.stats().get("out", Role::Client).unwrap().failed, 1);
                    assert!(tracker.is_empty());
                }));
            }

            /// The dial future is dropped while its connect attempt is in flight (the
            /// listener's backlog is full, so the SYN goes unanswered): nothing is tracked,
            /// counted or reported beyond the attempt's start.
            #[test]
            fn dial_dropped_mid_connect_tracks_nothing() {
                let (_listener, _filler, addr) = full_listener();
                $block_on(bounded(async {
                    let tracker = Tracker::new();
                    let (d, rec) = recording_dialer(&tracker);
                    // `or` polls the dial first; once it is pending with its attempt started,
                    // the second future completes and the dial future is dropped.
                    let dialed = async { Some(d.connect_addr(addr).await) }
                        .or(async {
                            rec.until(|ev| ev.iter().any(|e| e.name() == "connect_start"))
                                .await;
                            None
                        })
                        .await;
                    assert!(dialed.is_none(), "the dial finished: {dialed:?}");
                    assert_eq!(rec.names(), ["connect_start"]);
                    assert!(tracker.is_empty());
                    let failed = tracker
                        .stats()
                        .get("out", Role::Client)
                        .map_or(0, |s| s.failed);
                    assert_eq!(failed, 0, "a cancelled dial is not a failed one");
                }));
            }

            /// The dial future is polled once with a no-op waker and dropped. The target is
            /// `localhost` on a listener with a full backlog, so the first poll stops either
            /// in name resolution (on the runtime's blocking pool) or in the connect attempt,
            /// and is `Pending` either way; wherever it stopped, nothing is tracked or failed.
            #[test]
            fn dial_polled_once_then_dropped_tracks_nothing() {
                let (_listener, _filler, addr) = full_listener();
                let tracker = Tracker::new();
                let (d, rec) = recording_dialer(&tracker);
                let target = format!("localhost:{}", addr.port());
                let mut fut = Box::pin(d.connect(&target));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(fut.as_mut().poll(&mut cx).is_pending());
                drop(fut);
                let names = rec.names();
                assert!(
                    ["dns_start", "dns_done", "connect_start"].starts_with(&names[..])
                        && !names.is_empty(),
                    "{names:?}"
                );
                assert!(tracker.is_empty());
                let failed = tracker
                    .stats()
                    .get("out", Role::Client)
                    .map_or(0, |s| s.failed);
                assert_eq!(failed, 0, "a cancelled dial is not a failed one");
            }

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
    smol,
    smol::net::TcpListener,
    smol_unix_bind
);
runtime_tests!(
    on_async_std,
    async_std::task::block_on,
    async_std,
    async_std::net::TcpListener,
    async_std::os::unix::net::UnixListener::bind
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
