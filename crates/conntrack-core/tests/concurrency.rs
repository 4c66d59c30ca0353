//! Eight threads registering, recording, cloning, closing and dropping handles in random order
//! while other threads snapshot the tracker and install and remove hooks: every snapshot is
//! sane, and the tracker ends empty with totals equal to exactly what was recorded.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use conntrack_core::{
    CloseEvent, Connection, ConnectionId, DialerConfig, Hook, ListenerConfig, ReadEvent, Role,
    Tracker, WriteEvent,
};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 2_500; // 20k operations in all

/// xorshift: a deterministic, dependency-free pseudo-random sequence per thread.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn pick(rng: &mut u64, len: usize) -> usize {
    usize::try_from(next(rng) % len as u64).unwrap()
}

/// Remembers every id that closed, and any id that closed twice.
#[derive(Default)]
struct Closes {
    ids: Mutex<HashSet<ConnectionId>>,
    twice: AtomicU64,
}

impl Hook for Closes {
    fn on_close(&self, ev: &CloseEvent<'_>) {
        if !self.ids.lock().unwrap().insert(ev.connection.id) {
            self.twice.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A per-I/O hook that only counts, installed and removed over and over during the run.
struct CountIo(Arc<AtomicU64>);

impl Hook for CountIo {
    fn on_read(&self, _: &ReadEvent<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn on_write(&self, _: &WriteEvent<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn wants_io_events(&self) -> bool {
        true
    }
}

/// What one worker did: per (category, role), registrations and the bytes it recorded on
/// handles that were still open.
#[derive(Default)]
struct Expected {
    opened: HashMap<(&'static str, Role), u64>,
    read: HashMap<(&'static str, Role), u64>,
    write: HashMap<(&'static str, Role), u64>,
    ids: Vec<ConnectionId>,
}

fn worker(t: u64, tracker: &Tracker, listen: &ListenerConfig, dial: &DialerConfig) -> Expected {
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
    let mut exp = Expected::default();
    // Handles with their class; several may share one connection.
    let mut live: Vec<(Connection, (&'static str, Role))> = Vec::new();
    let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    for _ in 0..PER_THREAD {
        let op = next(&mut rng) % 8;
        if live.is_empty() || op < 2 {
            let (conn, class) = if next(&mut rng) % 2 == 0 {
                (tracker.accepted(listen, a, b), ("in", Role::Server))
            } else {
                let d = tracker.dial(dial, "db:5432");
                (d.established(b, a), ("out", Role::Client))
            };
            *exp.opened.entry(class).or_default() += 1;
            exp.ids.push(conn.id());
            live.push((conn, class));
            continue;
        }
        let i = pick(&mut rng, live.len());
        match op {
            2 | 3 => {
                let n = next(&mut rng) % 10_000;
                let (conn, class) = &live[i];
                conn.record_read(usize::try_from(n).unwrap());
                // Bytes recorded on a closed handle are not counted: the connection is gone.
                if !conn.is_closed() {
                    *exp.read.entry(*class).or_default() += n;
                }
            }
            4 => {
                let n = next(&mut rng) % 10_000;
                let (conn, class) = &live[i];
                conn.record_write(usize::try_from(n).unwrap());
                if !conn.is_closed() {
                    *exp.write.entry(*class).or_default() += n;
                }
            }
            5 => {
                let clone = (live[i].0.clone(), live[i].1);
                live.push(clone);
            }
            6 => drop(live.swap_remove(i)),
            _ => {
                // An explicit close ends the connection for every clone; the clones stay
                // around and keep being used (and dropped) like any other handle.
                live[i].0.close();
            }
        }
    }
    // The rest go when the worker ends, in whatever order they are in.
    drop(live);
    exp
}

#[test]
fn concurrent_churn_ends_empty_with_exact_totals() {
    let closes = Arc::new(Closes::default());
    let tracker = Tracker::builder()
        .hook(Arc::clone(&closes))
        .history(16)
        .build();
    let listen = ListenerConfig::new().category("in");
    let dial = DialerConfig::new().category("out");
    let stop = Arc::new(AtomicBool::new(false));

    let snapshotter = {
        let tracker = tracker.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut snapshots = 0u64;
            // Bounded: stops when the workers are done, or after 50k snapshots at most.
            while !stop.load(Ordering::Relaxed) && snapshots < 50_000 {
                let infos = tracker.connections();
                let ids: Vec<_> = infos.iter().map(|i| i.id).collect();
                assert!(
                    ids.windows(2).all(|w| w[0] < w[1]),
                    "sorted, no duplicates: {ids:?}"
                );
                for i in &infos {
                    let class = (&*i.category, i.role);
                    assert!(
                        class == ("in", Role::Server) || class == ("out", Role::Client),
                        "{class:?}"
                    );
                }
                if let Some(i) = infos.first() {
                    if let Some(again) = tracker.get(i.id) {
                        assert_eq!(again.id, i.id);
                        assert!(again.read_bytes >= i.read_bytes, "bytes only grow");
                    }
                }
                let stats = tracker.stats();
                for c in &stats.categories {
                    assert!(c.closed <= c.opened, "{c:?}");
                    assert_eq!(c.active, c.opened - c.closed, "{c:?}");
                }
                snapshots += 1;
            }
            snapshots
        })
    };

    let io_events = Arc::new(AtomicU64::new(0));
    let toggler = {
        let tracker = tracker.clone();
        let stop = Arc::clone(&stop);
        let io_events = Arc::clone(&io_events);
        thread::spawn(move || {
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let h = tracker.add_hook(CountIo(Arc::clone(&io_events)));
                thread::yield_now();
                drop(h);
            }
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (tracker, listen, dial) = (tracker.clone(), listen.clone(), dial.clone());
            thread::spawn(move || worker(t, &tracker, &listen, &dial))
        })
        .collect();
    let mut expected = Expected::default();
    for w in workers {
        let e = w.join().expect("worker");
        for (k, v) in e.opened {
            *expected.opened.entry(k).or_default() += v;
        }
        for (k, v) in e.read {
            *expected.read.entry(k).or_default() += v;
        }
        for (k, v) in e.write {
            *expected.write.entry(k).or_default() += v;
        }
        expected.ids.extend(e.ids);
    }
    stop.store(true, Ordering::Relaxed);
    let snapshots = snapshotter.join().expect("snapshotter");
    toggler.join().expect("toggler");
    assert!(snapshots > 0);

    assert_eq!(tracker.len(), 0, "every connection left the tracker");
    assert!(tracker.connections().is_empty());
    let stats = tracker.stats();
    for class in [("in", Role::Server), ("out", Role::Client)] {
        let s = stats.get(class.0, class.1).expect("class seen");
        let opened = expected.opened.get(&class).copied().unwrap_or(0);
        assert_eq!(
            (s.opened, s.closed, s.active),
            (opened, opened, 0),
            "{class:?}"
        );
        assert_eq!(
            s.read_bytes,
            expected.read.get(&class).copied().unwrap_or(0)
        );
        assert_eq!(
            s.write_bytes,
            expected.write.get(&class).copied().unwrap_or(0)
        );
    }
    assert_eq!(stats.categories.len(), 2);
    assert_eq!(stats.hook_panics, 0);

    let registered: HashSet<_> = expected.ids.iter().copied().collect();
    assert_eq!(registered.len(), expected.ids.len(), "ids are unique");
    assert_eq!(
        closes.twice.load(Ordering::SeqCst),
        0,
        "no connection closed twice"
    );
    assert_eq!(
        *closes.ids.lock().unwrap(),
        registered,
        "on_close fired once for every registration"
    );
    assert_eq!(tracker.recently_closed().len(), 16);
}

/// Each `CategoryStats` is one consistent reading: `closed <= opened` and
/// `active == opened - closed`, even while other threads open and close connections of that
/// category as fast as they can.
#[test]
fn stats_are_consistent_under_churn() {
    let tracker = Tracker::new();
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let (tracker, stop) = (tracker.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
                let listen = ListenerConfig::new().category("churn");
                // Bounded: until the reader is done, or 2M connections at most.
                for _ in 0..2_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    drop(tracker.accepted(&listen, a, a));
                }
            })
        })
        .collect();
    let mut seen = 0;
    for _ in 0..20_000 {
        let stats = tracker.stats();
        if let Some(c) = stats.get("churn", Role::Server) {
            assert!(c.closed <= c.opened, "{c:?}");
            assert_eq!(c.active, c.opened - c.closed, "{c:?}");
            seen += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    assert!(seen > 0);
    let c = tracker.stats().get("churn", Role::Server).cloned().unwrap();
    assert_eq!((c.active, c.closed), (0, c.opened));
}
