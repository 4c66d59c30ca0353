//! Model-checked races of the registry, the drain future and the hook list, on the real code
//! paths: built with `--cfg loom`, core's registry shards, drain waiters and hook list use
//! loom's locks and atomics (`src/track/sync.rs`), and loom runs each scenario under every
//! interleaving of them (up to its preemption bound).
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p conntrack-core --release --test loom
//! ```
//!
//! (`cargo xtask ci` runs it so.) The tracker's counters and clock stay on std's atomics, which
//! loom treats as plain memory: these models check interleavings (a close between a drain
//! future's check and its registration, a snapshot during a close, a hook removed while a
//! connection closes), not the memory orderings of the counters, which `tests/concurrency.rs`
//! and the proptest model cover on real threads.
#![cfg(loom)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use conntrack_core::{ConnectionId, RecordingHook, Registration, Tracker};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    // Enough to reach every race below (each needs one or two preemptions) while keeping the
    // run to seconds.
    b.preemption_bound = Some(3);
    b.check(f);
}

fn server(port: u16) -> Registration {
    let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let remote = SocketAddr::from(([127, 0, 0, 1], port));
    Registration::server(local, remote).category("m")
}

fn ids(tracker: &Tracker) -> Vec<ConnectionId> {
    tracker.connections().iter().map(|c| c.id).collect()
}

/// A waker that records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn close_races_snapshot_and_len() {
    model(|| {
        let tracker = Tracker::new();
        let a = tracker.register(server(1));
        let b = tracker.register(server(2));
        let (ida, idb) = (a.id(), b.id());
        let closer = thread::spawn(move || drop(a));
        // A snapshot during the close sees `a` or not, `b` always, sorted, once each.
        let seen = ids(&tracker);
        assert!(seen == [ida, idb] || seen == [idb], "{seen:?}");
        let n = tracker.len();
        assert!(n == 1 || n == 2);
        closer.join().unwrap();
        assert_eq!(ids(&tracker), [idb]);
        assert!(tracker.get(ida).is_none());
        drop(b);
        assert!(tracker.is_empty());
    });
}

#[test]
fn explicit_close_and_last_drop_close_once() {
    model(|| {
        let rec = RecordingHook::new();
        let tracker = Tracker::builder().hook(rec.clone()).build();
        let conn = tracker.register(server(1));
        let clone = conn.clone();
        let t = thread::spawn(move || clone.close());
        drop(conn);
        t.join().unwrap();
        assert!(tracker.is_empty());
        assert_eq!(
            rec.names(),
            ["accept", "close"],
            "one close, after the accept"
        );
        assert_eq!(tracker.stats().total().closed, 1);
    });
}

#[test]
fn drain_future_is_woken_by_a_racing_close() {
    model(|| {
        let tracker = Tracker::new();
        let conn = tracker.register(server(1));
        let closer = thread::spawn(move || drop(conn));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut drained = pin!(tracker.drained());
        let first = drained.as_mut().poll(&mut Context::from_waker(&waker));
        closer.join().unwrap();
        if first.is_pending() {
            // Pending means the close had not happened yet at the check: it must wake us.
            assert!(
                flag.0.load(Ordering::SeqCst),
                "a close after a pending poll woke nobody"
            );
        }
        let again = drained.as_mut().poll(&mut Context::from_waker(&waker));
        assert_eq!(again, Poll::Ready(()));
    });
}

#[test]
fn hook_removal_races_a_close() {
    model(|| {
        let tracker = Tracker::new();
        let rec = RecordingHook::new();
        let handle = tracker.add_hook(rec.clone());
        let conn = tracker.register(server(1));
        let remover = thread::spawn(move || handle.remove());
        drop(conn);
        remover.join().unwrap();
        // The close reached the hook or not, depending on the order; never twice, and never
        // without its accept.
        let names = rec.names();
        assert!(
            names == ["accept"] || names == ["accept", "close"],
            "{names:?}"
        );
        assert!(tracker.is_empty());
        // Once removed, the hook sees nothing more.
        drop(tracker.register(server(2)));
        assert_eq!(rec.names(), names);
    });
}

#[test]
fn register_races_snapshot() {
    model(|| {
        let tracker = Tracker::new();
        let first = tracker.register(server(1));
        let t2 = tracker.clone();
        let registrar = thread::spawn(move || t2.register(server(2)));
        let seen = ids(&tracker);
        assert!(seen.len() == 1 || seen.len() == 2);
        assert_eq!(seen[0], first.id());
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicate");
        let second = registrar.join().unwrap();
        assert_eq!(ids(&tracker), [first.id(), second.id()]);
        drop((first, second));
        assert!(tracker.is_empty());
    });
}
