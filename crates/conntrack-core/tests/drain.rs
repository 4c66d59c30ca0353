//! `Tracker::drained` and `drained_category`: runtime-agnostic futures for graceful shutdown,
//! driven here by hand-written wakers (no runtime).

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::{block_on, client, poll_once, server, Flag};
use conntrack_core::{CloseEvent, Hook, Tracker};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn drained_is_ready_at_once_when_nothing_is_open() {
    let tracker = Tracker::new();
    let flag = Flag::new();
    assert!(poll_once(pin!(tracker.drained()), &flag).is_ready());
    assert!(poll_once(pin!(tracker.drained_category("never")), &flag).is_ready());
    // Everything that was open has gone.
    drop(tracker.register(server("x")));
    assert!(poll_once(pin!(tracker.drained()), &flag).is_ready());
}

#[test]
fn drained_is_pending_until_the_last_connection_goes() {
    let tracker = Tracker::new();
    let a = tracker.register(server("a"));
    let b = tracker.register(client("b"));
    let b2 = b.clone();
    let flag = Flag::new();
    let mut all = pin!(tracker.drained());
    assert!(poll_once(all.as_mut(), &flag).is_pending());
    assert!(
        poll_once(all.as_mut(), &flag).is_pending(),
        "polling again is harmless"
    );

    drop(a);
    // Woken or not, it is still pending while `b` lives.
    flag.take();
    assert!(poll_once(all.as_mut(), &flag).is_pending());
    drop(b);
    assert!(
        poll_once(all.as_mut(), &flag).is_pending(),
        "a clone of b is still open"
    );
    assert!(!flag.take(), "no wake while b's entry lives");
    b2.close(); // an explicit close counts the same as the last drop
    assert!(flag.take(), "the last close wakes the waiter");
    assert!(poll_once(all.as_mut(), &flag).is_ready());
    drop(b2);
}

#[test]
fn drained_category_resolves_while_other_categories_live() {
    let tracker = Tracker::new();
    let x1 = tracker.register(server("x"));
    let x2 = tracker.register(client("x")); // both roles of "x" count
    let y = tracker.register(server("y"));
    let (fx, fall) = (Flag::new(), Flag::new());
    let mut only_x = pin!(tracker.drained_category("x"));
    let mut all = pin!(tracker.drained());
    assert!(poll_once(only_x.as_mut(), &fx).is_pending());
    assert!(poll_once(all.as_mut(), &fall).is_pending());

    drop(x1);
    assert!(
        poll_once(only_x.as_mut(), &fx).is_pending(),
        "a client 'x' is left"
    );
    fx.take();
    drop(x2);
    assert!(fx.take(), "the last 'x' wakes the 'x' waiter");
    assert!(poll_once(only_x.as_mut(), &fx).is_ready());
    assert!(
        poll_once(all.as_mut(), &fall).is_pending(),
        "'y' is still open"
    );
    assert_eq!(tracker.len(), 1);

    fall.take();
    drop(y);
    assert!(fall.take());
    assert!(poll_once(all.as_mut(), &fall).is_ready());
}

#[test]
fn a_dropped_drained_future_is_forgotten() {
    let tracker = Tracker::new();
    let conn = tracker.register(server("x"));
    let flag = Flag::new();
    {
        let mut fut = pin!(tracker.drained());
        assert!(poll_once(fut.as_mut(), &flag).is_pending());
    }
    drop(conn);
    assert!(!flag.take(), "the waker of a dropped future is not kept");
}

/// A waker that sends a message for every wake: the waiting thread blocks on the channel, so
/// the future resolves only if the close really wakes it (no periodic re-polling).
struct Notify(mpsc::Sender<()>);

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        let _ = self.0.send(());
    }
}

#[test]
fn drained_polled_on_another_thread_wakes_when_this_thread_drops() {
    let tracker = Tracker::new();
    let conn = tracker.register(server("x"));
    let (status_tx, status) = mpsc::channel();
    let t = tracker.clone();
    let waiter = std::thread::spawn(move || {
        let (wake_tx, woken) = mpsc::channel();
        let waker = Waker::from(Arc::new(Notify(wake_tx)));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(t.drained());
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "a connection is open"
        );
        status_tx.send("pending").unwrap();
        // Bounded: at most a few spurious wakes, each waited for with a timeout.
        for _ in 0..16 {
            woken.recv_timeout(WAIT).expect("woken by the close");
            if fut.as_mut().poll(&mut cx).is_ready() {
                status_tx.send("ready").unwrap();
                return;
            }
        }
        panic!("still pending after 16 wakes");
    });
    assert_eq!(status.recv_timeout(WAIT), Ok("pending"));
    assert_eq!(tracker.len(), 1);
    drop(conn);
    assert_eq!(status.recv_timeout(WAIT), Ok("ready"));
    waiter.join().unwrap();
}

/// Counts closes, to show that close hooks have run when a drain future resolves.
struct CountCloses(Arc<AtomicUsize>);

impl Hook for CountCloses {
    fn on_close(&self, _: &CloseEvent<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn drained_resolves_after_connections_close_on_many_threads() {
    let closes = Arc::new(AtomicUsize::new(0));
    let tracker = Tracker::builder()
        .hook(CountCloses(Arc::clone(&closes)))
        .build();
    let batches: Vec<Vec<_>> = (0..4)
        .map(|_| (0..50).map(|_| tracker.register(server("x"))).collect())
        .collect();
    let (go_tx, go) = mpsc::channel::<()>();
    let go = Arc::new(std::sync::Mutex::new(go));
    let droppers: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let go = Arc::clone(&go);
            std::thread::spawn(move || {
                go.lock().unwrap().recv_timeout(WAIT).expect("go");
                drop(batch);
            })
        })
        .collect();
    let fut = tracker.drained();
    for _ in 0..4 {
        go_tx.send(()).unwrap();
    }
    block_on(fut);
    assert!(tracker.is_empty());
    assert_eq!(
        closes.load(Ordering::SeqCst),
        200,
        "every close hook ran first"
    );
    for d in droppers {
        d.join().unwrap();
    }
    // Ready again at once.
    let flag = Flag::new();
    assert_eq!(poll_once(pin!(tracker.drained()), &flag), Poll::Ready(()));
}
