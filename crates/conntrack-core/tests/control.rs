//! Close reasons, abort, limits, policies and shutdown in core, with no runtime: the
//! decisions every adapter relies on (the testkit's `control` suite runs them on real sockets
//! on each runtime).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use conntrack_core::{
    blocking, Addr, CloseReason, LimitMode, ListenerConfig, Recorded, RecordingHook, Registration,
    Role, Tracker,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn reasons(rec: &RecordingHook) -> Vec<CloseReason> {
    rec.events()
        .iter()
        .filter_map(|e| match e {
            Recorded::Close { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn close_reasons_are_decided_once_in_core() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let reg = || Registration::server(addr(80), addr(5000));

    drop(tracker.register(reg()));
    let peer = tracker.register(reg());
    peer.record_read(10);
    peer.record_read(0);
    drop(peer);
    let reset = tracker.register(reg());
    reset.record_read_error(&io::Error::from(io::ErrorKind::ConnectionReset));
    drop(reset);
    let broken = tracker.register(reg());
    broken.record_write_error(&io::Error::from(io::ErrorKind::BrokenPipe));
    drop(broken);
    let error = tracker.register(reg());
    error.record_error(&io::Error::from(io::ErrorKind::InvalidData));
    drop(error);
    let tls = tracker.register(reg());
    tls.report_tls_handshake_done(
        Err(&io::Error::new(io::ErrorKind::InvalidData, "bad cert")),
        Duration::from_millis(1),
    );
    drop(tls);
    let aborted = tracker.register(reg());
    assert!(aborted.abort());
    assert!(!aborted.abort(), "once");
    drop(aborted);

    let want = [
        CloseReason::ClosedLocally,
        CloseReason::PeerClosed,
        CloseReason::Reset,
        CloseReason::Reset,
        CloseReason::Error,
        CloseReason::TlsFailure,
        CloseReason::Aborted,
    ];
    assert_eq!(reasons(&rec), want);
    let mut history: Vec<_> = tracker.recently_closed().iter().map(|c| c.reason).collect();
    history.reverse();
    assert_eq!(history, want);
    assert_eq!(
        CloseReason::IdleTimeout.error_type(),
        Some("keep_alive_timeout")
    );
    assert_eq!(
        CloseReason::ShutdownDeadline.error_type(),
        Some("app_shutdown_timeout")
    );
    assert_eq!(
        CloseReason::Rejected.error_type(),
        Some("max_concurrent_connections_exceeded")
    );
    assert_eq!(CloseReason::PeerClosed.error_type(), None);
}

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn abort_wakes_parked_io_and_fails_later_io() {
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::server(addr(80), addr(5001)));
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    conn.check().expect("live");
    conn.park_read(&waker).expect("live");
    conn.park_write(&waker).expect("live");
    // Parking the same task again keeps one waker.
    conn.park_read(&waker).expect("live");
    let closed = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&closed);
    let _guard = conn.set_closer(move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    assert!(tracker.abort(conn.id()));
    assert_eq!(count.0.load(Ordering::SeqCst), 2, "read and write woken");
    assert_eq!(closed.load(Ordering::SeqCst), 1, "closer run");
    let err = conn.check().expect_err("aborted");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert!(err.to_string().contains("aborted"), "{err}");
    assert!(conn.park_read(&waker).is_err());
    assert!(tracker.is_empty());
    assert!(!tracker.abort(conn.id()));
}

/// Tasks blocked on clones of one stream (smol and async-std streams are `Clone`, and clones
/// share the connection) each leave their waker: an abort wakes every one, not only the last
/// to park. A task parking again is kept once.
#[test]
fn abort_wakes_every_parked_task() {
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::server(addr(80), addr(5002)));
    let clone = conn.clone();
    let counts: Vec<_> = (0..3)
        .map(|_| Arc::new(Count(AtomicUsize::new(0))))
        .collect();
    let wakers: Vec<_> = counts.iter().map(|c| Waker::from(Arc::clone(c))).collect();
    conn.park_read(&wakers[0]).expect("live");
    clone.park_read(&wakers[1]).expect("live");
    conn.park_read(&wakers[0]).expect("live");
    clone.park_write(&wakers[2]).expect("live");
    assert!(tracker.abort(conn.id()));
    let woken: Vec<_> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
    assert_eq!(woken, [1, 1, 1], "each parked task woken once");
    assert!(clone.park_read(&wakers[1]).is_err());
}

#[test]
fn admit_counts_and_reports_rejections() {
    let rec = RecordingHook::new();
    let tracker = Tracker::new();
    let config = ListenerConfig::new()
        .category("lim")
        .max_connections(2)
        .max_connections_per_ip(1)
        .limit_mode(LimitMode::Reject)
        .hook(rec.clone());
    let a = tracker.admit(&config, addr(80), addr(6000)).expect("first");
    let same_ip = tracker
        .admit(&config, addr(80), addr(6001))
        .expect_err("per-IP");
    assert_eq!(same_ip.kind(), io::ErrorKind::ConnectionRefused);
    let other = SocketAddr::from(([127, 0, 0, 2], 6000));
    let b = tracker.admit(&config, addr(80), other).expect("another IP");
    let third = SocketAddr::from(([127, 0, 0, 3], 6000));
    tracker
        .admit(&config, addr(80), third)
        .expect_err("over the limit");
    assert_eq!(config.limited_connections(), 2);
    drop(a);
    assert_eq!(config.limited_connections(), 1);
    let c = tracker
        .admit(&config, addr(80), addr(6002))
        .expect("slot freed");
    let stats = tracker.stats();
    let s = stats.get("lim", Role::Server).unwrap();
    assert_eq!((s.opened, s.rejected, s.failed), (3, 2, 0));
    let rejected = rec
        .events()
        .iter()
        .filter(|e| matches!(e, Recorded::Accept { rejected: true, .. }))
        .count();
    assert_eq!(rejected, 2);
    drop((b, c));
    assert_eq!(config.limited_connections(), 0);
    // A clone of the config shares the count.
    let shared = config.clone();
    let d = tracker.admit(&config, addr(80), addr(6003)).unwrap();
    assert_eq!(shared.limited_connections(), 1);
    drop(d);
    let unknown_peer = tracker.admit(&config, Addr::Unknown, Addr::Unknown);
    assert!(unknown_peer.is_ok(), "no IP: only the total limit applies");
    drop(unknown_peer);
    // A dual-stack listener sees an IPv4 peer as an IPv4-mapped IPv6 address: the same peer.
    let v4 = tracker.admit(&config, addr(80), addr(6004)).expect("v4");
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:6005".parse().unwrap();
    tracker
        .admit(&config, addr(80), mapped)
        .expect_err("the same peer IP, mapped");
    drop(v4);
    let m = tracker
        .admit(&config, addr(80), mapped)
        .expect("its slot is free again");
    tracker
        .admit(&config, addr(80), addr(6006))
        .expect_err("the same peer IP, unmapped");
    drop(m);
    assert_eq!(config.limited_connections(), 0);
}

/// `admit_waiting`: in wait mode a connection that finds the connection limit reached (two
/// accepters raced for the last slot) waits, neither refused nor reported, and is admitted
/// once a slot frees; the per-IP limit still refuses at once, and in reject mode it is
/// `admit`.
#[test]
fn admit_waiting_waits_for_a_slot_in_wait_mode() {
    let rec = RecordingHook::new();
    let tracker = Tracker::new();
    let config = ListenerConfig::new()
        .category("w")
        .max_connections(2)
        .max_connections_per_ip(1)
        .hook(rec.clone());
    let ip = |n: u8, port: u16| SocketAddr::from(([127, 0, 0, n], port));
    let admit = |remote| blocking::block_on(tracker.admit_waiting(&config, addr(80), remote));
    let a = admit(ip(1, 6100)).expect("a free slot");
    let same_ip = admit(ip(1, 6101)).expect_err("per-IP refuses at once");
    assert_eq!(same_ip.kind(), io::ErrorKind::ConnectionRefused);
    let b = admit(ip(2, 6100)).expect("the last slot");
    std::thread::scope(|s| {
        let waiting = s.spawn(|| admit(ip(3, 6100)));
        // Still waiting a while later (the scenario's own time), nothing more refused.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiting.is_finished(), "waits for a slot");
        assert_eq!(config.limited_connections(), 2);
        drop(a);
        let started = Instant::now();
        while !waiting.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(waiting.is_finished(), "admitted once a slot freed");
        let c = waiting.join().unwrap().expect("admitted");
        assert_eq!(config.limited_connections(), 2);
        drop(c);
    });
    drop(b);
    let stats = tracker.stats();
    let st = stats.get("w", Role::Server).unwrap();
    assert_eq!((st.opened, st.rejected), (3, 1));
    // Reject mode: refused at once at the limit.
    let reject = ListenerConfig::new()
        .max_connections(1)
        .limit_mode(LimitMode::Reject);
    let only = blocking::block_on(tracker.admit_waiting(&reject, addr(80), ip(1, 6200)))
        .expect("a free slot");
    let refused = blocking::block_on(tracker.admit_waiting(&reject, addr(80), ip(2, 6200)))
        .expect_err("reject mode refuses");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    drop(only);
    assert!(tracker.is_empty());
}

#[test]
fn policies_close_due_connections_and_say_when_to_look_again() {
    let tracker = Tracker::new();
    assert_eq!(tracker.enforce_policies(), None, "nothing to watch");
    let idle = tracker.register(
        Registration::server(addr(80), addr(7000)).idle_timeout(Duration::from_millis(50)),
    );
    let busy = tracker.register(
        Registration::server(addr(80), addr(7001)).idle_timeout(Duration::from_millis(50)),
    );
    let aged = tracker
        .register(Registration::server(addr(80), addr(7002)).max_age(Duration::from_millis(80)));
    let next = tracker.enforce_policies().expect("a deadline");
    assert!(next <= Duration::from_millis(52), "{next:?}");
    // An exchange in flight keeps a connection from being idle.
    busy.begin_exchange();
    // Time passing is the scenario.
    std::thread::sleep(Duration::from_millis(100));
    let next = tracker
        .enforce_policies()
        .expect("the busy one is still watched");
    // Its exchange is in flight: looked at again one timeout later, not in a busy loop.
    assert!(next >= Duration::from_millis(40), "{next:?}");
    assert!(idle.is_aborted());
    assert!(aged.is_aborted());
    assert!(!busy.is_aborted());
    let reasons: Vec<_> = tracker.recently_closed().iter().map(|c| c.reason).collect();
    assert!(reasons.contains(&CloseReason::IdleTimeout), "{reasons:?}");
    assert!(reasons.contains(&CloseReason::MaxAge), "{reasons:?}");
    busy.end_exchange();
    drop((idle, busy, aged));
    assert!(tracker.is_empty());
}

/// A connection that has read or written is looked at again one idle timeout after its last
/// I/O (the last I/O is kept on the coarse clock, the deadline on the process clock), and
/// closed once that has passed.
#[test]
fn idle_deadline_counts_from_the_last_io() {
    let tracker = Tracker::new();
    let conn = tracker.register(
        Registration::server(addr(80), addr(7100)).idle_timeout(Duration::from_millis(200)),
    );
    conn.record_read(10);
    conn.record_write(10);
    let next = tracker.enforce_policies().expect("a deadline");
    assert!(
        next <= Duration::from_millis(220),
        "one idle timeout after the I/O (plus slack), not {next:?}"
    );
    assert!(!conn.is_aborted());
    // Time passing is the scenario.
    std::thread::sleep(Duration::from_millis(250));
    let _ = tracker.enforce_policies();
    assert!(conn.is_aborted(), "idle for longer than its timeout");
    assert_eq!(reasons_of(&tracker), [CloseReason::IdleTimeout]);
}

fn reasons_of(tracker: &Tracker) -> Vec<CloseReason> {
    tracker.recently_closed().iter().map(|c| c.reason).collect()
}

#[test]
fn shutdown_without_a_runtime() {
    let tracker = Tracker::new();
    let idle = tracker.register(Registration::server(addr(80), addr(8000)));
    idle.begin_exchange();
    idle.end_exchange();
    let stuck = tracker.register(Registration::server(addr(80), addr(8001)));
    stuck.begin_exchange();
    let report = blocking::block_on(tracker.shutdown(Duration::from_millis(50), blocking::sleep));
    assert!(!report.drained);
    assert_eq!(report.closed_idle, 1);
    assert_eq!(report.still_open.len(), 1);
    assert_eq!(report.still_open[0].id, stuck.id());
    assert_eq!(report.still_open[0].in_flight, 1);
    assert!(report.elapsed >= Duration::from_millis(50));
    assert!(stuck.check().is_err());
    assert!(tracker.is_shutting_down());
    assert!(tracker.is_empty());
    // Nothing open: returns at once, drained, and reports only what this call closed.
    let report = blocking::block_on(tracker.shutdown(Duration::from_secs(60), blocking::sleep));
    assert!(report.drained && report.still_open.is_empty());
    assert_eq!(report.closed_idle, 0, "{report:?}");
}

/// Runs `fut` on this thread until `stop` is set (looked at every few milliseconds).
fn run_until(stop: &AtomicBool, fut: impl Future<Output = ()>) {
    let mut fut = pin!(fut);
    let mut tick = pin!(blocking::sleep(Duration::ZERO));
    blocking::block_on(std::future::poll_fn(|cx| {
        if fut.as_mut().poll(cx).is_ready() || stop.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        while tick.as_mut().poll(cx).is_ready() {
            tick.set(blocking::sleep(Duration::from_millis(5)));
        }
        Poll::Pending
    }));
}

/// A connection registered while the policy enforcer is in the middle of a check is not
/// missed. With 50,000 connections a check (one walk) takes milliseconds; each round wakes the
/// enforcer with a connection due earlier than its sleep (but still far away), registers a
/// connection with a short idle timeout at a different point of the walk that follows, and
/// expects it closed soon after its timeout, not when the far deadline comes.
#[test]
fn a_registration_during_a_check_is_not_missed() {
    const MANY: usize = 50_000;
    const ROUNDS: u32 = 24;
    const IDLE: Duration = Duration::from_millis(30);
    const BOUND: Duration = Duration::from_secs(3);
    let tracker = Tracker::new();
    let reg = || Registration::server(addr(80), addr(9000));
    let many: Vec<_> = (0..MANY)
        .map(|_| tracker.register(reg().max_age(Duration::from_secs(3600))))
        .collect();
    // How long one walk takes here: the offsets below spread over it.
    let started = Instant::now();
    let _ = tracker.enforce_policies();
    let walk = started.elapsed();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let t = tracker.clone();
        let stop = &stop;
        s.spawn(move || run_until(stop, t.run_policies(blocking::sleep)));
        let mut late = Vec::new();
        for round in 0..ROUNDS {
            // Due earlier than anything the enforcer sleeps for: it wakes and walks.
            let trigger =
                tracker.register(reg().max_age(Duration::from_secs(1800 - 10 * u64::from(round))));
            // Somewhere in that walk (from before it starts to after it ends).
            std::thread::sleep(walk * 3 / 2 * round / ROUNDS);
            let short = tracker.register(reg().idle_timeout(IDLE));
            let registered = Instant::now();
            while !short.is_aborted() && registered.elapsed() < BOUND {
                std::thread::sleep(Duration::from_millis(1));
            }
            if !short.is_aborted() {
                late.push(round);
            }
            drop((trigger, short));
        }
        stop.store(true, Ordering::SeqCst);
        assert!(
            late.is_empty(),
            "rounds {late:?} of {ROUNDS}: the short connection was still open {BOUND:?} after \
             its registration (a walk took {walk:?})"
        );
    });
    drop(many);
    assert!(tracker.is_empty());
}
