//! The tracker's shared state ([`TrackerInner`]): what every connection of a tracker reaches
//! (its hooks, totals, history, activity rings, drain waiters and shutdown state). It lives
//! below the connection and the registry; [`Tracker`](crate::Tracker) is the public face over
//! it.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::Waker;

use arc_swap::ArcSwap;

use crate::hooks::hook::{Chain, Hook};
use crate::record::info::{CloseReason, Role};
use crate::track::activity::Rings;
use crate::track::history::{History, Snapshot};
use crate::track::stats::StatTable;
use crate::track::sync::{AtomicBool, Mutex};

/// The state shared by a tracker's handles, its registry's shards and (through them) every
/// connection: the fields `pub(super)` are the tracker face's alone.
pub(crate) struct TrackerInner {
    pub(super) hooks: ArcSwap<Chain>,
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
    pub(super) hook_panics: AtomicU64,
    pub(super) history: History,
    pub(super) waiters: Mutex<HashMap<u64, Waker>>,
    pub(super) waiter_count: AtomicUsize,
    pub(super) next_waiter: AtomicU64,
    /// What the debug page draws: live-connection samples and traced request timings.
    pub(crate) activity: Rings,
    /// Set by `shutdown`: listeners refuse new connections, idle ones close.
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
    /// The shutdown signals handed out
    /// ([`Tracker::shutdown_signal`](crate::Tracker::shutdown_signal)) and their wakers.
    pub(crate) signal: SignalState,
    /// The policy enforcer's next wake-up (nanos on the process clock), `u64::MAX` when it
    /// waits for a policy-bearing connection or is checking (then lowered by each
    /// registration due earlier, see `policy_registered`); and its waker.
    pub(crate) sweep_at: AtomicU64,
    pub(crate) sweep_waker: std::sync::Mutex<Option<Waker>>,
    /// How many entries the registry holds (`Tracker::len`), counted as they enter and leave
    /// their shard: exact at every instant, where a sum over the shards read one after the
    /// other could count an entry that has just left one beside one that has just entered
    /// another (more than a connection limit lets live at once).
    pub(crate) live: Live,
}

/// The registry's count of entries, on a cache line of its own (written at every register and
/// close, beside fields read on other paths).
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Live(pub(crate) std::sync::atomic::AtomicUsize);

impl TrackerInner {
    pub(super) fn new(history_cap: usize, request_cap: usize, hooks: Vec<Arc<dyn Hook>>) -> Self {
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
            history: History::new(history_cap),
            waiters: Mutex::new(HashMap::new()),
            waiter_count: AtomicUsize::new(0),
            next_waiter: AtomicU64::new(0),
            activity: Rings::new(request_cap),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            signal: SignalState::default(),
            sweep_at: AtomicU64::new(u64::MAX),
            sweep_waker: std::sync::Mutex::new(None),
            live: Live::default(),
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
    /// requests, [`TrackerBuilder::recent_requests`](crate::TrackerBuilder::recent_requests),
    /// holds the server's too).
    pub(crate) fn wants_servers(&self, chain: &Chain) -> bool {
        chain.wants_servers()
            || self.server_hooks.load(Ordering::Acquire)
            || self.activity.keeps_requests()
    }

    pub(crate) fn keeps_history(&self) -> bool {
        self.history.cap() > 0
    }

    /// `chain` first, then the tracker's own hooks.
    pub(crate) fn fire(&self, chain: &Chain, f: &mut dyn FnMut(&dyn Hook)) {
        chain.call(&self.hook_panics, f);
        // The list is loaded only when there is one (`any_hooks` is published with it).
        if self.any_hooks.load(Ordering::Acquire) {
            self.hooks.load().call(&self.hook_panics, f);
        }
    }

    /// `scope`, then `chain`, then the tracker's own hooks.
    pub(crate) fn fire_scoped(&self, scope: &Chain, chain: &Chain, f: &mut dyn FnMut(&dyn Hook)) {
        scope.call(&self.hook_panics, f);
        self.fire(chain, f);
    }

    pub(super) fn add_hook(&self, hook: Arc<dyn Hook>) -> u64 {
        let key = self.next_hook_key.fetch_add(1, Ordering::Relaxed);
        let mut list = self
            .hook_list
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        list.push((key, hook));
        self.publish_hooks(&list);
        key
    }

    pub(super) fn remove_hook(&self, key: u64) {
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
        self.history.push(snapshot, error, reason);
    }

    pub(super) fn active(&self, category: Option<&str>) -> u64 {
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
    pub(super) fn policy_registered(&self, deadline: u64) {
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

    /// Whether a shutdown signal was handed out: servers then close their own connections
    /// gracefully, and the tracker closes no server connection before the deadline.
    pub(crate) fn servers_close(&self) -> bool {
        self.signal.handed_out.load(Ordering::Relaxed)
    }
}

/// The shutdown signals of a tracker: whether one was ever handed out, and the tasks waiting
/// on them.
#[derive(Default)]
pub(crate) struct SignalState {
    /// A signal was handed out: the servers close their connections gracefully themselves.
    pub(crate) handed_out: std::sync::atomic::AtomicBool,
    pub(crate) next_key: AtomicU64,
    pub(crate) waiters: std::sync::Mutex<Vec<(u64, Waker)>>,
}

impl SignalState {
    pub(crate) fn wake_all(&self) {
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub(crate) fn remove(&self, key: u64) {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(k, _)| *k != key);
    }
}
