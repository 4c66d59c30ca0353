//! The life of a tracked connection: registration, recording, snapshots, close (exactly once),
//! ids, clocks, totals, history, drain futures, hook order and panicking hooks.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use conntrack_core::{
    trace, Addr, Callbacks, CloseEvent, DialerConfig, Hook, ListenerConfig, ReadEvent, Recorded,
    RecordingHook, Registration, Role, TlsInfo, Tracker,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn server(cat: &str) -> Registration {
    Registration::server(addr(80), addr(50_000)).category(cat)
}

fn closes(rec: &RecordingHook) -> usize {
    rec.count("close")
}

/// A waker that records whether it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>, flag: &Arc<Flag>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::clone(flag));
    fut.poll(&mut Context::from_waker(&waker))
}

/// Drives a future to completion on this thread (parking between polls).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

#[test]
fn register_record_close_update_the_snapshot() {
    let tracker = Tracker::new();
    assert!(tracker.is_empty());
    let conn = tracker.register(server("api").target("client.example:1"));
    assert_eq!(tracker.len(), 1);
    conn.record_read(10);
    conn.record_write(3);
    conn.record_read(5);
    let infos = tracker.connections();
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(info.id, conn.id());
    assert_eq!((&*info.category, info.role), ("api", Role::Server));
    assert_eq!(
        (info.local_addr.clone(), info.remote_addr.clone()),
        (Addr::Inet(addr(80)), Addr::Inet(addr(50_000)))
    );
    assert_eq!((info.read_bytes, info.write_bytes), (15, 3));
    assert_eq!(info.target.as_deref(), Some("client.example:1"));
    assert_eq!(tracker.get(conn.id()).unwrap().read_bytes, 15);
    assert_eq!(conn.info().write_bytes, 3);
    conn.close();
    assert!(conn.is_closed());
    assert!(tracker.is_empty());
    assert!(tracker.get(conn.id()).is_none());
    // The handle still answers with the final values.
    assert_eq!(conn.info().read_bytes, 15);
}

#[test]
fn close_fires_once_closed_twice() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let conn = tracker.register(server("x"));
    conn.close();
    conn.close();
    assert_eq!(closes(&rec), 1);
    drop(conn);
    assert_eq!(closes(&rec), 1, "close then drop");
    assert!(tracker.is_empty());
}

#[test]
fn close_fires_once_only_dropped() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    drop(tracker.register(server("x")));
    assert_eq!(closes(&rec), 1);
    assert!(tracker.is_empty());
}

#[test]
fn clones_share_one_entry_in_any_drop_order() {
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let rec = RecordingHook::new();
        let tracker = Tracker::builder().hook(rec.clone()).build();
        let a = tracker.register(server("x"));
        let b = a.clone();
        let c = b.clone();
        a.record_read(1);
        b.record_read(2);
        c.record_write(4);
        let mut handles: Vec<Option<_>> = vec![Some(a), Some(b), Some(c)];
        for (k, i) in order.iter().enumerate() {
            assert_eq!(tracker.len(), 1, "order {order:?}, before drop {k}");
            handles[*i] = None;
        }
        assert!(tracker.is_empty(), "order {order:?}");
        let ev = rec.events();
        let closes: Vec<_> = ev.iter().filter(|e| e.name() == "close").collect();
        assert_eq!(closes.len(), 1, "order {order:?}");
        let Recorded::Close { connection, .. } = closes[0] else {
            unreachable!()
        };
        assert_eq!((connection.read_bytes, connection.write_bytes), (3, 4));
    }
}

#[test]
fn explicit_close_on_one_clone_closes_the_entry_once() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let a = tracker.register(server("x"));
    let b = a.clone();
    b.close();
    assert!(a.is_closed());
    assert!(tracker.is_empty());
    drop(a);
    drop(b);
    assert_eq!(closes(&rec), 1);
}

#[test]
fn ids_are_unique_and_increasing_across_trackers() {
    let t1 = Tracker::new();
    let t2 = Tracker::new();
    let mut last = None;
    let mut keep = Vec::new();
    for i in 0..100 {
        let t = if i % 2 == 0 { &t1 } else { &t2 };
        let c = t.register(server("x"));
        if let Some(prev) = last {
            assert!(c.id() > prev, "{:?} after {prev:?}", c.id());
        }
        last = Some(c.id());
        keep.push(c);
    }
    let ids: Vec<_> = t1.connections().iter().map(|c| c.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "connections() is oldest first");
    // Ids are never reused, even after connections close.
    let max = last.unwrap();
    keep.clear();
    assert!(t1.register(server("x")).id() > max);
}

#[test]
fn established_for_is_monotonic_and_established_at_is_wall_clock() {
    let tracker = Tracker::new();
    let before = SystemTime::now();
    let conn = tracker.register(server("x"));
    let first = conn.info();
    // The passage of time is the scenario here.
    std::thread::sleep(Duration::from_millis(30));
    let second = conn.info();
    // established_for is measured from a std::time::Instant (the monotonic clock), so a wall
    // clock step (NTP, a manual change) cannot make it jump or go negative.
    assert!(second.established_for >= first.established_for + Duration::from_millis(25));
    assert_eq!(first.established_at, second.established_at);
    let skew = first
        .established_at
        .duration_since(before)
        .unwrap_or_default();
    assert!(
        skew < Duration::from_secs(5),
        "established_at is near now: {skew:?}"
    );
}

#[test]
fn idle_for_resets_on_io() {
    let tracker = Tracker::new();
    let conn = tracker.register(server("x"));
    // The passage of time is the scenario here.
    std::thread::sleep(Duration::from_millis(60));
    let idle = conn.info().idle_for;
    assert!(idle >= Duration::from_millis(45), "{idle:?}");
    conn.record_read(1);
    let after_read = conn.info().idle_for;
    assert!(
        after_read + Duration::from_millis(30) < idle,
        "{after_read:?} vs {idle:?}"
    );
    std::thread::sleep(Duration::from_millis(60));
    conn.record_write(1);
    let after_write = conn.info().idle_for;
    assert!(after_write < Duration::from_millis(45), "{after_write:?}");
}

#[test]
fn stats_keep_counting_after_close() {
    let tracker = Tracker::new();
    let l = ListenerConfig::new().category("in");
    let d = DialerConfig::new().category("out");
    for i in 1..=3u64 {
        let c = tracker.accepted(&l, addr(80), addr(50_000));
        c.record_read(usize::try_from(i).unwrap() * 10);
        c.record_write(1);
    }
    let live = tracker.accepted(&l, addr(80), addr(50_001));
    live.record_read(7);
    tracker.accept_failed(
        &l,
        &Addr::Inet(addr(80)),
        &io::Error::from(io::ErrorKind::Other),
    );
    tracker
        .dial(&d, "db:5432")
        .failed(&io::Error::from(io::ErrorKind::ConnectionRefused));
    let dialed = tracker
        .dial(&d, "db:5432")
        .established(addr(40_000), addr(5432));
    dialed.report_tls_handshake_done(
        Err(&io::Error::other("bad certificate")),
        Duration::from_millis(3),
    );
    drop(dialed);

    let stats = tracker.stats();
    let s = stats.get("in", Role::Server).unwrap();
    assert_eq!((s.opened, s.closed, s.active, s.failed), (4, 3, 1, 1));
    assert_eq!(
        (s.read_bytes, s.write_bytes),
        (60 + 7, 3),
        "closed plus live bytes"
    );
    let c = stats.get("out", Role::Client).unwrap();
    assert_eq!(
        (
            c.opened,
            c.closed,
            c.active,
            c.failed,
            c.tls_handshake_failed
        ),
        (1, 1, 0, 1, 1)
    );
    assert_eq!(stats.total().opened, 5);
    assert_eq!(stats.category("in").read_bytes, 67);
    drop(live);
    let s2 = tracker.stats();
    assert_eq!(
        s2.get("in", Role::Server).unwrap().read_bytes,
        67,
        "bytes survive the close"
    );
    assert_eq!(s2.get("in", Role::Server).unwrap().active, 0);
}

#[test]
fn history_is_bounded_and_newest_first() {
    let tracker = Tracker::builder().history(3).build();
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = tracker.register(server("x"));
        ids.push(c.id());
        if i == 4 {
            c.record_read_error(&io::Error::from(io::ErrorKind::ConnectionReset));
        }
    }
    let closed = tracker.recently_closed();
    assert_eq!(closed.len(), 3);
    let got: Vec<_> = closed.iter().map(|c| c.info.id).collect();
    assert_eq!(got, vec![ids[4], ids[3], ids[2]]);
    assert!(
        closed[0].error.as_deref().is_some_and(|e| !e.is_empty()),
        "{:?}",
        closed[0].error
    );
    assert!(closed[1].error.is_none());

    let none = Tracker::builder().history(0).build();
    drop(none.register(server("x")));
    assert!(none.recently_closed().is_empty());
}

#[test]
fn drained_resolves_when_the_last_connection_goes() {
    let tracker = Tracker::new();
    let flag = Arc::new(Flag::default());
    assert!(
        poll_once(pin!(tracker.drained()), &flag).is_ready(),
        "nothing open: ready at once"
    );

    let a = tracker.register(server("a"));
    let b = tracker.register(server("b"));
    let mut all = pin!(tracker.drained());
    let mut only_a = pin!(tracker.drained_category("a"));
    let flag_a = Arc::new(Flag::default());
    assert!(poll_once(all.as_mut(), &flag).is_pending());
    assert!(poll_once(only_a.as_mut(), &flag_a).is_pending());
    drop(a);
    assert!(
        flag_a.0.load(Ordering::SeqCst),
        "closing the last 'a' wakes its waiter"
    );
    assert!(poll_once(only_a.as_mut(), &flag_a).is_ready());
    assert!(
        poll_once(all.as_mut(), &flag).is_pending(),
        "'b' is still open"
    );
    flag.0.store(false, Ordering::SeqCst);
    drop(b);
    assert!(flag.0.load(Ordering::SeqCst));
    assert!(poll_once(all.as_mut(), &flag).is_ready());
}

#[test]
fn drained_on_another_thread_wakes_on_close() {
    let tracker = Tracker::new();
    let conn = tracker.register(server("x"));
    let (tx, rx) = mpsc::channel();
    let t = tracker.clone();
    let waiter = std::thread::spawn(move || {
        block_on(t.drained());
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "pending while open"
    );
    drop(conn);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("resolved after the close");
    waiter.join().unwrap();
}

/// A hook that appends its name to a shared log for every event.
struct Log(&'static str, Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, ev: &str) {
        self.1.lock().unwrap().push(format!("{}:{ev}", self.0));
    }
}

impl Hook for Log {
    fn on_accept(&self, _: &conntrack_core::AcceptEvent<'_>) {
        self.push("accept");
    }
    fn on_dial(&self, _: &conntrack_core::DialEvent<'_>) {
        self.push("dial");
    }
    fn on_dns_start(&self, _: &conntrack_core::DnsStartEvent<'_>) {
        self.push("dns_start");
    }
    fn on_connect_done(&self, _: &conntrack_core::ConnectDoneEvent<'_>) {
        self.push("connect_done");
    }
    fn on_tls_handshake_done(&self, _: &conntrack_core::TlsHandshakeDoneEvent<'_>) {
        self.push("tls_done");
    }
    fn on_close(&self, _: &CloseEvent<'_>) {
        self.push("close");
    }
}

#[test]
fn hooks_run_in_the_documented_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = |name| Log(name, Arc::clone(&log));
    let closure_log = Arc::clone(&log);
    let tracker = Tracker::builder().hook(l("tracker1")).build();
    let _handle = tracker.add_hook(l("tracker2"));
    let config = DialerConfig::new()
        .hook(l("config_hook"))
        .on_dial(move |_| {
            closure_log
                .lock()
                .unwrap()
                .push("config_closure:dial".into());
        });
    let conn = trace::with(l("outer"), || {
        trace::with(l("inner"), || {
            let mut dial = tracker.dial(&config, "db:1");
            dial.dns_start("db");
            let attempt = dial.connect_start(addr(1));
            dial.connect_done(&attempt, Ok(()));
            dial.established(addr(2), addr(1))
        })
    });
    conn.report_tls_handshake_done(
        Ok(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")),
        Duration::ZERO,
    );
    drop(conn);
    let log = log.lock().unwrap().clone();
    for ev in ["dns_start", "connect_done", "tls_done", "close"] {
        let order: Vec<&str> = log
            .iter()
            .filter(|l| l.ends_with(&format!(":{ev}")))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(
            order,
            ["inner", "outer", "config_hook", "tracker1", "tracker2"],
            "{ev}"
        );
    }
    let dial: Vec<&str> = log
        .iter()
        .filter(|l| l.ends_with(":dial"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        dial,
        [
            "inner",
            "outer",
            "config_closure",
            "config_hook",
            "tracker1",
            "tracker2"
        ]
    );
}

#[test]
fn trace_scope_future_form_composes() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = |name| Log(name, Arc::clone(&log));
    let tracker = Tracker::new();
    let config = ListenerConfig::new();
    let t = tracker.clone();
    let inner = trace::scope(
        l("inner"),
        async move { t.accepted(&config, addr(1), addr(2)) },
    );
    let conn = block_on(trace::scope(l("outer"), inner));
    assert_eq!(*log.lock().unwrap(), ["inner:accept", "outer:accept"]);
    // Outside any scope, nothing is added.
    drop(tracker.register(server("x")));
    assert_eq!(log.lock().unwrap().len(), 2);
    drop(conn);
    assert_eq!(
        log.lock().unwrap()[2..],
        ["inner:close".to_string(), "outer:close".to_string()]
    );
}

#[test]
fn hook_handle_removes_on_drop_and_keep_keeps() {
    let tracker = Tracker::new();
    let removed = RecordingHook::new();
    let kept = RecordingHook::new();
    let h = tracker.add_hook(removed.clone());
    tracker.add_hook(kept.clone()).keep();
    drop(tracker.register(server("x")));
    drop(h);
    drop(tracker.register(server("x")));
    assert_eq!(removed.names(), ["accept", "close"]);
    assert_eq!(kept.names(), ["accept", "close", "accept", "close"]);
}

struct Panics;

impl Hook for Panics {
    fn on_accept(&self, _: &conntrack_core::AcceptEvent<'_>) {
        panic!("hook panic in on_accept");
    }
    fn on_read(&self, _: &ReadEvent<'_>) {
        panic!("hook panic in on_read");
    }
    fn on_close(&self, _: &CloseEvent<'_>) {
        panic!("hook panic in on_close");
    }
    fn wants_io_events(&self) -> bool {
        true
    }
}

#[test]
fn a_panicking_hook_leaves_the_tracker_consistent() {
    let rec = RecordingHook::with_io();
    let tracker = Tracker::builder().hook(Panics).hook(rec.clone()).build();
    let conn = tracker.register(server("x"));
    assert_eq!(tracker.len(), 1, "registered despite the panic");
    conn.record_read(5);
    assert_eq!(conn.info().read_bytes, 5);
    drop(conn);
    assert!(tracker.is_empty(), "removed despite the panic");
    assert_eq!(
        rec.names(),
        ["accept", "read", "close"],
        "the other hooks still ran"
    );
    assert_eq!(tracker.stats().hook_panics, 3);
    // Later calls still work.
    let again = tracker.register(server("x"));
    assert_eq!(tracker.len(), 1);
    // Dropping a connection while unwinding from a panic does not abort.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _conn = again;
        panic!("the stream's owner panics");
    }));
    assert!(r.is_err());
    assert!(tracker.is_empty());
    assert_eq!(tracker.stats().hook_panics, 5);
}

#[test]
fn per_io_hooks_are_opt_in_and_apply_to_open_connections() {
    let plain = RecordingHook::new();
    let tracker = Tracker::builder().hook(plain.clone()).build();
    let conn = tracker.register(server("x"));
    conn.record_read(1);
    assert_eq!(
        plain.names(),
        ["accept"],
        "no io events for a hook that did not ask"
    );
    let io = RecordingHook::with_io();
    let handle = tracker.add_hook(io.clone());
    conn.record_read(7);
    conn.record_write(3);
    let _ = conn.read_result(Err(io::Error::from(io::ErrorKind::ConnectionReset)));
    let ev = io.events();
    assert!(
        matches!(
            ev[0],
            Recorded::Read {
                n: 7,
                error: None,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(
        matches!(
            ev[1],
            Recorded::Write {
                n: 3,
                error: None,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(
        matches!(&ev[2], Recorded::Read { n: 0, error: Some(e), .. } if e.kind == io::ErrorKind::ConnectionReset)
    );
    handle.remove();
    conn.record_read(1);
    assert_eq!(io.count("read"), 2, "removed hooks see nothing more");
    let closures = Callbacks::new().on_write(|_| {});
    let t2 = Tracker::new();
    let c2 = t2.register(server("x").hook(closures));
    c2.record_write(1);
}

#[test]
fn close_reports_the_last_error() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let conn = tracker.register(server("x"));
    conn.record_error(&io::Error::from(io::ErrorKind::WouldBlock));
    drop(conn);
    assert!(
        rec.events().last().unwrap().error().is_none(),
        "WouldBlock is not a failure"
    );
    rec.clear();
    let conn = tracker.register(server("x"));
    conn.record_error(&io::Error::from_raw_os_error(104));
    drop(conn);
    let last = rec.events().pop().unwrap();
    assert_eq!(last.error().unwrap().kind, io::ErrorKind::ConnectionReset);
}
