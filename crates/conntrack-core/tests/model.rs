//! A model-based property test of the tracker: random sequences of registrations, reads,
//! writes, clones, drops, closes and snapshots are run against the tracker and against a
//! simple model (live ids with their bytes and handle counts, totals per category and role,
//! the bounded history), and the two are compared after every operation.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use conntrack_core::{CloseEvent, Connection, ConnectionId, Hook, Registration, Role, Tracker};
use proptest::prelude::*;

const CATEGORIES: [&str; 3] = ["", "api", "db"];
const HISTORY: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Register { category: usize, server: bool },
    Read { handle: usize, n: u16 },
    Write { handle: usize, n: u16 },
    Clone { handle: usize },
    Drop { handle: usize },
    Close { handle: usize },
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CATEGORIES.len(), any::<bool>())
            .prop_map(|(category, server)| Op::Register { category, server }),
        3 => (any::<usize>(), any::<u16>()).prop_map(|(handle, n)| Op::Read { handle, n }),
        3 => (any::<usize>(), any::<u16>()).prop_map(|(handle, n)| Op::Write { handle, n }),
        2 => any::<usize>().prop_map(|handle| Op::Clone { handle }),
        2 => any::<usize>().prop_map(|handle| Op::Drop { handle }),
        1 => any::<usize>().prop_map(|handle| Op::Close { handle }),
        1 => Just(Op::Snapshot),
    ]
}

/// One live connection in the model.
#[derive(Debug, Clone)]
struct Live {
    class: (&'static str, Role),
    read: u64,
    write: u64,
    /// How many handles to it the test still holds.
    handles: usize,
}

/// Totals of one (category, role).
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    opened: u64,
    closed: u64,
    read: u64,
    write: u64,
}

#[derive(Debug, Default)]
struct Model {
    live: BTreeMap<ConnectionId, Live>,
    /// Closed connections whose handles are still held (recording on them changes nothing).
    closed_with_handles: BTreeMap<ConnectionId, usize>,
    totals: BTreeMap<(&'static str, Role), Totals>,
    /// Newest first: (id, final read, final write).
    history: VecDeque<(ConnectionId, u64, u64)>,
    closes: u64,
}

impl Model {
    fn close(&mut self, id: ConnectionId) {
        if let Some(l) = self.live.remove(&id) {
            let t = self.totals.get_mut(&l.class).unwrap();
            t.closed += 1;
            t.read += l.read;
            t.write += l.write;
            self.history.push_front((id, l.read, l.write));
            self.history.truncate(HISTORY);
            self.closes += 1;
            if l.handles > 0 {
                self.closed_with_handles.insert(id, l.handles);
            }
        }
    }

    /// One handle to `id` goes.
    fn drop_handle(&mut self, id: ConnectionId) {
        if let Some(l) = self.live.get_mut(&id) {
            l.handles -= 1;
            if l.handles == 0 {
                self.close(id);
            }
        } else if let Some(n) = self.closed_with_handles.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.closed_with_handles.remove(&id);
            }
        }
    }
}

struct CountCloses(Arc<AtomicU64>);

impl Hook for CountCloses {
    fn on_close(&self, _: &CloseEvent<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn check(tracker: &Tracker, model: &Model, closes: &AtomicU64) -> Result<(), TestCaseError> {
    prop_assert_eq!(tracker.len(), model.live.len());
    prop_assert_eq!(tracker.is_empty(), model.live.is_empty());

    let got: Vec<_> = tracker
        .connections()
        .iter()
        .map(|i| {
            (
                i.id,
                i.category.to_string(),
                i.role,
                i.read_bytes,
                i.write_bytes,
            )
        })
        .collect();
    let want: Vec<_> = model
        .live
        .iter()
        .map(|(id, l)| (*id, l.class.0.to_owned(), l.class.1, l.read, l.write))
        .collect();
    prop_assert_eq!(got, want);

    let stats = tracker.stats();
    for (class, t) in &model.totals {
        let s = stats.get(class.0, class.1).expect("class seen");
        let live: Vec<_> = model.live.values().filter(|l| l.class == *class).collect();
        prop_assert_eq!(
            (s.opened, s.closed, s.active),
            (t.opened, t.closed, live.len() as u64),
            "{:?}",
            class
        );
        prop_assert_eq!(
            s.read_bytes,
            t.read + live.iter().map(|l| l.read).sum::<u64>()
        );
        prop_assert_eq!(
            s.write_bytes,
            t.write + live.iter().map(|l| l.write).sum::<u64>()
        );
    }
    prop_assert_eq!(stats.categories.len(), model.totals.len());
    prop_assert_eq!(closes.load(Ordering::Relaxed), model.closes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tracker_matches_the_model(ops in proptest::collection::vec(op(), 1..100)) {
        let closes = Arc::new(AtomicU64::new(0));
        let tracker = Tracker::builder()
            .history(HISTORY)
            .hook(CountCloses(Arc::clone(&closes)))
            .build();
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let mut handles: Vec<Connection> = Vec::new();
        let mut model = Model::default();
        for op in ops {
            let at = |i: usize| i % handles.len();
            match op {
                Op::Register { category, server } => {
                    let role = if server { Role::Server } else { Role::Client };
                    let class = (CATEGORIES[category], role);
                    let h = tracker.register(Registration::new(role).local_addr(a).remote_addr(b).category(class.0));
                    model.live.insert(h.id(), Live { class, read: 0, write: 0, handles: 1 });
                    model.totals.entry(class).or_default().opened += 1;
                    handles.push(h);
                }
                Op::Read { handle, n } if !handles.is_empty() => {
                    let h = &handles[at(handle)];
                    h.record_read(n.into());
                    if let Some(l) = model.live.get_mut(&h.id()) {
                        l.read += u64::from(n);
                    }
                }
                Op::Write { handle, n } if !handles.is_empty() => {
                    let h = &handles[at(handle)];
                    h.record_write(n.into());
                    if let Some(l) = model.live.get_mut(&h.id()) {
                        l.write += u64::from(n);
                    }
                }
                Op::Clone { handle } if !handles.is_empty() => {
                    let h = handles[at(handle)].clone();
                    if let Some(l) = model.live.get_mut(&h.id()) {
                        l.handles += 1;
                    } else if let Some(n) = model.closed_with_handles.get_mut(&h.id()) {
                        *n += 1;
                    }
                    handles.push(h);
                }
                Op::Drop { handle } if !handles.is_empty() => {
                    let h = handles.swap_remove(at(handle));
                    let id = h.id();
                    drop(h);
                    model.drop_handle(id);
                }
                Op::Close { handle } if !handles.is_empty() => {
                    let h = &handles[at(handle)];
                    h.close();
                    prop_assert!(h.is_closed());
                    model.close(h.id());
                }
                Op::Snapshot => {
                    let got: Vec<_> = tracker
                        .recently_closed()
                        .iter()
                        .map(|c| (c.info.id, c.info.read_bytes, c.info.write_bytes))
                        .collect();
                    prop_assert_eq!(got, Vec::from(model.history.clone()));
                    for (id, l) in &model.live {
                        let info = tracker.get(*id).expect("live id");
                        prop_assert_eq!((info.read_bytes, info.write_bytes), (l.read, l.write));
                    }
                    for id in model.closed_with_handles.keys() {
                        prop_assert!(tracker.get(*id).is_none());
                    }
                    let total = tracker.stats().total();
                    let opened: u64 = model.totals.values().map(|t| t.opened).sum();
                    prop_assert_eq!((total.opened, total.active), (opened, model.live.len() as u64));
                }
                _ => {}
            }
            for h in &handles {
                prop_assert_eq!(h.is_closed(), !model.live.contains_key(&h.id()));
            }
            check(&tracker, &model, &closes)?;
        }
        drop(handles);
        prop_assert!(tracker.is_empty());
        prop_assert_eq!(closes.load(Ordering::Relaxed), model.totals.values().map(|t| t.opened).sum::<u64>());
    }
}
