//! The set of live connections: a map from id to entry, split into shards so that threads
//! registering and closing connections rarely meet on the same lock.
//!
//! Locks here are held only for a map insert, remove or a walk that clones `Arc`s; no hook,
//! allocation-heavy work or I/O ever runs under them, so they cannot be poisoned by user code.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 64;

/// Ids are sequential: a multiplicative hash spreads them over the table's buckets and control
/// bytes without SipHash's cost.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard<T> = HashMap<u64, Arc<T>, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
pub(crate) struct Registry<T> {
    shards: Box<[Mutex<Shard<T>>]>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl<T> Registry<T> {
    fn shard(&self, id: u64) -> MutexGuard<'_, Shard<T>> {
        #[allow(clippy::cast_possible_truncation)]
        let i = (id as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, id: u64, value: Arc<T>) {
        self.shard(id).insert(id, value);
    }

    /// Removes and returns the entry; `None` if it was already gone.
    pub(crate) fn remove(&self, id: u64) -> Option<Arc<T>> {
        self.shard(id).remove(&id)
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<T>> {
        self.shard(id).get(&id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Every entry with its id, in no particular order. Each shard is locked only while its
    /// `Arc`s are cloned out.
    pub(crate) fn collect(&self) -> Vec<(u64, Arc<T>)> {
        let mut out = Vec::with_capacity(self.len() + 16);
        for s in self.shards.iter() {
            let s = s.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(s.iter().map(|(id, e)| (*id, Arc::clone(e))));
        }
        out
    }

    /// Every entry, oldest (lowest id) first. Sorting the small `(id, Arc)` pairs before
    /// anything large is built keeps a 100k-entry snapshot from moving megabytes around.
    pub(crate) fn collect_sorted(&self) -> Vec<(u64, Arc<T>)> {
        let mut v = self.collect();
        v.sort_unstable_by_key(|(id, _)| *id);
        v
    }
}
