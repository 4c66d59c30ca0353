//! Waiting on a connection limit in `LimitMode::Wait`: first come first served, one waiter
//! woken per release, a waiter that gives up leaves nothing behind, accepters yield to
//! connections already waiting. Futures are polled by hand with wakers that record their
//! wake-ups, so each step is checked exactly, with no timing.

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use common::{addr, block_on, poll_once, Flag};
use conntrack_core::{
    blocking, Connection, Dial, DialerConfig, LimitMode, ListenerConfig, Role, Tracker,
};

fn peer(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + n))
}

type Admit<'a> = Pin<Box<dyn Future<Output = io::Result<Connection>> + 'a>>;

/// `n` admissions queued behind a full limit, each polled once with its own waker.
fn queue<'a>(
    tracker: &'a Tracker,
    config: &'a ListenerConfig,
    n: u16,
) -> Vec<(Admit<'a>, Arc<Flag>)> {
    (0..n)
        .map(|i| {
            let mut fut: Admit<'a> = Box::pin(tracker.admit_waiting(config, addr(80), peer(i)));
            let flag = Flag::new();
            assert!(
                poll_once(fut.as_mut(), &flag).is_pending(),
                "the limit is full"
            );
            (fut, flag)
        })
        .collect()
}

fn woken(q: &[(Admit<'_>, Arc<Flag>)]) -> Vec<usize> {
    q.iter()
        .enumerate()
        .filter(|(_, (_, f))| f.take())
        .map(|(i, _)| i)
        .collect()
}

/// Each release hands its slot to the connection that has waited longest and wakes that one
/// alone; nobody can take the slot in between (the count does not drop), and the connections
/// are admitted in the order they queued.
#[test]
fn a_release_wakes_the_longest_waiting_connection_alone() {
    let tracker = Tracker::new();
    let config = ListenerConfig::new()
        .category("fifo")
        .max_connections(1)
        .limit_mode(LimitMode::Wait);
    let mut held = tracker
        .admit(&config, addr(80), peer(900))
        .expect("the only slot");
    let mut q = queue(&tracker, &config, 6);
    assert_eq!(config.limit_waiters(), 6);
    for i in 0..q.len() {
        drop(held);
        assert_eq!(woken(&q), vec![i], "one wake-up, for the oldest waiter");
        // Handed over, not given back: the count stays and a newcomer is refused.
        assert_eq!(config.limited_connections(), 1);
        tracker
            .admit(&config, addr(80), peer(901))
            .expect_err("the slot is the waiter's");
        let (fut, flag) = &mut q[i];
        let Poll::Ready(conn) = poll_once(fut.as_mut(), flag) else {
            panic!("waiter {i} was handed the slot");
        };
        held = conn.expect("admitted");
        assert_eq!(held.info().remote_addr.socket_addr(), Some(peer(i as u16)));
        assert_eq!(config.limit_waiters(), q.len() - i - 1);
    }
    drop(held);
    drop(q);
    assert_eq!(config.limited_connections(), 0);
    let stats = tracker.stats();
    let st = stats.get("fifo", Role::Server).expect("stats");
    assert_eq!(
        (st.opened, st.rejected),
        (7, 6),
        "only the newcomers were refused"
    );
}

/// The same for dials through a `DialerConfig` limit: first come first served, one wake-up
/// per release.
#[test]
fn waiting_dials_are_served_in_order() {
    let tracker = Tracker::new();
    let config = DialerConfig::new().category("pool").max_connections(1);
    let mut first = tracker.dial(&config, "db:5432");
    block_on(first.admit(&config)).expect("the only slot");
    type Admitted<'a> = Pin<Box<dyn Future<Output = (usize, io::Result<Dial>)> + 'a>>;
    let mut q: Vec<(Admitted<'_>, Arc<Flag>)> = (0..5)
        .map(|i| {
            let (tracker, config) = (&tracker, &config);
            let mut fut: Admitted<'_> = Box::pin(async move {
                let mut d = tracker.dial(config, "db:5432");
                let r = d.admit(config).await;
                (i, r.map(|()| d))
            });
            let flag = Flag::new();
            assert!(poll_once(fut.as_mut(), &flag).is_pending());
            (fut, flag)
        })
        .collect();
    assert_eq!(config.limit_waiters(), 5);
    let mut held = first;
    for i in 0..q.len() {
        drop(held);
        let woken: Vec<usize> = (0..q.len()).filter(|&j| q[j].1.take()).collect();
        assert_eq!(woken, vec![i]);
        let (fut, flag) = &mut q[i];
        let Poll::Ready((j, dial)) = poll_once(fut.as_mut(), flag) else {
            panic!("dial {i} was handed the slot");
        };
        assert_eq!(j, i);
        held = dial.expect("admitted");
        assert_eq!(config.limited_connections(), 1);
    }
    drop(held);
    assert_eq!(config.limited_connections(), 0);
    assert_eq!(config.limit_waiters(), 0);
}

/// 100,000 waiters that give up (each future polled once, then dropped, as a dial under a
/// timeout or an accept in a `select!`) leave no entry and no waker behind: the limit counts
/// no waiter, and the one waker they all used has no clone left anywhere.
#[test]
fn cancelled_waiters_leave_nothing_behind() {
    const N: usize = 100_000;
    let tracker = Tracker::new();
    let listen = ListenerConfig::new().max_connections(1);
    let dial = DialerConfig::new().max_connections(1);
    let _held = tracker.admit(&listen, addr(80), peer(0)).expect("slot");
    let mut held_dial = tracker.dial(&dial, "x:1");
    block_on(held_dial.admit(&dial)).expect("slot");
    let flag = Flag::new();

    for i in 0..N {
        let mut fut = Box::pin(tracker.admit_waiting(&listen, addr(80), peer(1)));
        assert!(poll_once(fut.as_mut(), &flag).is_pending());
        if i == 0 {
            assert_eq!(listen.limit_waiters(), 1, "a waiter is counted");
            assert_eq!(Arc::strong_count(&flag), 2, "and holds a waker");
        }
    }
    assert_eq!(listen.limit_waiters(), 0, "connections: none left");
    assert_eq!(Arc::strong_count(&flag), 1, "connections: no waker left");

    for i in 0..N {
        let mut ready = tracker.accept_ready(&listen);
        assert!(poll_once(Pin::new(&mut ready), &flag).is_pending());
        if i == 0 {
            assert_eq!(listen.limit_waiters(), 1);
        }
    }
    assert_eq!(listen.limit_waiters(), 0, "accepters: none left");
    assert_eq!(Arc::strong_count(&flag), 1, "accepters: no waker left");

    for i in 0..N {
        let mut fut = Box::pin(async {
            let mut d = tracker.dial(&dial, "x:1");
            d.admit(&dial).await
        });
        assert!(poll_once(fut.as_mut(), &flag).is_pending());
        if i == 0 {
            assert_eq!(dial.limit_waiters(), 1);
        }
    }
    assert_eq!(dial.limit_waiters(), 0, "dials: none left");
    assert_eq!(Arc::strong_count(&flag), 1, "dials: no waker left");

    // The limits still work: the slots are where they were.
    assert_eq!(listen.limited_connections(), 1);
    assert_eq!(dial.limited_connections(), 1);
    drop(held_dial);
    assert_eq!(dial.limited_connections(), 0);
    assert!(!flag.take(), "nobody woke a waiter that was gone");
}

/// A waiter handed a slot that gives up before taking it passes the slot on to the next one;
/// with no next one, the slot goes back to the pool.
#[test]
fn a_slot_handed_to_a_waiter_that_gave_up_goes_on() {
    let tracker = Tracker::new();
    let config = ListenerConfig::new().max_connections(1);
    let held = tracker.admit(&config, addr(80), peer(0)).expect("slot");
    let mut q = queue(&tracker, &config, 3);
    drop(held);
    assert_eq!(woken(&q), vec![0]);
    // The first gives up without being polled again: the second gets the slot.
    drop(q.remove(0));
    assert_eq!(woken(&q), vec![0]);
    // A waiter that gives up while still queued wakes nobody.
    drop(q.remove(1));
    assert!(woken(&q).is_empty());
    let (fut, flag) = &mut q[0];
    let Poll::Ready(conn) = poll_once(fut.as_mut(), flag) else {
        panic!("handed on");
    };
    let conn = conn.expect("admitted");
    assert_eq!(config.limited_connections(), 1);
    drop(conn);
    // A lone waiter handed the slot gives up: the slot is free again.
    let held = tracker.admit(&config, addr(80), peer(0)).expect("slot");
    let q = queue(&tracker, &config, 1);
    drop(held);
    assert!(q[0].1.take());
    drop(q);
    assert_eq!(config.limited_connections(), 0);
    assert_eq!(config.limit_waiters(), 0);
    tracker
        .admit(&config, addr(80), peer(1))
        .expect("the slot is back");
}

/// Accepters waiting for a free slot take none: a slot that frees goes first to a connection
/// already waiting for one; only a slot given back to the pool wakes the accepters, all of
/// them (only the kernel knows which listener has a connection waiting).
#[test]
fn accepters_yield_to_waiting_connections_then_all_wake() {
    let tracker = Tracker::new();
    let config = ListenerConfig::new().max_connections(1);
    let held = tracker.admit(&config, addr(80), peer(0)).expect("slot");
    let (mut a, mut b) = (tracker.accept_ready(&config), tracker.accept_ready(&config));
    let (fa, fb) = (Flag::new(), Flag::new());
    assert!(poll_once(Pin::new(&mut a), &fa).is_pending());
    assert!(poll_once(Pin::new(&mut b), &fb).is_pending());
    let mut q = queue(&tracker, &config, 1);
    assert_eq!(config.limit_waiters(), 3);
    drop(held);
    assert_eq!(woken(&q), vec![0], "the waiting connection gets the slot");
    assert!(!fa.take() && !fb.take(), "the accepters sleep on");
    let (fut, flag) = &mut q[0];
    let Poll::Ready(conn) = poll_once(fut.as_mut(), flag) else {
        panic!("admitted");
    };
    drop(conn.expect("admitted"));
    assert!(fa.take() && fb.take(), "a free slot wakes every accepter");
    assert!(poll_once(Pin::new(&mut a), &fa).is_ready());
    assert!(poll_once(Pin::new(&mut b), &fb).is_ready());
    assert_eq!(config.limit_waiters(), 0);
    // Without a limit, or in reject mode, ready at once.
    let mut free = tracker.accept_ready(&ListenerConfig::new());
    assert!(poll_once(Pin::new(&mut free), &fa).is_ready());
    let reject = ListenerConfig::new()
        .max_connections(1)
        .limit_mode(LimitMode::Reject);
    let _only = tracker.admit(&reject, addr(80), peer(0)).expect("slot");
    let mut ready = tracker.accept_ready(&reject);
    assert!(poll_once(Pin::new(&mut ready), &fa).is_ready());
}

/// A connection whose peer is at its per-IP limit is refused at once rather than queued
/// behind the connection limit.
#[test]
fn the_per_ip_limit_refuses_instead_of_queueing() {
    let tracker = Tracker::new();
    let config = ListenerConfig::new()
        .max_connections(1)
        .max_connections_per_ip(1);
    let _held = tracker.admit(&config, addr(80), peer(0)).expect("slot");
    let mut same_ip = Box::pin(tracker.admit_waiting(&config, addr(80), peer(1)));
    let Poll::Ready(refused) = poll_once(same_ip.as_mut(), &Flag::new()) else {
        panic!("not queued");
    };
    assert_eq!(
        refused.expect_err("per-IP").kind(),
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(config.limit_waiters(), 0);
}

/// Threads admitting through a limit of 2 at once, each connection held briefly: all are
/// admitted, never more than 2 at once, nothing refused, nothing left.
#[test]
fn threads_through_a_small_limit() {
    const THREADS: usize = 4;
    const EACH: usize = 2_000;
    let tracker = Tracker::new();
    let config = ListenerConfig::new().category("t").max_connections(2);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (tracker, config) = (&tracker, &config);
            s.spawn(move || {
                for i in 0..EACH {
                    let remote = peer(u16::try_from(t * EACH + i).unwrap());
                    let conn = blocking::block_on(tracker.admit_waiting(config, addr(80), remote))
                        .expect("wait mode refuses none");
                    assert!(config.limited_connections() <= 2);
                    assert!(tracker.len() <= 2);
                    std::thread::yield_now();
                    drop(conn);
                }
            });
        }
    });
    let stats = tracker.stats();
    let st = stats.get("t", Role::Server).expect("stats");
    assert_eq!((st.opened, st.rejected), ((THREADS * EACH) as u64, 0));
    assert_eq!(config.limited_connections(), 0);
    assert_eq!(config.limit_waiters(), 0);
}

/// What a listener keeps between polls can be kept anywhere: owned, `Send`, `Sync`, `Unpin`.
#[test]
fn the_futures_can_be_kept_between_polls() {
    fn keepable<T: Send + Sync + Unpin + std::fmt::Debug + 'static>() {}
    keepable::<conntrack_core::AcceptReady>();
    keepable::<conntrack_core::AdmitWaiting<'static>>();
}
