//! [`Tracker`]: the registry of live connections, their totals, history and hooks.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::task::{Context, Poll};

use crate::hooks::hook::{Chain, Hook};
use crate::hooks::trace;
use crate::record::event::{AcceptEvent, DialEvent};
use crate::record::info::{Addr, ClosedConnection, ConnectionId, ConnectionInfo, Role};
use crate::track::clock::{self, Now};
use crate::track::config::ListenerConfig;
use crate::track::connection::{Connection, ConnectionRef, Entry, Registration};
use crate::track::registry::Registry;
use crate::track::state::TrackerInner;
use crate::track::stats::{CategoryStats, Stats};

/// Ids come from one process-wide counter: unique across trackers, never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The default number of closed connections kept by [`Tracker::recently_closed`].
pub const DEFAULT_HISTORY: usize = 64;

/// Keeps track of live connections.
///
/// A `Tracker` is a cheap handle (an `Arc` inside): clone it into every listener, dialer and
/// task that needs it. Adapters register connections through [`register`](Tracker::register)
/// and record I/O on the returned [`Connection`]; everything else reads.
///
/// ```
/// use conntrack_core::{Registration, Tracker};
///
/// let tracker = Tracker::new();
/// let conn = tracker.register(Registration::server(
///     "127.0.0.1:80".parse::<std::net::SocketAddr>().unwrap(),
///     "127.0.0.1:50000".parse::<std::net::SocketAddr>().unwrap(),
/// ));
/// conn.record_read(100);
/// assert_eq!(tracker.connections()[0].read_bytes, 100);
/// drop(conn);
/// assert!(tracker.is_empty());
/// ```
#[derive(Clone)]
pub struct Tracker {
    pub(crate) inner: Arc<TrackerInner>,
    pub(crate) registry: Arc<Registry<Entry>>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("len", &self.len())
            .field("hooks", &self.inner.hooks.load().hooks().len())
            .field("history", &self.inner.history.cap())
            .finish()
    }
}

/// Builds a [`Tracker`] with a history size and hooks.
#[derive(Default)]
pub struct TrackerBuilder {
    history: Option<usize>,
    recent_requests: usize,
    hooks: Vec<Arc<dyn Hook>>,
}

impl fmt::Debug for TrackerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerBuilder")
            .field("history", &self.history)
            .field("recent_requests", &self.recent_requests)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl TrackerBuilder {
    /// How many closed connections [`Tracker::recently_closed`] keeps (0 keeps none).
    /// Default [`DEFAULT_HISTORY`].
    #[must_use]
    pub fn history(mut self, n: usize) -> Self {
        self.history = Some(n);
        self
    }

    /// How many finished traced HTTP requests [`Tracker::recent_requests`] keeps for the
    /// debug page's waterfall (at most
    /// [`REQUEST_TIMINGS`](crate::activity::REQUEST_TIMINGS)), and as many served requests
    /// [`Tracker::recent_server_exchanges`] keeps for its server waterfall. Off (0) by
    /// default: keeping them costs a lock and a copy per request, and on the server side the
    /// timing of every exchange, as a hook that wants server exchanges does
    /// ([`Hook::wants_server_exchanges`]). Every traced response carries its own
    /// [`RequestTrace`](crate::RequestTrace) (its phase timings) either way.
    ///
    /// One setting for both rings: it is the debug page's "show me recent requests", and a
    /// process that only serves (or only calls) leaves the other ring empty at no cost.
    #[must_use]
    pub fn recent_requests(mut self, n: usize) -> Self {
        self.recent_requests = n.min(crate::track::activity::REQUEST_TIMINGS);
        self
    }

    /// Adds a hook for the tracker's whole life. Tracker hooks run after per-call scopes and
    /// listener/dialer configs.
    #[must_use]
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Builds the tracker.
    #[must_use]
    pub fn build(self) -> Tracker {
        let inner = Arc::new(TrackerInner::new(
            self.history.unwrap_or(DEFAULT_HISTORY),
            self.recent_requests,
            self.hooks,
        ));
        let registry = Arc::new(Registry::new(&inner));
        Tracker { inner, registry }
    }
}

impl Tracker {
    /// A tracker with the default history and no hooks.
    #[must_use]
    pub fn new() -> Self {
        TrackerBuilder::default().build()
    }

    /// A builder for history size and hooks.
    #[must_use]
    pub fn builder() -> TrackerBuilder {
        TrackerBuilder::default()
    }

    /// Every live connection, oldest first (by id). An owned snapshot.
    #[must_use]
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let now = Now::read();
        let entries = self.registry.collect_sorted();
        entries.iter().map(|(_, e)| e.info_at(&now)).collect()
    }

    /// Like [`connections`](Tracker::connections), without reading TCP statistics from the
    /// sockets (records carry the last ones read): for readers that do not show them.
    #[cfg(feature = "metrics")]
    pub(crate) fn connections_without_tcp(&self) -> Vec<ConnectionInfo> {
        let now = Now::read();
        let entries = self.registry.collect_sorted();
        entries
            .iter()
            .map(|(_, e)| e.info_with(&now, false))
            .collect()
    }

    /// Like [`connections`](Tracker::connections), into a buffer the caller keeps: `out` is
    /// cleared and refilled, reusing its allocation. A page or exporter that snapshots a large
    /// tracker periodically avoids allocating (and page-faulting in) tens of megabytes each
    /// time.
    pub fn connections_into(&self, out: &mut Vec<ConnectionInfo>) {
        out.clear();
        let now = Now::read();
        let entries = self.registry.collect_sorted();
        out.extend(entries.iter().map(|(_, e)| e.info_at(&now)));
    }

    /// A reference to one live connection, for marking exchanges on it or reading it without
    /// keeping it in the tracker (see [`ConnectionRef`]).
    #[must_use]
    pub fn lookup(&self, id: ConnectionId) -> Option<ConnectionRef> {
        self.registry.get(id.0).map(ConnectionRef::from_entry)
    }

    /// One live connection.
    #[must_use]
    pub fn get(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.registry.get(id.0).map(|e| e.info())
    }

    /// How many connections are live: a count kept as connections are registered and leave
    /// the tracker, so never more than were live at one instant (under a connection limit,
    /// never more than the limit), even while other threads open and close connections.
    #[must_use]
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Whether no connection is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Totals per (category, role), including connections that have closed.
    ///
    /// Every count is non-decreasing from one call to the next, whatever opens and closes in
    /// between, and `active == opened - closed` in every result. A connection counts as
    /// active until its close hooks have run.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut by_class = Vec::new();
        self.inner.stats.each(|c| {
            let (cat, role, cell) = (&c.category, c.role, &c.cell);
            let mut s = CategoryStats::empty(Arc::clone(cat), role);
            // Closes first: every close counted has its open counted by the time opens are
            // read, so a snapshot never shows more closed than opened.
            s.closed = cell.closed.sum();
            s.opened = cell.opened.sum();
            s.active = s.opened - s.closed;
            s.failed = cell.failed.load(Ordering::Relaxed);
            s.tls_handshake_failed = cell.tls_failed.load(Ordering::Relaxed);
            s.rejected = cell.rejected.load(Ordering::Relaxed);
            // Acquire, before the walk below: a closing connection's bytes seen here are
            // seen with its `closed` flag set, so the walk skips it (see `Entry::close`).
            s.read_bytes = cell.closed_read.load(Ordering::Acquire);
            s.write_bytes = cell.closed_write.load(Ordering::Acquire);
            by_class.push(s);
        });
        for (_, e) in self.registry.collect() {
            if e.is_closed() {
                continue;
            }
            if let Some(s) = by_class.get_mut(e.class as usize) {
                s.read_bytes += e.read_bytes();
                s.write_bytes += e.write_bytes();
            }
        }
        for (id, s) in (0..).zip(by_class.iter_mut()) {
            let cell = &self.inner.stats.class(id).cell;
            s.read_bytes = s
                .read_bytes
                .max(cell.shown_read.fetch_max(s.read_bytes, Ordering::Relaxed));
            s.write_bytes = s
                .write_bytes
                .max(cell.shown_write.fetch_max(s.write_bytes, Ordering::Relaxed));
        }
        let mut categories = by_class;
        categories.sort_by(|a, b| (&a.category, a.role).cmp(&(&b.category, b.role)));
        Stats {
            categories,
            hook_panics: self.inner.hook_panics.load(Ordering::Relaxed),
        }
    }

    /// The live connections per category and role at the moments a
    /// [`Snapshot`](crate::Snapshot) was taken, oldest first: at most
    /// [`ACTIVE_SAMPLES`](crate::activity::ACTIVE_SAMPLES), one a second at most. Nothing
    /// samples in the background, so there are samples only for the moments someone looked.
    #[must_use]
    pub fn active_samples(&self) -> Vec<crate::ActiveSample> {
        self.inner.activity.samples()
    }

    /// The phases of the most recently finished traced HTTP requests
    /// ([`RequestTrace`](crate::RequestTrace)), newest first, at most as many as
    /// [`TrackerBuilder::recent_requests`] asked for (none by default).
    #[must_use]
    pub fn recent_requests(&self) -> Vec<crate::RequestTiming> {
        self.inner.activity.requests()
    }

    /// The phases of the most recently finished server exchanges (requests served through
    /// the tokio adapter's `ExchangeLayer`, or timed with
    /// [`ConnectionRef::server_exchange`]), newest first, at most as many as
    /// [`TrackerBuilder::recent_requests`] asked for (none by default). With the ring on, every
    /// server exchange is timed, whether or not a hook wants
    /// [`on_server_exchange`](Hook::on_server_exchange).
    #[must_use]
    pub fn recent_server_exchanges(&self) -> Vec<crate::ServerExchangeTiming> {
        self.inner.activity.servers()
    }

    /// The most recently closed connections, newest first, at most the configured history.
    #[must_use]
    pub fn recently_closed(&self) -> Vec<ClosedConnection> {
        self.inner.history.records(&self.inner.stats)
    }

    /// Installs a hook until the returned handle is dropped or
    /// [`remove`](HookHandle::remove)d ([`keep`](HookHandle::keep) makes it permanent).
    ///
    /// Readers never lock: the hook list is swapped atomically (arc-swap).
    pub fn add_hook(&self, hook: impl Hook) -> HookHandle {
        let key = self.inner.add_hook(Arc::new(hook));
        HookHandle {
            tracker: Arc::downgrade(&self.inner),
            key: Some(key),
        }
    }

    /// Registers a new connection and returns its handle: the seam every adapter and custom
    /// integration uses.
    ///
    /// Fires `on_accept` (role server) or `on_dial` (role client) with the new connection, to
    /// the hooks of the current [`trace`](crate::trace) scope, then the registration's (config)
    /// hooks, then the tracker's.
    pub fn register(&self, mut reg: Registration) -> Connection {
        let category = reg.category.take();
        self.register_as(category.as_deref().unwrap_or(""), reg)
    }

    /// `register`, with the category given by reference so that the shared category string of
    /// a config is not cloned (a contended reference count) for every connection.
    pub(crate) fn register_as(&self, category: &str, mut reg: Registration) -> Connection {
        let scope = if reg.scoped {
            std::mem::take(&mut reg.scope)
        } else {
            trace::current()
        };
        let chain = std::mem::take(&mut reg.chain);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // Counts the open before the entry can be seen, so no reader finds more closed than
        // opened.
        let class = self.inner.stats.open(category, reg.role);
        let role = reg.role;
        let dial_started = reg.dial_started;
        let shard = self.registry.shard(id);
        let entry = Arc::new(Entry::new(id, Arc::clone(shard), reg, chain, &scope, class));
        shard.insert(id, Arc::clone(&entry));
        // A new entry has made no I/O yet: the coarse clock is not needed.
        if let Some(deadline) = entry.policy_deadline(entry.opened_nanos, 0) {
            self.inner
                .policy_registered(deadline.saturating_add(entry.policy_slack()));
        }
        if entry.has_hooks() {
            // The record as of the registration (no clock read: the entry's own time).
            let info = entry.info_at(&Now::read_at(entry.opened_nanos));
            match role {
                Role::Server => entry.fire(&mut |h| {
                    h.on_accept(&AcceptEvent {
                        category: &info.category,
                        local_addr: &info.local_addr,
                        connection: Some(&info),
                        error: None,
                        rejected: false,
                    });
                }),
                Role::Client => {
                    let duration = dial_started.map(clock::since).unwrap_or_default();
                    let target = info.target.as_deref().unwrap_or("");
                    entry.fire(&mut |h| {
                        h.on_dial(&DialEvent {
                            category: &info.category,
                            target,
                            connection: Some(&info),
                            error: None,
                            duration,
                        });
                    });
                }
            }
        }
        Connection::from_entry(entry)
    }

    /// Registers a connection accepted by a listener with `config`: a shorthand for
    /// `register(Registration::server(local, remote).listener_config(config))`.
    pub fn accepted(
        &self,
        config: &ListenerConfig,
        local: impl Into<Addr>,
        remote: impl Into<Addr>,
    ) -> Connection {
        let mut reg = Registration::server(local, remote);
        reg.chain = config.chain().clone();
        reg.policy = config.policy();
        self.register_as(config.category_name(), reg)
    }

    /// Reports a failed accept: counts it in [`CategoryStats::failed`] and fires `on_accept`
    /// with the error. The error itself stays the caller's to return.
    pub fn accept_failed(&self, config: &ListenerConfig, local: &Addr, error: &io::Error) {
        let category = config.category_name();
        self.inner.count_failed(category, Role::Server);
        let chain = config.chain().prepend(&trace::current());
        if self.inner.has_hooks(&chain) {
            self.inner.fire(&chain, &mut |h| {
                h.on_accept(&AcceptEvent {
                    category,
                    local_addr: local,
                    connection: None,
                    error: Some(error),
                    rejected: false,
                });
            });
        }
    }

    pub(crate) fn dial_failed(&self, category: &Arc<str>, chain: &Chain, ev: &DialEvent<'_>) {
        self.inner.count_failed(category, Role::Client);
        if self.inner.has_hooks(chain) {
            self.inner.fire(chain, &mut |h| h.on_dial(ev));
        }
    }

    /// A dial refused by its config's limit: counted as rejected (not failed), reported to
    /// `on_dial`.
    pub(crate) fn dial_rejected(&self, category: &Arc<str>, chain: &Chain, ev: &DialEvent<'_>) {
        let id = self.inner.stats.class_id(category, Role::Client);
        self.inner
            .stats
            .with(id, |c| c.cell.rejected.fetch_add(1, Ordering::Relaxed));
        if self.inner.has_hooks(chain) {
            self.inner.fire(chain, &mut |h| h.on_dial(ev));
        }
    }

    pub(crate) fn fire(&self, chain: &Chain, f: &mut dyn FnMut(&dyn Hook)) {
        if self.inner.has_hooks(chain) {
            self.inner.fire(chain, f);
        }
    }

    /// A future that resolves once no connection is live (at once if none is).
    ///
    /// Runtime-agnostic: it is woken by the close of the last connection. Pair it with
    /// stopping your listeners for a graceful shutdown.
    pub fn drained(&self) -> Drained {
        Drained::new(self, None)
    }

    /// Like [`drained`](Tracker::drained), for the connections of one category only.
    pub fn drained_category(&self, category: impl Into<Arc<str>>) -> Drained {
        Drained::new(self, Some(category.into()))
    }
}

/// A tracker-level hook installed by [`Tracker::add_hook`]; dropping it removes the hook.
#[must_use = "dropping a HookHandle removes its hook; call .keep() to keep it for good"]
pub struct HookHandle {
    tracker: Weak<TrackerInner>,
    key: Option<u64>,
}

impl HookHandle {
    /// Removes the hook now. Connections see the change at their next event.
    pub fn remove(mut self) {
        self.remove_now();
    }

    /// Keeps the hook installed for the tracker's whole life.
    pub fn keep(mut self) {
        self.key = None;
    }

    fn remove_now(&mut self) {
        if let (Some(key), Some(t)) = (self.key.take(), self.tracker.upgrade()) {
            t.remove_hook(key);
        }
    }
}

impl Drop for HookHandle {
    fn drop(&mut self) {
        self.remove_now();
    }
}

impl fmt::Debug for HookHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookHandle")
            .field("key", &self.key)
            .finish()
    }
}

/// The future returned by [`Tracker::drained`] and [`Tracker::drained_category`].
#[must_use = "futures do nothing unless polled"]
pub struct Drained {
    tracker: Arc<TrackerInner>,
    category: Option<Arc<str>>,
    key: u64,
    registered: bool,
}

impl Drained {
    fn new(tracker: &Tracker, category: Option<Arc<str>>) -> Self {
        let key = tracker.inner.next_waiter.fetch_add(1, Ordering::Relaxed);
        Drained {
            tracker: Arc::clone(&tracker.inner),
            category,
            key,
            registered: false,
        }
    }

    fn is_done(&self) -> bool {
        self.tracker.active(self.category.as_deref()) == 0
    }

    fn unregister(&mut self) {
        if self.registered {
            self.registered = false;
            let mut w = self
                .tracker
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            w.remove(&self.key);
            self.tracker.waiter_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Future for Drained {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.is_done() {
            this.unregister();
            return Poll::Ready(());
        }
        {
            let mut w = this
                .tracker
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            w.insert(this.key, cx.waker().clone());
            if !this.registered {
                this.registered = true;
                this.tracker.waiter_count.fetch_add(1, Ordering::SeqCst);
            }
        }
        // A close between the first check and the registration would have found no waiter.
        if this.is_done() {
            this.unregister();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl fmt::Debug for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drained")
            .field("category", &self.category)
            .finish()
    }
}
