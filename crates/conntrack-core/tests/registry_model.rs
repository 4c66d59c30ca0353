//! A model-based property test of the registry: random operation sequences against a simple
//! model (live ids with bytes and handle counts, totals per category), compared after every
//! operation.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use conntrack_core::{Connection, ConnectionId, Registration, Role, Tracker};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Register(u8, bool),
    Read(usize, u16),
    Write(usize, u16),
    Clone(usize),
    Drop(usize),
    Close(usize),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, any::<bool>()).prop_map(|(c, s)| Op::Register(c, s)),
        3 => (any::<usize>(), any::<u16>()).prop_map(|(i, n)| Op::Read(i, n)),
        2 => (any::<usize>(), any::<u16>()).prop_map(|(i, n)| Op::Write(i, n)),
        1 => any::<usize>().prop_map(Op::Clone),
        2 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Close),
        1 => Just(Op::Snapshot),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// Live entries: id -> (category, role, read, write).
    live: BTreeMap<ConnectionId, (String, Role, u64, u64)>,
    /// Totals per (category, role): opened, closed, read, write.
    totals: BTreeMap<(String, Role), (u64, u64, u64, u64)>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn registry_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let tracker = Tracker::builder().history(4).build();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut handles: Vec<Connection> = Vec::new();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Register(c, server) => {
                    let cat = format!("c{c}");
                    let role = if server { Role::Server } else { Role::Client };
                    let h = tracker.register(Registration::new(role).local_addr(a).remote_addr(a).category(cat.as_str()));
                    model.live.insert(h.id(), (cat.clone(), role, 0, 0));
                    model.totals.entry((cat, role)).or_default().0 += 1;
                    handles.push(h);
                }
                Op::Read(i, n) | Op::Write(i, n) if !handles.is_empty() => {
                    let h = &handles[i % handles.len()];
                    let is_read = matches!(op, Op::Read(..));
                    if is_read { h.record_read(n.into()) } else { h.record_write(n.into()) }
                    if let Some(e) = model.live.get_mut(&h.id()) {
                        if is_read { e.2 += u64::from(n) } else { e.3 += u64::from(n) }
                    }
                }
                Op::Clone(i) if !handles.is_empty() => {
                    let h = handles[i % handles.len()].clone();
                    handles.push(h);
                }
                Op::Drop(i) | Op::Close(i) if !handles.is_empty() => {
                    let h = handles.swap_remove(i % handles.len());
                    let id = h.id();
                    let last = !handles.iter().any(|o| o.id() == id);
                    if matches!(op, Op::Close(_)) { h.close() }
                    let gone = last || matches!(op, Op::Close(_));
                    drop(h);
                    if gone {
                        if let Some((cat, role, r, w)) = model.live.remove(&id) {
                            let t = model.totals.get_mut(&(cat, role)).unwrap();
                            t.1 += 1;
                            t.2 += r;
                            t.3 += w;
                        }
                    }
                }
                _ => {}
            }
            // Compare after every operation.
            prop_assert_eq!(tracker.len(), model.live.len());
            let snap = tracker.connections();
            let got: Vec<_> = snap.iter().map(|i| (i.id, i.category.to_string(), i.role, i.read_bytes, i.write_bytes)).collect();
            let want: Vec<_> = model.live.iter().map(|(id, (c, r, rb, wb))| (*id, c.clone(), *r, *rb, *wb)).collect();
            prop_assert_eq!(got, want);
            let stats = tracker.stats();
            for ((cat, role), (opened, closed, r, w)) in &model.totals {
                let s = stats.get(cat, *role).expect("category seen");
                let live: Vec<_> = model.live.values().filter(|e| &e.0 == cat && e.1 == *role).collect();
                prop_assert_eq!((s.opened, s.closed, s.active), (*opened, *closed, live.len() as u64));
                prop_assert_eq!(s.read_bytes, r + live.iter().map(|e| e.2).sum::<u64>());
                prop_assert_eq!(s.write_bytes, w + live.iter().map(|e| e.3).sum::<u64>());
            }
        }
        drop(handles);
        prop_assert!(tracker.is_empty());
    }
}
