//! Graceful shutdown in core, with no runtime: an exchange ends once its response has been
//! written (the flush after it), an upgraded connection is busy for a shutdown and judged by
//! its I/O for the idle timeout, the shutdown signal resolves when a shutdown begins and
//! leaves the closing to the servers, and the report counts each connection once.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use conntrack_core::{
    blocking, CloseReason, ConnState, ListenerConfig, Registration, Role, Tracker,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits (bounded, 10 s) until `cond` holds.
fn spin_until(what: &str, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::yield_now();
    }
}

/// Counts its wake-ups.
struct Count(std::sync::atomic::AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn an_exchange_ends_at_the_flush_after_its_response() {
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::server(addr(80), addr(5000)));
    // Without waiting exchanges, a flush is nothing.
    conn.record_flush();
    conn.begin_exchange();
    conn.begin_exchange();
    conn.downgrade().end_exchange_when_flushed();
    let info = conn.info();
    assert_eq!((info.in_flight, info.state), (2, ConnState::Active));
    conn.end_exchange_when_flushed();
    assert_eq!(conn.info().in_flight, 2, "still being written");
    conn.record_flush();
    let info = conn.info();
    assert_eq!(
        (info.requests, info.in_flight, info.state),
        (2, 0, ConnState::Idle)
    );
    assert!(info.exchange_idle_for.is_some());
}

#[test]
fn a_shutdown_waits_for_a_response_being_written() {
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::server(addr(80), addr(5000)));
    conn.begin_exchange();
    conn.end_exchange_when_flushed();
    let shutdown = std::thread::scope(|s| {
        let t = s.spawn(|| {
            blocking::block_on(tracker.shutdown(Duration::from_secs(30), blocking::sleep))
        });
        // Not closed while its response is unwritten (the shutdown runs meanwhile).
        spin_until("the shutdown began", || tracker.is_shutting_down());
        assert!(conn.check().is_ok(), "aborted with its response unwritten");
        conn.record_flush();
        t.join().unwrap()
    });
    assert!(shutdown.drained, "{shutdown:?}");
    assert_eq!(
        (shutdown.closed_idle, shutdown.closed_busy),
        (0, 1),
        "{shutdown:?}"
    );
    assert!(conn.is_aborted(), "closed by the tracker once written");
    assert_eq!(tracker.recently_closed()[0].reason, CloseReason::Shutdown);
}

#[test]
fn upgraded_connections_are_busy_for_a_shutdown() {
    let tracker = Tracker::new();
    let up = tracker.register(Registration::server(addr(80), addr(5000)));
    up.begin_exchange();
    up.downgrade().mark_upgraded();
    // The 101's exchange ends once written: the connection stays upgraded, not idle.
    up.end_exchange();
    let info = up.info();
    assert_eq!((info.state, info.in_flight), (ConnState::Upgraded, 0));
    assert_eq!(info.state.to_string(), "upgraded");
    let idle = tracker.register(Registration::server(addr(80), addr(5001)));
    idle.begin_exchange();
    idle.end_exchange();
    let report = blocking::block_on(tracker.shutdown(Duration::from_millis(100), blocking::sleep));
    assert!(!report.drained);
    assert_eq!(
        (report.closed_idle, report.closed_busy),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(report.still_open.len(), 1);
    assert_eq!(report.still_open[0].id, up.id());
    assert_eq!(report.still_open[0].state, ConnState::Upgraded);
    let reasons: Vec<_> = tracker
        .recently_closed()
        .iter()
        .map(|c| (c.info.id, c.reason))
        .collect();
    assert!(
        reasons.contains(&(up.id(), CloseReason::ShutdownDeadline)),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(idle.id(), CloseReason::Shutdown)),
        "{reasons:?}"
    );
}

#[test]
fn upgraded_connections_are_judged_by_their_io_for_the_idle_timeout() {
    const IDLE: Duration = Duration::from_millis(50);
    let tracker = Tracker::new();
    let config = ListenerConfig::new().idle_timeout(IDLE);
    let up = tracker.accepted(&config, addr(80), addr(5000));
    up.begin_exchange();
    up.mark_upgraded();
    up.end_exchange();
    up.record_read(10);
    assert!(tracker.enforce_policies().is_some());
    assert!(!up.is_closed(), "active I/O, not idle");
    // Quiet: closed once idle for the timeout, and the record says so.
    loop {
        match tracker.enforce_policies() {
            None => break,
            Some(d) => std::thread::sleep(d),
        }
    }
    let closed = &tracker.recently_closed()[0];
    assert_eq!(closed.reason, CloseReason::IdleTimeout);
    assert_eq!(closed.info.state, ConnState::Upgraded);
    assert!(closed.info.idle_for >= IDLE, "{:?}", closed.info);
}

#[test]
fn io_woken_by_an_abort_is_not_activity() {
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::server(addr(80), addr(5000)));
    conn.record_read(4);
    std::thread::sleep(Duration::from_millis(30));
    let before = conn.info().idle_for;
    conn.abort();
    // A blocked read woken by the abort's socket shutdown returns end of stream.
    conn.record_read(0);
    let info = &tracker.recently_closed()[0].info;
    assert!(info.idle_for >= before, "{info:?}");
    assert!(conn.info().idle_for >= before);
}

#[test]
fn the_signal_resolves_when_a_shutdown_begins_and_leaves_the_closing_to_the_servers() {
    let tracker = Tracker::new();
    let count = Arc::new(Count(Default::default()));
    let waker = Waker::from(Arc::clone(&count));
    let mut cx = Context::from_waker(&waker);
    let mut signal = pin!(tracker.shutdown_signal());
    assert!(signal.as_mut().poll(&mut cx).is_pending());
    assert!(signal.as_mut().poll(&mut cx).is_pending(), "polled again");
    // A dropped signal leaves nothing behind.
    drop(tracker.shutdown_signal());

    let idle = tracker.register(Registration::server(addr(80), addr(5000)));
    idle.begin_exchange();
    idle.end_exchange();
    let busy = tracker.register(Registration::new(Role::Server));
    busy.begin_exchange();
    // A pool's idle client connection: no server closes it, the tracker does.
    let client = tracker.register(Registration::client(addr(5002), addr(443)));
    client.begin_exchange();
    client.end_exchange();
    let report = std::thread::scope(|s| {
        let t = s.spawn(|| {
            blocking::block_on(tracker.shutdown(Duration::from_secs(30), blocking::sleep))
        });
        // The signal's task is woken once, and the signal is ready.
        spin_until("the signal's task is woken", || {
            count.0.load(std::sync::atomic::Ordering::SeqCst) > 0
        });
        assert!(signal.as_mut().poll(&mut cx).is_ready());
        // A signal taken now is ready at once.
        assert!(pin!(tracker.shutdown_signal()).poll(&mut cx).is_ready());
        // With a signal handed out the servers close their connections: the tracker closes
        // neither the idle one nor, when its exchange ends, the busy one.
        spin_until("the idle client connection is closed at once", || {
            client.is_aborted()
        });
        assert!(!idle.is_closed());
        busy.end_exchange();
        assert!(!busy.is_closed());
        // The servers close them (cleanly: the reason is the shutdown's).
        drop(idle);
        drop(busy);
        t.join().unwrap()
    });
    assert!(report.drained, "{report:?}");
    assert_eq!(
        (report.closed_idle, report.closed_busy),
        (2, 1),
        "{report:?}"
    );
    for c in tracker.recently_closed() {
        assert_eq!(c.reason, CloseReason::Shutdown, "{c:?}");
    }
    assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn without_the_signal_multiplexed_connections_wait_for_the_deadline() {
    let tracker = Tracker::new();
    let idle = tracker.register(Registration::server(addr(80), addr(5000)));
    idle.begin_exchange();
    idle.end_exchange();
    idle.mark_multiplexed();
    let busy = tracker.register(Registration::server(addr(80), addr(5001)));
    busy.downgrade().mark_multiplexed();
    busy.begin_exchange();
    let plain = tracker.register(Registration::server(addr(80), addr(5002)));
    plain.begin_exchange();
    plain.end_exchange();
    let report = std::thread::scope(|s| {
        let t = s.spawn(|| {
            blocking::block_on(tracker.shutdown(Duration::from_millis(300), blocking::sleep))
        });
        spin_until("the plain idle one closes", || plain.is_closed());
        busy.end_exchange();
        assert!(!busy.is_closed(), "its protocol may still hold frames");
        t.join().unwrap()
    });
    assert!(!report.drained);
    assert_eq!(
        (report.closed_idle, report.closed_busy),
        (1, 0),
        "{report:?}"
    );
    let mut left: Vec<_> = report.still_open.iter().map(|c| c.id).collect();
    left.sort();
    assert_eq!(left, [idle.id(), busy.id()]);
}
