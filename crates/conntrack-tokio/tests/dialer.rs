//! Dialer behaviour on real loopback sockets: DNS and connect hooks, failures, Happy Eyeballs
//! fallback, cancellation, timeouts and trace scopes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use conntrack_core::{trace, Addr, DialerConfig, Recorded, RecordingHook, Role, Tracker};
use conntrack_tokio::Dialer;
use tokio::net::{TcpListener, TcpSocket};

fn setup() -> (Tracker, RecordingHook, DialerConfig) {
    let rec = RecordingHook::new();
    (
        Tracker::new(),
        rec.clone(),
        DialerConfig::new().category("out").hook(rec),
    )
}

/// An address with nothing listening on it: bind, note the address, close.
async fn dead_addr(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    l.local_addr().unwrap()
}

/// The connect attempts seen, in order: `("start" | "done", address, error kind if any)`.
fn attempts(rec: &RecordingHook) -> Vec<(&'static str, Addr, Option<io::ErrorKind>)> {
    rec.events()
        .into_iter()
        .filter_map(|e| match e {
            Recorded::ConnectStart { addr } => Some(("start", addr, None)),
            Recorded::ConnectDone { addr, error, .. } => {
                Some(("done", addr, error.map(|e| e.kind)))
            }
            _ => None,
        })
        .collect()
}

/// A listener whose accept queue is full, so the kernel drops further SYNs and a connect to it
/// hangs: a backlog of 0 admits one queued connection (`filler`), never accepted.
async fn black_hole() -> (TcpListener, tokio::net::TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = tokio::net::TcpStream::connect(addr).await.unwrap();
    (listener, filler)
}

#[tokio::test]
async fn localhost_dial_fires_dns_events() {
    let (tracker, rec, config) = setup();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let dialer = Dialer::new(&tracker, config);
    let stream = dialer
        .connect(&format!("localhost:{port}"))
        .await
        .expect("dial localhost");
    let names = rec.names();
    assert_eq!(&names[..2], ["dns_start", "dns_done"], "{names:?}");
    assert_eq!(names.last(), Some(&"dial"));
    let ev = rec.events();
    let Recorded::DnsDone {
        host, addrs, error, ..
    } = &ev[1]
    else {
        unreachable!()
    };
    assert_eq!(host, "localhost");
    assert!(error.is_none());
    assert!(
        addrs.contains(&SocketAddr::from(([127, 0, 0, 1], port))),
        "{addrs:?}"
    );
    let info = stream.info();
    assert_eq!(
        info.target.as_deref(),
        Some(format!("localhost:{port}").as_str())
    );
    assert!(
        info.timings.dns.is_some() && info.timings.connect.is_some(),
        "{info:?}"
    );
    assert_eq!(info.role, Role::Client);
    drop(stream);
    drop(accept.await.unwrap());
    assert!(tracker.is_empty());
}

#[tokio::test]
async fn events_fire_in_order() {
    let (tracker, rec, config) = setup();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let dialer = Dialer::new(&tracker, config)
        .with_resolver(move |_host: String, _port: u16| async move { Ok(vec![live]) });
    let stream = dialer.connect("service.test:1").await.unwrap();
    assert_eq!(
        rec.names(),
        [
            "dns_start",
            "dns_done",
            "connect_start",
            "connect_done",
            "dial"
        ]
    );
    drop(stream);
    assert_eq!(rec.names().last(), Some(&"close"));
}

#[tokio::test]
async fn unresolvable_name_reports_dns_error_and_tracks_nothing() {
    let (tracker, rec, config) = setup();
    let dialer = Dialer::new(&tracker, config);
    let err = dialer
        .connect("nonexistent.invalid:80")
        .await
        .expect_err("must not resolve");
    assert_eq!(rec.names(), ["dns_start", "dns_done", "dial"]);
    let ev = rec.events();
    assert!(
        ev[1].error().is_some(),
        "dns_done carries the error: {:?}",
        ev[1]
    );
    let dial_err = ev[2].error().expect("dial carries the error");
    assert_eq!(dial_err.kind, err.kind());
    assert!(tracker.is_empty());
    let s = tracker
        .stats()
        .get("out", Role::Client)
        .cloned()
        .expect("stats");
    assert_eq!((s.opened, s.failed), (0, 1));
}

#[tokio::test]
async fn refused_port_reports_connect_error() {
    let (tracker, rec, config) = setup();
    let port = dead_addr("127.0.0.1").await.port();
    let dialer = Dialer::new(&tracker, config);
    let err = dialer
        .connect(&format!("127.0.0.1:{port}"))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
    let ev = rec.events();
    assert_eq!(
        ev[1].error().unwrap().kind,
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(
        ev[2].error().unwrap().kind,
        io::ErrorKind::ConnectionRefused
    );
    assert!(tracker.is_empty());
    assert_eq!(tracker.stats().get("out", Role::Client).unwrap().failed, 1);
}

#[tokio::test]
async fn dead_first_address_falls_back_to_the_live_one() {
    let (tracker, rec, config) = setup();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    // ::1 with nothing listening: refused (or, on a host without IPv6, unreachable; either way
    // a failed first attempt).
    let dead = dead_addr("::1").await;
    let dialer = Dialer::new(&tracker, config)
        .with_resolver(move |_host: String, _port: u16| async move { Ok(vec![dead, live]) });
    let stream = dialer
        .connect(&format!("dual.test:{}", live.port()))
        .await
        .expect("fallback");
    let seen = attempts(&rec);
    assert_eq!(
        seen.iter()
            .map(|(w, a, _)| (*w, a.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("start", Addr::Inet(dead)),
            ("done", Addr::Inet(dead)),
            ("start", Addr::Inet(live)),
            ("done", Addr::Inet(live)),
        ]
    );
    assert!(seen[1].2.is_some(), "the dead address failed: {seen:?}");
    assert_eq!(seen[3].2, None, "the live address connected");
    assert_eq!(stream.info().remote_addr, Addr::Inet(live));
    assert_eq!(tracker.len(), 1);
}

#[tokio::test]
async fn ipv6_literal_connects_without_dns() {
    let (tracker, rec, config) = setup();
    let listener = TcpListener::bind("[::1]:0")
        .await
        .expect("this test needs IPv6 loopback (::1)");
    let addr = listener.local_addr().unwrap();
    let dialer = Dialer::new(&tracker, config);
    let target = format!("[::1]:{}", addr.port());
    let (stream, accepted) = tokio::join!(dialer.connect(&target), listener.accept());
    let (stream, _) = (stream.unwrap(), accepted.unwrap());
    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
    let info = stream.info();
    assert_eq!(info.remote_addr, Addr::Inet(addr));
    assert_eq!(info.target.as_deref(), Some(target.as_str()));
    assert_eq!(info.timings.dns, None, "a literal is not resolved");
    // An unbracketed IPv6 literal is ambiguous, as in Go: rejected, reported and counted.
    let err = dialer
        .connect(&format!("::1:{}", addr.port()))
        .await
        .expect_err("needs brackets");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(tracker.stats().get("out", Role::Client).unwrap().failed, 1);
}

#[tokio::test]
async fn every_attempt_failing_returns_the_last_error() {
    let (tracker, rec, config) = setup();
    let dead6 = dead_addr("::1").await;
    let dead4 = dead_addr("127.0.0.1").await;
    let dialer = Dialer::new(&tracker, config)
        .with_resolver(move |_host: String, _port: u16| async move { Ok(vec![dead6, dead4]) });
    let err = dialer
        .connect("nowhere.test:1")
        .await
        .expect_err("nothing listens");
    let seen = attempts(&rec);
    assert_eq!(
        seen,
        vec![
            ("start", Addr::Inet(dead6), None),
            ("done", Addr::Inet(dead6), seen[1].2),
            ("start", Addr::Inet(dead4), None),
            (
                "done",
                Addr::Inet(dead4),
                Some(io::ErrorKind::ConnectionRefused)
            ),
        ]
    );
    assert!(seen[1].2.is_some());
    // The last attempt's error, unchanged: the OS error itself, not a wrapper.
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(err.raw_os_error().is_some(), "{err:?}");
    let ev = rec.events();
    let dial_err = ev.last().unwrap().error().expect("dial carries the error");
    assert_eq!(dial_err.message, err.to_string());
    assert!(tracker.is_empty());
    let s = tracker.stats().get("out", Role::Client).cloned().unwrap();
    assert_eq!((s.opened, s.failed), (0, 1));
}

#[tokio::test]
async fn hanging_attempt_races_the_next_after_the_fallback_delay() {
    let (tracker, rec, config) = setup();
    let (hole, _filler) = black_hole().await;
    let hole = hole.local_addr().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let dialer = Dialer::new(&tracker, config.fallback_delay(Duration::from_millis(50)))
        .with_resolver(move |_host: String, _port: u16| async move { Ok(vec![hole, live]) });
    // The first attempt never completes: only the fallback delay starts the second.
    let stream = tokio::time::timeout(Duration::from_secs(10), dialer.connect("race.test:1"))
        .await
        .expect("the fallback attempt connects")
        .unwrap();
    assert_eq!(stream.info().remote_addr, Addr::Inet(live));
    assert_eq!(
        attempts(&rec),
        vec![
            ("start", Addr::Inet(hole), None),
            ("start", Addr::Inet(live), None),
            ("done", Addr::Inet(live), None),
            ("done", Addr::Inet(hole), Some(io::ErrorKind::Other)),
        ],
        "the loser is reported as abandoned"
    );
    assert_eq!(rec.names().last(), Some(&"dial"));
    assert_eq!(tracker.len(), 1, "only the winner is tracked");
    let s = tracker.stats().get("out", Role::Client).cloned().unwrap();
    assert_eq!((s.opened, s.failed), (1, 0));
}

#[tokio::test]
async fn dropped_dial_future_tracks_nothing() {
    let (tracker, rec, config) = setup();
    // A resolver that never answers: the dial is cancelled while resolving.
    let dialer = Dialer::new(&tracker, config).with_resolver(|_host: String, _port: u16| {
        std::future::pending::<io::Result<Vec<SocketAddr>>>()
    });
    let dial = dialer.connect("never.test:80");
    let res = tokio::time::timeout(Duration::from_millis(50), dial).await;
    assert!(res.is_err(), "the dial cannot finish");
    assert_eq!(rec.names(), ["dns_start"]);
    assert!(tracker.is_empty());
    assert!(
        tracker.stats().get("out", Role::Client).is_none(),
        "nothing opened, nothing failed"
    );
}

#[tokio::test]
async fn dial_dropped_mid_connect_tracks_nothing() {
    let (tracker, rec, config) = setup();
    let (hole, _filler) = black_hole().await;
    let dialer = Dialer::new(&tracker, config);
    let res = tokio::time::timeout(
        Duration::from_millis(100),
        dialer.connect_addr(hole.local_addr().unwrap()),
    )
    .await;
    assert!(res.is_err(), "the connect cannot finish");
    assert_eq!(
        rec.names(),
        ["connect_start"],
        "a cancelled dial reports no more"
    );
    assert!(tracker.is_empty());
    assert!(
        tracker.stats().get("out", Role::Client).is_none(),
        "nothing opened, nothing failed"
    );
}

#[tokio::test]
async fn connect_timeout_gives_timed_out() {
    let (tracker, rec, config) = setup();
    let (hole, _filler) = black_hole().await;
    let addr = hole.local_addr().unwrap();
    let dialer = Dialer::new(&tracker, config.connect_timeout(Duration::from_millis(300)));
    let err = dialer.connect_addr(addr).await.expect_err("must time out");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert_eq!(rec.names(), ["connect_start", "connect_done", "dial"]);
    let ev = rec.events();
    assert_eq!(ev[1].error().unwrap().kind, io::ErrorKind::TimedOut);
    assert_eq!(ev[2].error().unwrap().kind, io::ErrorKind::TimedOut);
    assert!(tracker.is_empty());
    assert_eq!(tracker.stats().get("out", Role::Client).unwrap().failed, 1);
}

#[tokio::test]
async fn trace_scope_sees_the_dial() {
    let (tracker, config_rec, config) = setup();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = listener.local_addr().unwrap();
    let dialer = Dialer::new(&tracker, config)
        .with_resolver(move |_host: String, _port: u16| async move { Ok(vec![live]) });
    let scoped = RecordingHook::new();
    let stream = trace::scope(scoped.clone(), dialer.connect("scoped.test:1"))
        .await
        .unwrap();
    assert_eq!(
        scoped.names(),
        [
            "dns_start",
            "dns_done",
            "connect_start",
            "connect_done",
            "dial"
        ]
    );
    assert_eq!(scoped.names(), config_rec.names());
    // Outside the scope, a second dial reports to the config's hook only.
    let again = dialer.connect("scoped.test:1").await.unwrap();
    assert_eq!(scoped.count("dial"), 1);
    assert_eq!(config_rec.count("dial"), 2);
    drop((stream, again));
    // The scope has ended: the connection made inside it no longer reports to its hooks.
    assert_eq!(scoped.count("close"), 0);
    assert_eq!(config_rec.count("close"), 2);
}

#[tokio::test]
async fn split_halves_share_one_entry() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let mut listener = conntrack_tokio::Listener::new(
        &tracker,
        inner,
        conntrack_core::ListenerConfig::new().hook(rec.clone()),
    );
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
