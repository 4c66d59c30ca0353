//! Listener and stream behaviour of the std adapter on loopback: cloned handles share one
//! entry, `incoming`, a wait-mode limit shared by two accepting threads, a failed accept, and a
//! Unix listener with the dialer's `connect_unix`.
//! (Dial behaviour is the testkit's dialer suite, in `conformance_std.rs`.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use conntrack_core::{Addr, DialerConfig, LimitMode, ListenerConfig, RecordingHook, Role, Tracker};
use conntrack_std::{Accept, Dialer, Listener};
use conntrack_testkit::EVENT_TIMEOUT;

#[test]
fn try_clone_shares_one_entry() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ListenerConfig::new().hook(rec.clone()),
    );
    let d = Dialer::new(&tracker, DialerConfig::new());
    let mut client = d.connect_addr(l.get_ref().local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    let clone = server.try_clone().unwrap();
    assert_eq!(clone.id(), server.id());
    assert_eq!(tracker.len(), 2);

    // Reads through `&Tracked` on one handle, writes on the other, one entry.
    client.write_all(b"abc").unwrap();
    let mut buf = [0; 3];
    (&server).read_exact(&mut buf).unwrap();
    (&clone).write_all(b"de").unwrap();
    client.read_exact(&mut buf[..2]).unwrap();
    let info = tracker.get(server.id()).unwrap();
    assert_eq!((info.read_bytes, info.write_bytes), (3, 2));

    drop(server);
    assert_eq!(tracker.len(), 2, "the clone keeps the entry");
    drop(clone);
    rec.wait_for(|ev| ev.iter().any(|e| e.name() == "close"), EVENT_TIMEOUT)
        .expect("close after the last clone");
    assert_eq!(rec.count("close"), 1);
    assert_eq!(tracker.len(), 1);
}

#[test]
fn incoming_yields_tracked_streams() {
    let tracker = Tracker::new();
    let l = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ListenerConfig::new().category("in"),
    );
    let addr = l.get_ref().local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let accepted: Vec<_> = l.incoming().take(3).collect::<io::Result<_>>().unwrap();
    assert_eq!(tracker.len(), 3);
    assert!(accepted.iter().all(|s| s.info().role == Role::Server));
    drop(accepted);
    drop(clients);
    assert!(tracker.is_empty());
}

/// Ends the accept loops of `wait_limit_shared_by_two_accepting_threads` when dropped (also
/// when the test fails): sets the flag, then connects until every loop has ended (a
/// connection the listener refused does not end one), for at most the event timeout.
struct StopAccepting<'a>(&'a AtomicBool, &'a AtomicUsize, SocketAddr);

impl Drop for StopAccepting<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        while self.1.load(Ordering::SeqCst) > 0 && started.elapsed() < EVENT_TIMEOUT {
            drop(TcpStream::connect(self.2));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One listener, two threads accepting from it, a limit of 1 in wait mode: while the first
/// client is served, the other thread is blocked in its accept. The second client must wait
/// for the slot (not be closed and counted as rejected), and be served once the first closes.
#[test]
fn wait_limit_shared_by_two_accepting_threads() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let config = ListenerConfig::new()
        .category("two")
        .max_connections(1)
        .limit_mode(LimitMode::Wait)
        .hook(rec.clone());
    let listener = Listener::new(&tracker, TcpListener::bind("127.0.0.1:0").unwrap(), config);
    let addr = listener.get_ref().local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let accepting = AtomicUsize::new(2);
    std::thread::scope(|s| {
        let _stop = StopAccepting(&stop, &accepting, addr);
        for _ in 0..2 {
            let (listener, stop, accepting) = (&listener, &stop, &accepting);
            s.spawn(move || loop {
                let Ok((mut conn, _)) = listener.accept() else {
                    continue;
                };
                if stop.load(Ordering::SeqCst) {
                    accepting.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                // Echo, on its own thread.
                s.spawn(move || {
                    let mut b = [0; 16];
                    while let Ok(n @ 1..) = conn.read(&mut b) {
                        if conn.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            });
        }
        // Both threads reach their accept while no slot is taken (the scenario's setup).
        std::thread::sleep(Duration::from_millis(100));
        let mut first = TcpStream::connect(addr).unwrap();
        first.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        first.write_all(b"1").unwrap();
        let mut b = [0; 1];
        first
            .read_exact(&mut b)
            .expect("the first client is served");
        let mut second = TcpStream::connect(addr).unwrap();
        second.write_all(b"2").unwrap();
        second
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match second.read(&mut b) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("the second client must wait for the slot: {other:?}"),
        }
        let rejected = || tracker.stats().get("two", Role::Server).unwrap().rejected;
        assert_eq!(rejected(), 0);
        drop(first);
        second.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        second
            .read_exact(&mut b)
            .expect("served once the first closed");
        assert_eq!(&b, b"2");
        assert_eq!(rejected(), 0);
    });
    rec.wait_for(
        |ev| ev.iter().filter(|e| e.name() == "close").count() >= 4,
        EVENT_TIMEOUT,
    )
    .expect("the two clients and the two stop connections close");
    let stats = tracker.stats();
    let st = stats.get("two", Role::Server).unwrap();
    assert_eq!((st.opened, st.rejected), (4, 0));
}

/// A listener whose accept always fails, to check the error path of [`Listener`].
struct Failing;

impl Accept for Failing {
    type Stream = TcpStream;
    type PeerAddr = SocketAddr;

    fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        Err(io::Error::from_raw_os_error(24)) // EMFILE
    }

    fn listen_addr(&self) -> Addr {
        Addr::Unknown
    }

    fn stream_addrs(&self, _: &Addr, _: &TcpStream, _: &SocketAddr) -> (Addr, Addr) {
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
    let err = l.accept().expect_err("fails");
    assert_eq!(err.raw_os_error(), Some(24));
    assert_eq!(rec.names(), ["accept"]);
    assert_eq!(rec.events()[0].error().unwrap().message, err.to_string());
    assert_eq!(tracker.stats().get("in", Role::Server).unwrap().failed, 1);
}

#[cfg(unix)]
#[test]
fn unix_listener_and_dialer() {
    use std::os::unix::net::UnixListener;

    let dir = std::env::temp_dir().join(format!("conntrack-std-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unix.sock");
    let _ = std::fs::remove_file(&path);
    let tracker = Tracker::new();
    let l = Listener::new(
        &tracker,
        UnixListener::bind(&path).unwrap(),
        ListenerConfig::new().category("uds-in"),
    );
    let d = Dialer::new(&tracker, DialerConfig::new().category("uds-out"));
    let mut client = d.connect_unix(&path).unwrap();
    let (mut server, _) = l.accept().unwrap();
    client.write_all(b"hi").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    server.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi");

    let s = server.info();
    let c = client.info();
    assert_eq!(s.local_addr, Addr::unix(&path));
    assert_eq!(c.remote_addr, Addr::unix(&path));
    assert_eq!(
        c.target.as_deref(),
        Some(path.display().to_string().as_str())
    );
    assert_eq!((s.read_bytes, c.write_bytes), (2, 2));
    assert!(
        s.tcp.is_none() && c.tcp.is_none(),
        "Unix sockets have no TCP statistics"
    );
    let clone = server.try_clone().unwrap();
    assert_eq!(clone.id(), server.id());
    drop((server, client, clone));
    assert!(tracker.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `Listener::local_addr` answers as the wrapped listener does, for TCP and Unix listeners.
#[test]
fn local_addr_is_the_wrapped_listeners() -> io::Result<()> {
    let tracker = Tracker::new();
    let inner = TcpListener::bind("127.0.0.1:0")?;
    let want = inner.local_addr()?;
    let listener = Listener::new(&tracker, inner, ListenerConfig::new());
    let addr: SocketAddr = listener.local_addr()?;
    assert_eq!(addr, want);
    assert_eq!(listener.listen_addr().port(), Some(want.port()));
    #[cfg(unix)]
    {
        let dir = std::env::temp_dir().join(format!("conntrack-std-addr-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = Listener::new(
            &tracker,
            std::os::unix::net::UnixListener::bind(&dir)?,
            ListenerConfig::new(),
        );
        let bound = unix.local_addr()?;
        assert_eq!(bound.as_pathname(), Some(dir.as_path()));
        assert_eq!(Addr::from(&bound).unix_path(), Some(dir.as_path()));
        assert_eq!(unix.listen_addr().unix_path(), Some(dir.as_path()));
        drop(unix);
        let _ = std::fs::remove_file(&dir);
    }
    Ok(())
}

/// Four threads reading and two writing, each on its own clone of one accepted stream (the
/// clones share the socket and the entry): one abort shuts the socket down, which wakes every
/// one of them, each failing with `ConnectionAborted`. (Whether a thread was already blocked
/// when the abort came or reaches its call after it, the outcome is the same: the abort's
/// error; the pause only makes the blocked case the likely one.)
#[test]
fn abort_wakes_every_thread_blocked_on_clones() {
    let tracker = Tracker::new();
    let l = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ListenerConfig::new(),
    );
    let d = Dialer::new(&tracker, DialerConfig::new());
    let client = d.connect_addr(l.get_ref().local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    let id = server.id();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..6 {
        let clone = server.try_clone().unwrap();
        let started = started_tx.clone();
        threads.push(std::thread::spawn(move || {
            started.send(()).unwrap();
            if i < 4 {
                let mut buf = [0; 16];
                (&clone).read(&mut buf).expect_err("the read fails")
            } else {
                let chunk = vec![7u8; 64 * 1024];
                loop {
                    if let Err(e) = (&clone).write(&chunk) {
                        return e;
                    }
                }
            }
        }));
    }
    for _ in 0..6 {
        started_rx
            .recv_timeout(EVENT_TIMEOUT)
            .expect("thread started");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(tracker.abort(id));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let errors: Vec<io::Error> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        done_tx.send(errors).unwrap();
    });
    let errors = done_rx
        .recv_timeout(EVENT_TIMEOUT)
        .expect("every blocked thread is woken by the abort");
    for err in errors {
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    }
    drop((server, client));
}

/// A socket replaced through `get_mut` is no longer the connection's: an abort does not shut it
/// down (its descriptor number could belong to any socket by then), as `get_mut` promises. The
/// accepted stream's registration (the TCP statistics' one, which on Linux also makes it
/// abortable) must not reach the old socket.
#[test]
fn abort_leaves_a_socket_replaced_through_get_mut_alone() {
    let tracker = Tracker::new();
    let l = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ListenerConfig::new(),
    );
    let mut client = TcpStream::connect(l.get_ref().local_addr().unwrap()).unwrap();
    let (mut server, _) = l.accept().unwrap();
    // An untracked pair to put in its place.
    let other_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpStream::connect(other_listener.local_addr().unwrap()).unwrap();
    let _other_peer = other_listener.accept().unwrap();
    let mut old = std::mem::replace(server.get_mut(), other);
    assert!(tracker.abort(server.id()));
    old.write_all(b"still mine")
        .expect("the old socket is not shut down");
    client.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut buf = [0; 10];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still mine");
    let err = server
        .write_all(b"x")
        .expect_err("the tracked stream is aborted");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
}

/// Threads blocked reading and writing on `try_clone`s of a stream whose original was dropped
/// (accepted and dialed): one abort still wakes them all, each failing with
/// `ConnectionAborted`.
#[test]
fn abort_wakes_threads_blocked_on_clones_after_the_original_is_dropped() {
    let tracker = Tracker::new();
    let l = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ListenerConfig::new(),
    );
    let d = Dialer::new(&tracker, DialerConfig::new());
    for dialed in [false, true] {
        let client = d.connect_addr(l.get_ref().local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let (stream, peer) = if dialed {
            (client, server)
        } else {
            (server, client)
        };
        let id = stream.id();
        let reader = stream.try_clone().unwrap();
        let writer = stream.try_clone().unwrap();
        drop(stream);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let started = started_tx.clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            started.send(()).unwrap();
            let mut buf = [0; 16];
            let _ = done.send((&reader).read(&mut buf).expect_err("the read fails"));
        });
        std::thread::spawn(move || {
            started_tx.send(()).unwrap();
            let chunk = vec![7u8; 64 * 1024];
            loop {
                if let Err(e) = (&writer).write(&chunk) {
                    let _ = done_tx.send(e);
                    return;
                }
            }
        });
        for _ in 0..2 {
            started_rx
                .recv_timeout(EVENT_TIMEOUT)
                .expect("thread started");
        }
        // Let both block (the abort fails them all the same if they have not yet).
        std::thread::sleep(Duration::from_millis(100));
        assert!(tracker.abort(id));
        for _ in 0..2 {
            let err = done_rx
                .recv_timeout(EVENT_TIMEOUT)
                .expect("every blocked thread is woken by the abort");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
        }
        drop(peer);
    }
}
