//! Totals that outlive connections, per (category, role).

use std::cell::Cell;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;

use crate::record::info::Role;
use crate::track::ids::IdHasher;

/// Counters of one (category, role), shared by the tracker and every connection in it.
#[derive(Debug, Default)]
pub(crate) struct StatCell {
    pub(crate) opened: Striped,
    pub(crate) closed: Striped,
    pub(crate) failed: AtomicU64,
    pub(crate) tls_failed: AtomicU64,
    /// Connections accepted and closed at once by a limit or a shutdown.
    pub(crate) rejected: AtomicU64,
    /// Bytes of connections that have closed; live bytes are added at snapshot time, so the
    /// hot path touches only its own connection's counters.
    pub(crate) closed_read: AtomicU64,
    pub(crate) closed_write: AtomicU64,
    /// The largest byte totals `stats()` has returned: a read that overlaps a close by a few
    /// instructions may find the closing connection's bytes neither live nor in the closed
    /// totals (never in both), and returns these instead, so totals never go back.
    pub(crate) shown_read: AtomicU64,
    pub(crate) shown_write: AtomicU64,
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
    /// Adds one. SeqCst, because the drain futures pair with it (see `Entry::close`).
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

const fn slot(role: Role) -> u8 {
    match role {
        Role::Client => 0,
        Role::Server => 1,
    }
}

fn hash(category: &str, role: Role) -> usize {
    let mut h = IdHasher::default();
    h.write(category.as_bytes());
    h.write(&[slot(role)]);
    let h = h.finish();
    #[allow(clippy::cast_possible_truncation)]
    let h = (h ^ (h >> 29)) as usize;
    h
}

/// Class ids by (category, role): an open-addressing table whose slots are written once.
/// Readers probe without a lock; the one writer (holding [`StatTable::write`]) fills a free
/// slot in place, or, at half full, builds a table twice the size and publishes it, so adding
/// a class costs O(1) amortised whatever the number of classes.
#[derive(Debug)]
struct Index {
    slots: Box<[OnceLock<u32>]>,
}

impl Index {
    fn with_capacity(cap: usize) -> Self {
        Index {
            slots: (0..cap).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The slot holding the class, or the free slot where it would go.
    fn probe<'a>(
        &'a self,
        table: &StatTable,
        category: &str,
        role: Role,
    ) -> Result<u32, &'a OnceLock<u32>> {
        let mask = self.slots.len() - 1;
        let mut i = hash(category, role);
        loop {
            let slot = &self.slots[i & mask];
            match slot.get() {
                None => return Err(slot),
                Some(&id) => {
                    let c = table.class(id);
                    if c.role == role && &*c.category == category {
                        return Ok(id);
                    }
                }
            }
            i = i.wrapping_add(1);
        }
    }
}

/// Classes live in segments of doubling size (1, 2, 4, ...), each allocated once when the
/// first class of it arrives and never moved: a new class copies nothing.
const SEGMENTS: usize = 32;

/// One segment: its classes, each stored once.
type Segment = Box<[OnceLock<Box<Class>>]>;

/// The classes of a tracker, append-only. Reads take no lock and touch no reference count;
/// new classes are added under a lock that only writers take.
#[derive(Debug)]
pub(crate) struct StatTable {
    segments: [OnceLock<Segment>; SEGMENTS],
    /// Classes stored so far (published after the class is).
    len: AtomicU32,
    index: ArcSwap<Index>,
    write: Mutex<()>,
}

impl Default for StatTable {
    fn default() -> Self {
        StatTable {
            segments: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicU32::new(0),
            index: ArcSwap::from_pointee(Index::with_capacity(8)),
            write: Mutex::new(()),
        }
    }
}

const fn locate(id: u32) -> (usize, usize) {
    let n = id as u64 + 1;
    let k = 63 - n.leading_zeros() as usize;
    #[allow(clippy::cast_possible_truncation)]
    let off = (n - (1 << k)) as usize;
    (k, off)
}

impl StatTable {
    /// The class with index `id` (handed out only once the class is stored).
    pub(crate) fn class(&self, id: u32) -> &Class {
        let (k, off) = locate(id);
        self.segments[k]
            .get()
            .and_then(|s| s[off].get())
            .expect("a class id refers to a stored class")
    }

    /// The index of a (category, role), made on first use.
    ///
    /// Each thread remembers the class it last found for each role (a listener's or a
    /// dialer's connections come one after another, of one category): a hint, used only once
    /// the class it names is found to be this table's and of this (category, role), so a
    /// stale hint (another table, since dropped, at the same address) costs a probe, never a
    /// wrong class. A hit spares hashing the category and loading the index.
    pub(crate) fn class_id(&self, category: &str, role: Role) -> u32 {
        thread_local! {
            static LAST: Cell<[(usize, u32); 2]> = const { Cell::new([(0, u32::MAX); 2]) };
        }
        let me = std::ptr::from_ref(self) as usize;
        let r = usize::from(slot(role));
        let (table, id) = LAST.with(|l| l.get()[r]);
        if table == me && id < self.len.load(Ordering::Acquire) {
            let c = self.class(id);
            if c.role == role && *c.category == *category {
                return id;
            }
        }
        let id = match self.index.load().probe(self, category, role) {
            Ok(id) => id,
            Err(_) => self.add_class(category, role),
        };
        LAST.with(|l| {
            let mut last = l.get();
            last[r] = (me, id);
            l.set(last);
        });
        id
    }

    /// Counts a connection opened in a (category, role) and returns the class's index.
    pub(crate) fn open(&self, category: &str, role: Role) -> u32 {
        let id = self.class_id(category, role);
        self.class(id).cell.opened.incr();
        id
    }

    #[cold]
    fn add_class(&self, category: &str, role: Role) -> u32 {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let index = self.index.load_full();
        if let Ok(id) = index.probe(self, category, role) {
            return id;
        }
        let len = self.len.load(Ordering::Relaxed);
        let id = len;
        assert!(id < u32::MAX, "fewer than 2^32 categories");
        let (k, off) = locate(id);
        let segment =
            self.segments[k].get_or_init(|| (0..1usize << k).map(|_| OnceLock::new()).collect());
        let stored = segment[off].set(Box::new(Class {
            category: Arc::from(category),
            role,
            cell: StatCell::default(),
        }));
        debug_assert!(stored.is_ok(), "one writer at a time");
        self.len.store(len + 1, Ordering::Release);
        if (len as usize + 1) * 2 > index.slots.len() {
            // Half full: a table twice the size, with every class (this one too).
            let bigger = Index::with_capacity(index.slots.len() * 2);
            for i in 0..=len {
                let c = self.class(i);
                if let Err(slot) = bigger.probe(self, &c.category, c.role) {
                    let _ = slot.set(i);
                }
            }
            self.index.store(Arc::new(bigger));
            return id;
        }
        if let Err(slot) = index.probe(self, category, role) {
            let _ = slot.set(id);
        }
        id
    }

    /// Runs `f` on a class.
    pub(crate) fn with<R>(&self, id: u32, f: impl FnOnce(&Class) -> R) -> R {
        f(self.class(id))
    }

    /// Every class, in index order.
    pub(crate) fn each(&self, mut f: impl FnMut(&Class)) {
        for id in 0..self.len.load(Ordering::Acquire) {
            f(self.class(id));
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
    /// Connections refused by a connection limit or a shutdown: accepted and closed at once,
    /// never registered (so not in `opened`).
    pub rejected: u64,
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
            rejected: 0,
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
        self.rejected += o.rejected;
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
