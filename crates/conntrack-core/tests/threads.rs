//! Many threads registering, recording, cloning and dropping while another snapshots: the
//! tracker ends empty and its totals equal exactly what was recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use conntrack_core::{Connection, DialerConfig, ListenerConfig, RecordingHook, Role, Tracker};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 2_500;

/// xorshift: a deterministic, dependency-free pseudo-random sequence per thread.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn concurrent_churn_ends_empty_with_exact_totals() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).history(16).build();
    let listen = ListenerConfig::new().category("in");
    let dial = DialerConfig::new().category("out");
    let stop = Arc::new(AtomicBool::new(false));
    let (read_sum, write_sum) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    let snapshotter = {
        let tracker = tracker.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut snapshots = 0u64;
            // Bounded: stops when the workers are done, or after 100k snapshots at most.
            while !stop.load(Ordering::Relaxed) && snapshots < 100_000 {
                let infos = tracker.connections();
                let ids: Vec<_> = infos.iter().map(|i| i.id).collect();
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
                let stats = tracker.stats();
                for c in &stats.categories {
                    assert!(c.closed <= c.opened);
                }
                snapshots += 1;
            }
            snapshots
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (tracker, listen, dial) = (tracker.clone(), listen.clone(), dial.clone());
            let (read_sum, write_sum) = (Arc::clone(&read_sum), Arc::clone(&write_sum));
            thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
                let mut live: Vec<Connection> = Vec::new();
                let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
                for _ in 0..PER_THREAD {
                    match next(&mut rng) % 6 {
                        0 | 1 => live.push(if next(&mut rng) % 2 == 0 {
                            tracker.accepted(&listen, a, a)
                        } else {
                            tracker.dial(&dial, "x:1").established(a, a)
                        }),
                        2 if !live.is_empty() => {
                            let i = (next(&mut rng) as usize) % live.len();
                            let n = next(&mut rng) % 10_000;
                            live[i].record_read(n as usize);
                            read_sum.fetch_add(n, Ordering::Relaxed);
                        }
                        3 if !live.is_empty() => {
                            let i = (next(&mut rng) as usize) % live.len();
                            let n = next(&mut rng) % 10_000;
                            live[i].record_write(n as usize);
                            write_sum.fetch_add(n, Ordering::Relaxed);
                        }
                        4 if !live.is_empty() => {
                            let i = (next(&mut rng) as usize) % live.len();
                            let clone = live[i].clone();
                            live.push(clone);
                        }
                        5 if !live.is_empty() => {
                            let i = (next(&mut rng) as usize) % live.len();
                            let c = live.swap_remove(i);
                            if next(&mut rng) % 4 == 0 {
                                // An explicit close ends the connection for every handle:
                                // bytes recorded on a closed handle are not counted, so the
                                // program stops using its clones too.
                                let id = c.id();
                                c.close();
                                live.retain(|o| o.id() != id);
                            }
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    stop.store(true, Ordering::Relaxed);
    let snapshots = snapshotter.join().expect("snapshotter");
    assert!(snapshots > 0);

    assert_eq!(tracker.len(), 0, "every connection left the tracker");
    let stats = tracker.stats();
    let total = stats.total();
    assert_eq!(total.active, 0);
    assert_eq!(total.opened, total.closed);
    assert_eq!(total.read_bytes, read_sum.load(Ordering::Relaxed));
    assert_eq!(total.write_bytes, write_sum.load(Ordering::Relaxed));
    let opened = stats.get("in", Role::Server).map_or(0, |s| s.opened)
        + stats.get("out", Role::Client).map_or(0, |s| s.opened);
    assert_eq!(
        rec.count("accept") + rec.count("dial"),
        usize::try_from(opened).unwrap()
    );
    assert_eq!(
        rec.count("close"),
        usize::try_from(opened).unwrap(),
        "one close per connection"
    );
}
