//! The set of live connections: a map from id to entry, split into shards so that threads
//! registering and closing connections rarely meet on the same lock.
//!
//! The map is generic over its entry (the connection's `Entry`), so this module knows nothing of
//! connections: they sit above it and hold the `Arc` of their shard.
//!
//! Locks here are held only for a map insert, remove or a walk that clones `Arc`s; no hook,
//! allocation-heavy work or I/O ever runs under them, so they cannot be poisoned by user code.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::track::ids::IdHasher;
use crate::track::state::TrackerInner;
use crate::track::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;

type Map<E> = HashMap<u64, Arc<E>, BuildHasherDefault<IdHasher>>;

/// One shard: a locked map, plus the tracker state every entry in it needs. Entries hold an
/// `Arc` to their shard rather than to the tracker, so registering and closing on different
/// shards touch different reference counts.
#[repr(align(128))]
pub(crate) struct Shard<E> {
    map: Mutex<Map<E>>,
    pub(crate) tracker: Arc<TrackerInner>,
}

impl<E> Shard<E> {
    fn lock(&self) -> MutexGuard<'_, Map<E>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, id: u64, value: Arc<E>) {
        if self.lock().insert(id, value).is_none() {
            self.tracker.live.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes and returns the entry; `None` if it was already gone. The count goes down
    /// before the caller gives back the connection's limit slot, so `Tracker::len` never
    /// exceeds the limit.
    pub(crate) fn remove(&self, id: u64) -> Option<Arc<E>> {
        let removed = self.lock().remove(&id);
        if removed.is_some() {
            self.tracker.live.0.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }
}

impl<E> fmt::Debug for Shard<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("len", &self.lock().len())
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct Registry<E> {
    shards: Box<[Arc<Shard<E>>]>,
}

impl<E> Registry<E> {
    pub(crate) fn new(tracker: &Arc<TrackerInner>) -> Self {
        Registry {
            shards: (0..SHARDS)
                .map(|_| {
                    Arc::new(Shard {
                        map: Mutex::new(Map::default()),
                        tracker: Arc::clone(tracker),
                    })
                })
                .collect(),
        }
    }

    pub(crate) fn shard(&self, id: u64) -> &Arc<Shard<E>> {
        #[allow(clippy::cast_possible_truncation)]
        let i = (id as usize) % SHARDS;
        &self.shards[i]
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<E>> {
        self.shard(id).lock().get(&id).cloned()
    }

    /// How many entries there are (the count kept as they enter and leave their shards).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .first()
            .map_or(0, |s| s.tracker.live.0.load(Ordering::Relaxed))
    }

    /// Every entry with its id, in no particular order. Each shard is locked only while its
    /// `Arc`s are cloned out.
    pub(crate) fn collect(&self) -> Vec<(u64, Arc<E>)> {
        let mut out = Vec::with_capacity(self.len() + 16);
        for s in self.shards.iter() {
            out.extend(s.lock().iter().map(|(id, e)| (*id, Arc::clone(e))));
        }
        out
    }

    /// Every entry, oldest (lowest id) first. Sorting the small `(id, Arc)` pairs before
    /// anything large is built keeps a 100k-entry snapshot from moving megabytes around.
    pub(crate) fn collect_sorted(&self) -> Vec<(u64, Arc<E>)> {
        let mut v = self.collect();
        v.sort_unstable_by_key(|(id, _)| *id);
        v
    }
}
