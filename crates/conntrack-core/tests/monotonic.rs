//! `stats()` never goes back: threads close connections whose `on_close` hooks are slow while
//! a reader polls `stats()`; every count of every (category, role) is non-decreasing from one
//! read to the next, `active == opened - closed` in every read, and the final totals are
//! exact.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use conntrack_core::{Callbacks, Registration, Role, Tracker};

const CLOSERS: u64 = 4;
const PER_THREAD: u64 = 400;
const CATEGORIES: [&str; 3] = ["a", "b", "c"];

fn reg(i: u64) -> Registration {
    let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let remote: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let r = if i % 2 == 0 {
        Registration::server(local, remote)
    } else {
        Registration::client(local, remote)
    };
    r.category(CATEGORIES[usize::try_from(i % 3).unwrap()])
}

/// The counts of one read, per (category, role).
type Reading = HashMap<(String, Role), [u64; 5]>;

fn read(tracker: &Tracker) -> Reading {
    tracker
        .stats()
        .categories
        .iter()
        .map(|c| {
            assert_eq!(
                c.active,
                c.opened - c.closed,
                "active == opened - closed in {c:?}"
            );
            (
                (c.category.to_string(), c.role),
                [c.opened, c.closed, c.active, c.read_bytes, c.write_bytes],
            )
        })
        .collect()
}

#[test]
fn stats_never_go_back_while_slow_close_hooks_run() {
    // The close hook takes a while (yielding, so the reader gets the CPU while closes are
    // between "left the registry" and "counted as closed").
    let tracker = Tracker::builder()
        .hook(Callbacks::new().on_close(|_| {
            for _ in 0..20 {
                thread::yield_now();
            }
        }))
        .build();
    let done = Arc::new(AtomicBool::new(false));

    let closers: Vec<_> = (0..CLOSERS)
        .map(|t| {
            let tracker = tracker.clone();
            thread::spawn(move || {
                // A few connections stay open for a while, so live and closed bytes mix.
                let mut open = Vec::new();
                for i in 0..PER_THREAD {
                    let n = t * PER_THREAD + i;
                    let c = tracker.register(reg(n));
                    c.record_read(usize::try_from(n % 97 + 1).unwrap());
                    c.record_write(usize::try_from(n % 89 + 1).unwrap());
                    open.push(c);
                    if open.len() > 8 {
                        let c = open.remove(usize::try_from(n % 8).unwrap());
                        c.record_read(1);
                        drop(c);
                    }
                }
                drop(open);
            })
        })
        .collect();

    let reader = {
        let tracker = tracker.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut last: Reading = HashMap::new();
            let mut reads = 0u64;
            // Bounded: the closers finish in well under a second; the cap is a safety net.
            while !done.load(Ordering::Acquire) && reads < 1_000_000 {
                let now = read(&tracker);
                for (key, prev) in &last {
                    let cur = now.get(key).expect("a (category, role) never disappears");
                    for (i, name) in ["opened", "closed", "active", "read", "write"]
                        .iter()
                        .enumerate()
                    {
                        if *name == "active" {
                            continue; // goes up and down, by design
                        }
                        assert!(
                            cur[i] >= prev[i],
                            "{key:?} {name} went back: {} then {}",
                            prev[i],
                            cur[i]
                        );
                    }
                }
                last = now;
                reads += 1;
            }
            reads
        })
    };

    for c in closers {
        c.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let reads = reader.join().unwrap();
    assert!(reads > 0);

    // Exact at rest: every connection closed, every byte counted once.
    let total = tracker.stats().total();
    let n = CLOSERS * PER_THREAD;
    assert_eq!((total.opened, total.closed, total.active), (n, n, 0));
    let want_read: u64 = (0..n).map(|n| n % 97 + 1).sum::<u64>() + (n - 8 * CLOSERS);
    let want_write: u64 = (0..n).map(|n| n % 89 + 1).sum();
    assert_eq!(
        (total.read_bytes, total.write_bytes),
        (want_read, want_write)
    );
    assert!(tracker.is_empty());
}
