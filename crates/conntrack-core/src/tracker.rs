//! [`Tracker`]: the registry of live connections, their totals, history and hooks.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;

use crate::clock::{self, Now};
use crate::config::{DialerConfig, ListenerConfig};
use crate::connection::{Connection, ConnectionRef, Entry, Registration, Snapshot};
use crate::dial::Dial;
use crate::event::{AcceptEvent, DialEvent};
use crate::hook::{Chain, Hook};
use crate::info::{Addr, CloseReason, ClosedConnection, ConnectionId, ConnectionInfo, Role};
use crate::registry::Registry;
use crate::stats::{CategoryStats, StatTable, Stats};
use crate::sync::{AtomicBool, Mutex};
use crate::trace;

/// Ids come from one process-wide counter: unique across trackers, never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The default number of closed connections kept by [`Tracker::recently_closed`].
pub const DEFAULT_HISTORY: usize = 64;

pub(crate) struct TrackerInner {
    hooks: ArcSwap<Chain>,
    hook_list: Mutex<Vec<(u64, Arc<dyn Hook>)>>,
    next_hook_key: AtomicU64,
    io_hooks: AtomicBool,
    /// Whether the tracker-level chain is non-empty: one relaxed load instead of an arc-swap
    /// load on paths that only need to know whether to build an event at all.
    any_hooks: AtomicBool,
    /// Whether a tracker-level hook wants HTTP request events.
    request_hooks: AtomicBool,
    /// Whether a tracker-level hook wants server exchanges.
    server_hooks: AtomicBool,
    pub(crate) stats: StatTable,
    hook_panics: AtomicU64,
    history_cap: usize,
    /// Closed connections, newest first, as copied at close; records are built when read.
    history: Mutex<VecDeque<(Snapshot, Option<io::Error>, CloseReason)>>,
    waiters: Mutex<HashMap<u64, Waker>>,
    waiter_count: AtomicUsize,
    next_waiter: AtomicU64,
    /// What the debug page draws: live-connection samples and traced request timings.
    pub(crate) activity: crate::activity::Rings,
    /// Set by `shutdown`: listeners refuse new connections, idle ones close.
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
    /// The shutdown signals handed out ([`Tracker::shutdown_signal`]) and their wakers.
    pub(crate) signal: crate::control::SignalState,
    /// The policy enforcer's next wake-up (nanos on the process clock), `u64::MAX` when it
    /// waits for a policy-bearing connection or is checking (then lowered by each
    /// registration due earlier, see `policy_registered`); and its waker.
    pub(crate) sweep_at: AtomicU64,
    pub(crate) sweep_waker: std::sync::Mutex<Option<Waker>>,
}

impl TrackerInner {
    fn new(history_cap: usize, request_cap: usize, hooks: Vec<Arc<dyn Hook>>) -> Self {
        let inner = TrackerInner {
            hooks: ArcSwap::from_pointee(Chain::default()),
            hook_list: Mutex::new(Vec::new()),
            next_hook_key: AtomicU64::new(0),
            io_hooks: AtomicBool::new(false),
            any_hooks: AtomicBool::new(false),
            request_hooks: AtomicBool::new(false),
            server_hooks: AtomicBool::new(false),
            stats: StatTable::default(),
            hook_panics: AtomicU64::new(0),
            history_cap,
            history: Mutex::new(VecDeque::with_capacity(history_cap.min(1024))),
            waiters: Mutex::new(HashMap::new()),
            waiter_count: AtomicUsize::new(0),
            next_waiter: AtomicU64::new(0),
            activity: crate::activity::Rings::new(request_cap),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            signal: crate::control::SignalState::default(),
            sweep_at: AtomicU64::new(u64::MAX),
            sweep_waker: std::sync::Mutex::new(None),
        };
        for h in hooks {
            inner.add_hook(h);
        }
        inner
    }

    /// Whether a tracker-level hook wants per-I/O events. One relaxed load: the hot path.
    #[inline]
    pub(crate) fn wants_io(&self) -> bool {
        self.io_hooks.load(Ordering::Relaxed)
    }

    pub(crate) fn has_hooks(&self, chain: &Chain) -> bool {
        !chain.is_empty() || self.any_hooks.load(Ordering::Acquire)
    }

    /// Whether some hook of `chain` or of the tracker wants HTTP request events
    /// ([`Hook::wants_request_events`]).
    pub(crate) fn wants_requests(&self, chain: &Chain) -> bool {
        chain.wants_requests() || self.request_hooks.load(Ordering::Acquire)
    }

    /// Whether some hook of `chain` or of the tracker wants server exchanges
    /// ([`Hook::wants_server_exchanges`]), or the tracker keeps them (its ring of recent
    /// requests, [`TrackerBuilder::recent_requests`], holds the server's too).
    pub(crate) fn wants_servers(&self, chain: &Chain) -> bool {
        chain.wants_servers()
            || self.server_hooks.load(Ordering::Acquire)
            || self.activity.keeps_requests()
    }

    pub(crate) fn keeps_history(&self) -> bool {
        self.history_cap > 0
    }

    /// `chain` first, then the tracker's own hooks.
    pub(crate) fn fire(&self, chain: &Chain, f: &mut dyn FnMut(&dyn Hook)) {
        chain.call(&self.hook_panics, f);
        self.hooks.load().call(&self.hook_panics, f);
    }

    /// `scope`, then `chain`, then the tracker's own hooks.
    pub(crate) fn fire_scoped(&self, scope: &Chain, chain: &Chain, f: &mut dyn FnMut(&dyn Hook)) {
        scope.call(&self.hook_panics, f);
        self.fire(chain, f);
    }

    fn add_hook(&self, hook: Arc<dyn Hook>) -> u64 {
        let key = self.next_hook_key.fetch_add(1, Ordering::Relaxed);
        let mut list = self
            .hook_list
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        list.push((key, hook));
        self.publish_hooks(&list);
        key
    }

    fn remove_hook(&self, key: u64) {
        let mut list = self
            .hook_list
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        list.retain(|(k, _)| *k != key);
        self.publish_hooks(&list);
    }

    fn publish_hooks(&self, list: &[(u64, Arc<dyn Hook>)]) {
        let chain = Chain::new(list.iter().map(|(_, h)| Arc::clone(h)).collect());
        self.io_hooks.store(chain.wants_io(), Ordering::Relaxed);
        self.request_hooks
            .store(chain.wants_requests(), Ordering::Release);
        self.server_hooks
            .store(chain.wants_servers(), Ordering::Release);
        let any = !chain.is_empty();
        self.hooks.store(Arc::new(chain));
        self.any_hooks.store(any, Ordering::Release);
    }

    /// Keeps a closed connection's final state and last error in the history.
    pub(crate) fn push_history(
        &self,
        snapshot: Snapshot,
        error: Option<io::Error>,
        reason: CloseReason,
    ) {
        if self.history_cap == 0 {
            return;
        }
        let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let evicted = if h.len() == self.history_cap {
            h.pop_back()
        } else {
            None
        };
        h.push_front((snapshot, error, reason));
        drop(h);
        // The evicted record's references are released outside the lock.
        drop(evicted);
    }

    fn active(&self, category: Option<&str>) -> u64 {
        let mut n = 0;
        self.stats.each(|c| {
            if category.is_none_or(|cat| cat == &*c.category) {
                n += c.cell.active();
            }
        });
        n
    }

    pub(crate) fn wake_drain_waiters(&self) {
        // SeqCst pairs with `Drained::poll`: either this load sees its registration or its
        // re-check sees this close (a store-buffer pattern, which Acquire/Release allow to fail).
        if self.waiter_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        // Wake outside the lock: a waker may poll its task inline, and that poll takes the lock.
        let wakers: Vec<Waker> = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// A policy-bearing connection to look at by `deadline` (its first deadline plus its
    /// slack) was registered: lowers the enforcer's wake-up time to it and wakes the enforcer
    /// if it sleeps past that. During a check (`sweep_at` is then `u64::MAX`) this leaves the
    /// deadline for the enforcer to find once the check ends, so a connection registered after
    /// the check collected the live ones is not missed (see `run_policies`). Only a
    /// registration due earlier than the current wake-up writes; one uncontended lock then.
    fn policy_registered(&self, deadline: u64) {
        if deadline >= self.sweep_at.load(Ordering::SeqCst) {
            return;
        }
        if deadline < self.sweep_at.fetch_min(deadline, Ordering::SeqCst) {
            let w = self
                .sweep_waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    pub(crate) fn count_failed(&self, category: &str, role: Role) {
        let id = self.stats.class_id(category, role);
        self.stats
            .with(id, |c| c.cell.failed.fetch_add(1, Ordering::Relaxed));
    }
}

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
    pub(crate) registry: Arc<Registry>,
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
            .field("history", &self.inner.history_cap)
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
        self.recent_requests = n.min(crate::activity::REQUEST_TIMINGS);
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

    /// How many connections are live.
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
        let h = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Now::read();
        h.iter()
            .map(|(snapshot, error, reason)| {
                let category = self
                    .inner
                    .stats
                    .with(snapshot.class(), |c| Arc::clone(&c.category));
                let info = snapshot.clone().into_info(category, &now);
                ClosedConnection {
                    closed_at: info.established_at + info.established_for,
                    info,
                    error: error.as_ref().map(ToString::to_string),
                    reason: *reason,
                }
            })
            .collect()
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

    /// Starts reporting a dial of `target` with `config`, capturing the current
    /// [`trace`](crate::trace) scope. See [`Dial`].
    pub fn dial(&self, config: &DialerConfig, target: impl Into<Arc<str>>) -> Dial {
        Dial::new(self.clone(), config, target.into())
    }

    /// Starts reporting a dial of one address, `addr`, with `config`: the same as
    /// [`dial`](Tracker::dial) with `addr.to_string()` as the target, except that the text is
    /// made only when something reads it (a hook, a snapshot, the history), so a dial nobody
    /// looks at does not format an address.
    pub fn dial_addr(&self, config: &DialerConfig, addr: SocketAddr) -> Dial {
        Dial::new_addr(self.clone(), config, addr)
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
