//! Totals that outlive connections, per (category, role).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::info::Role;
use crate::registry::IdHasher;

/// Counters of one (category, role), shared by the tracker and every connection in it.
#[derive(Debug, Default)]
pub(crate) struct StatCell {
    pub(crate) opened: Striped,
    pub(crate) closed: Striped,
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
        let closed = self.closed.sum();
        self.opened.sum().saturating_sub(closed)
    }
}

const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// A counter split over cache lines, each thread adding to its own stripe: threads opening and
/// closing connections of one category at once do not fight over one line. Reads sum the
/// stripes.
#[derive(Debug, Default)]
pub(crate) struct Striped([Padded; STRIPES]);

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

impl Striped {
    /// Adds one. SeqCst, because the drain futures and the clock ticker pair with it (see
    /// `Tracker::register` and `Entry::close`).
    pub(crate) fn incr(&self) {
        self.0[stripe()].0.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::SeqCst)).sum()
    }
}

/// One (category, role): its name and counters. Entries refer to their class by index, not by
/// `Arc`, so that registering and closing connections of one category on several threads does
/// not fight over a shared reference count.
#[derive(Debug)]
pub(crate) struct Class {
    pub(crate) category: Arc<str>,
    pub(crate) role: Role,
    pub(crate) cell: StatCell,
}

/// Categories are short strings looked up on every registration: a cheap hasher beats SipHash.
type Index = HashMap<Arc<str>, u32, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Default)]
struct Table {
    classes: Vec<Arc<Class>>,
    by_role: [Index; 2],
}

/// The classes of a tracker, append-only. Reads are lock-free (arc-swap); a new class copies
/// the table once, under a lock that only writers take.
#[derive(Debug, Default)]
pub(crate) struct StatTable {
    table: ArcSwap<Table>,
    write: Mutex<()>,
}

const fn slot(role: Role) -> usize {
    match role {
        Role::Client => 0,
        Role::Server => 1,
    }
}

impl StatTable {
    /// The index of a (category, role), made on first use.
    pub(crate) fn class_id(&self, category: &str, role: Role) -> u32 {
        if let Some(id) = self.table.load().by_role[slot(role)].get(category) {
            return *id;
        }
        self.add_class(category, role)
    }

    /// Counts a connection opened in a (category, role) and returns the class's index: one
    /// table load for both, on the registration path.
    pub(crate) fn open(&self, category: &str, role: Role) -> u32 {
        {
            let table = self.table.load();
            if let Some(&id) = table.by_role[slot(role)].get(category) {
                table.classes[id as usize].cell.opened.incr();
                return id;
            }
        }
        let id = self.add_class(category, role);
        self.with(id, |c| c.cell.opened.incr());
        id
    }

    #[cold]
    fn add_class(&self, category: &str, role: Role) -> u32 {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.table.load_full();
        if let Some(id) = current.by_role[slot(role)].get(category) {
            return *id;
        }
        let id = u32::try_from(current.classes.len()).expect("fewer than 2^32 categories");
        let name: Arc<str> = Arc::from(category);
        let mut classes = current.classes.clone();
        classes.push(Arc::new(Class {
            category: Arc::clone(&name),
            role,
            cell: StatCell::default(),
        }));
        let mut by_role = current.by_role.clone();
        by_role[slot(role)].insert(name, id);
        self.table.store(Arc::new(Table { classes, by_role }));
        id
    }

    /// Runs `f` on a class without touching any reference count.
    pub(crate) fn with<R>(&self, id: u32, f: impl FnOnce(&Class) -> R) -> R {
        f(&self.table.load().classes[id as usize])
    }

    pub(crate) fn each(&self, mut f: impl FnMut(&Class)) {
        for c in &self.table.load().classes {
            f(c);
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
