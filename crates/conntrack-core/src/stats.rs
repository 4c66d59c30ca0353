//! Totals that outlive connections, per (category, role).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::info::Role;

/// Counters of one (category, role), shared by the tracker and every connection in it.
#[derive(Debug, Default)]
pub(crate) struct StatCell {
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) tls_failed: AtomicU64,
    /// Bytes of connections that have closed; live bytes are added at snapshot time, so the
    /// hot path touches only its own connection's counters.
    pub(crate) closed_read: AtomicU64,
    pub(crate) closed_write: AtomicU64,
}

impl StatCell {
    pub(crate) fn active(&self) -> u64 {
        // `closed` is read first: a close between the two loads can only make `active` larger
        // for a moment, never wrap below zero.
        let closed = self.closed.load(Ordering::SeqCst);
        self.opened.load(Ordering::SeqCst).saturating_sub(closed)
    }
}

type CellMap = HashMap<Arc<str>, Arc<StatCell>>;

/// The cells by role and category. Reads are lock-free (arc-swap); a new category copies the
/// map once, under a lock that only writers take.
#[derive(Debug, Default)]
pub(crate) struct StatTable {
    by_role: [ArcSwap<CellMap>; 2],
    write: Mutex<()>,
}

const fn slot(role: Role) -> usize {
    match role {
        Role::Client => 0,
        Role::Server => 1,
    }
}

impl StatTable {
    pub(crate) fn cell(&self, category: &Arc<str>, role: Role) -> Arc<StatCell> {
        let map = &self.by_role[slot(role)];
        if let Some(c) = map.load().get(&**category) {
            return Arc::clone(c);
        }
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = map.load_full();
        if let Some(c) = current.get(&**category) {
            return Arc::clone(c);
        }
        let cell = Arc::new(StatCell::default());
        let mut next = (*current).clone();
        next.insert(Arc::clone(category), Arc::clone(&cell));
        map.store(Arc::new(next));
        cell
    }

    pub(crate) fn each(&self, mut f: impl FnMut(&Arc<str>, Role, &StatCell)) {
        for role in [Role::Client, Role::Server] {
            for (cat, cell) in self.by_role[slot(role)].load().iter() {
                f(cat, role, cell);
            }
        }
    }
}

/// Totals for one (category, role).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CategoryStats {
    /// The category (`""` when unset).
    pub category: Arc<str>,
    /// Client (dialed) or server (accepted).
    pub role: Role,
    /// Connections open now.
    pub active: u64,
    /// Connections registered since the tracker was made.
    pub opened: u64,
    /// Connections that have gone.
    pub closed: u64,
    /// Accepts or dials that failed (no connection was made).
    pub failed: u64,
    /// TLS handshakes that failed on connections of this category.
    pub tls_handshake_failed: u64,
    /// Bytes read, by open and closed connections.
    pub read_bytes: u64,
    /// Bytes written, by open and closed connections.
    pub write_bytes: u64,
}

impl CategoryStats {
    pub(crate) fn empty(category: Arc<str>, role: Role) -> Self {
        CategoryStats {
            category,
            role,
            active: 0,
            opened: 0,
            closed: 0,
            failed: 0,
            tls_handshake_failed: 0,
            read_bytes: 0,
            write_bytes: 0,
        }
    }

    fn add(&mut self, o: &CategoryStats) {
        self.active += o.active;
        self.opened += o.opened;
        self.closed += o.closed;
        self.failed += o.failed;
        self.tls_handshake_failed += o.tls_handshake_failed;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
    }
}

/// A tracker's totals, from [`Tracker::stats`](crate::Tracker::stats).
///
/// Counts are exact once the connections they describe are quiet; while connections open and
/// close concurrently a total may lag by the connections in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// One entry per (category, role) seen, sorted by category then role.
    pub categories: Vec<CategoryStats>,
    /// Panics caught in hooks (the hook's call was abandoned; nothing else was).
    pub hook_panics: u64,
}

impl Stats {
    /// The entry for a (category, role), if any connection of it was ever seen.
    #[must_use]
    pub fn get(&self, category: &str, role: Role) -> Option<&CategoryStats> {
        self.categories
            .iter()
            .find(|c| &*c.category == category && c.role == role)
    }

    /// Every category and role summed (the `category` of the result is `"*"`; `role` is
    /// [`Role::Server`] and meaningless).
    #[must_use]
    pub fn total(&self) -> CategoryStats {
        let mut t = CategoryStats::empty(Arc::from("*"), Role::Server);
        for c in &self.categories {
            t.add(c);
        }
        t
    }

    /// Every role of one category summed (`role` is meaningless).
    #[must_use]
    pub fn category(&self, category: &str) -> CategoryStats {
        let mut t = CategoryStats::empty(Arc::from(category), Role::Server);
        for c in self.categories.iter().filter(|c| &*c.category == category) {
            t.add(c);
        }
        t
    }
}
