//! Acting on connections: limits at accept ([`Tracker::accept_ready`],
//! [`Tracker::admit_waiting`], [`Tracker::admit`]), abort by id, the idle and
//! age policies ([`Tracker::enforce_policies`]) and [`Tracker::shutdown`] with its
//! [`ShutdownReport`].
//!
//! Everything here runs when called: no thread, no timer per connection. The one thing that
//! must happen later (a policy's deadline) is slept for by a future the user's runtime runs,
//! [`Tracker::run_policies`], one per tracker, sleeping until the earliest deadline.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::Duration;

use crate::admit::AdmitWaiting;
use crate::clock::{self, Now};
use crate::config::ListenerConfig;
use crate::connection::{Connection, Registration};
use crate::event::AcceptEvent;
use crate::info::{Addr, CloseReason, ConnectionId, ConnectionInfo, Role};
use crate::limit::{AcceptReady, Full, LimitMode, Slot, SlotWait};
use crate::trace;
use crate::tracker::Tracker;

/// What [`Tracker::try_admit`] did with an accepted connection.
pub(crate) enum Admission {
    Admitted(Connection),
    /// Refused, counted and reported.
    Refused(io::Error),
    /// The connection limit is reached in `Wait` mode: queued for a slot.
    Wait(SlotWait),
}

/// What [`Tracker::shutdown`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every connection closed before the deadline.
    pub drained: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
    /// Connections closed at once because they were idle between exchanges, or as soon as
    /// their last exchange ended, during this call to [`shutdown`](Tracker::shutdown).
    pub closed_idle: usize,
    /// The connections still open at the deadline, as they were then (category, peer, age,
    /// bytes, exchanges in flight), oldest first. Each was then aborted with
    /// [`CloseReason::ShutdownDeadline`].
    pub still_open: Vec<ConnectionInfo>,
}

impl Tracker {
    /// A future ready when a listener with `config` may accept: while its
    /// [`max_connections`](ListenerConfig::max_connections) limit is reached in
    /// [`LimitMode::Wait`](crate::LimitMode::Wait) it waits until a connection of the config
    /// closes; otherwise it is ready at once. A listener awaits it before each accept, so that
    /// waiting connections stay in the kernel's backlog, then registers what it accepted with
    /// [`admit_waiting`](Tracker::admit_waiting).
    ///
    /// It takes no slot (see [`AcceptReady`]): every accepter waiting on the config is woken
    /// when a slot frees, unless a connection or dial already waits for that slot
    /// (first come, first served). Dropping it leaves nothing behind.
    pub fn accept_ready(&self, config: &ListenerConfig) -> AcceptReady {
        AcceptReady::new(config.limiter().cloned())
    }

    /// Registers a connection a listener with `config` accepted, as
    /// [`accepted`](Tracker::accepted) does, unless a limit of the config is reached or the
    /// tracker is shutting down. A refused connection is counted in
    /// [`CategoryStats::rejected`](crate::CategoryStats::rejected) and reported to `on_accept`
    /// with `rejected: true`; the caller drops (closes) its stream and keeps accepting.
    ///
    /// This form never waits: at the connection limit it refuses, whatever the
    /// [`LimitMode`]. A listener in [`LimitMode::Wait`](crate::LimitMode::Wait) uses
    /// [`admit_waiting`](Tracker::admit_waiting), which waits for a slot instead.
    ///
    /// # Errors
    ///
    /// Why the connection was refused (kind `ConnectionRefused` for a limit, `Interrupted`
    /// during a shutdown), for logging: it is not an accept failure.
    pub fn admit(
        &self,
        config: &ListenerConfig,
        local: impl Into<Addr>,
        remote: impl Into<Addr>,
    ) -> io::Result<Connection> {
        match self.try_admit(config, &local.into(), &remote.into(), false, None) {
            Admission::Admitted(conn) => Ok(conn),
            Admission::Refused(err) => Err(err),
            Admission::Wait(_) => unreachable!("only a waiting admission waits"),
        }
    }

    /// [`admit`](Tracker::admit) for a listener in [`LimitMode::Wait`](crate::LimitMode::Wait)
    /// (in [`LimitMode::Reject`](crate::LimitMode::Reject) it is `admit`): when the config's
    /// [`max_connections`](ListenerConfig::max_connections) limit is reached, the connection
    /// is not refused but waits, accepted, for a slot, then takes it.
    ///
    /// That happens when two accepters share a limit (threads or tasks accepting from one
    /// listener, or listeners given clones of one config): both see a free slot in
    /// [`accept_ready`](Tracker::accept_ready), both accept, and one connection takes the slot
    /// first. Wait mode promises that no connection is refused for the limit; this keeps it.
    /// Waiting connections (and waiting dials of a [`DialerConfig`](crate::DialerConfig)
    /// limit) are served first come, first served: a slot that frees is handed to the one
    /// that has waited longest, which alone is woken. The per-IP limit and a shutdown still
    /// refuse at once, as with `admit` (a shutdown that begins while a connection waits
    /// refuses it when its slot comes). Dropping the future gives up the wait and leaves
    /// nothing behind (a slot handed to it meanwhile goes on to the next waiter); the caller
    /// then drops the stream.
    ///
    /// The future borrows `self` and `config`; a poll-based listener that must keep it
    /// between polls makes it `'static` with [`AdmitWaiting::into_owned`].
    ///
    /// # Errors
    ///
    /// As [`admit`](Tracker::admit), except that the connection limit in `Wait` mode never
    /// refuses.
    pub fn admit_waiting<'a>(
        &'a self,
        config: &'a ListenerConfig,
        local: impl Into<Addr>,
        remote: impl Into<Addr>,
    ) -> AdmitWaiting<'a> {
        AdmitWaiting::new(self, config, local.into(), remote.into())
    }

    /// Registers the connection, or refuses it (counted and reported), or, with `wait` and
    /// the config's connection limit reached in `Wait` mode, queues it for a slot (nothing
    /// counted or reported). `handed` is the slot a queued connection was handed.
    pub(crate) fn try_admit(
        &self,
        config: &ListenerConfig,
        local: &Addr,
        remote: &Addr,
        wait: bool,
        handed: Option<Slot>,
    ) -> Admission {
        let refused = if self.inner.is_shutting_down() {
            // A slot handed to a waiting connection goes on to the next waiter.
            drop(handed);
            Some(io::Error::new(
                io::ErrorKind::Interrupted,
                "the tracker is shutting down",
            ))
        } else if let Some(l) = config.limiter() {
            // One peer, one count: an IPv4 peer on a dual-stack listener arrives as an
            // IPv4-mapped IPv6 address (`::ffff:127.0.0.1`).
            let ip = remote.socket_addr().map(|a| a.ip().to_canonical());
            let taken = match handed {
                Some(slot) => l.claim_ip(slot, ip),
                None => match l.try_acquire(ip) {
                    // Queue for the next slot, unless the per-IP limit would refuse it then.
                    Err(Full::Count) if wait && l.mode == LimitMode::Wait => {
                        if l.ip_full(ip) {
                            Err(Full::PerIp)
                        } else {
                            match l.acquire() {
                                // A slot freed since the try.
                                Ok(slot) => l.claim_ip(slot, ip),
                                Err(queued) => return Admission::Wait(queued),
                            }
                        }
                    }
                    taken => taken,
                },
            };
            match taken {
                Ok(()) => {
                    let mut reg = Registration::server(local.clone(), remote.clone());
                    reg.permit = Some((Arc::clone(l), ip));
                    reg.chain = config.chain().clone();
                    reg.policy = config.policy();
                    return Admission::Admitted(self.register_as(config.category_name(), reg));
                }
                Err(full) => Some(io::Error::new(io::ErrorKind::ConnectionRefused, full.why())),
            }
        } else {
            None
        };
        let Some(err) = refused else {
            return Admission::Admitted(self.accepted(config, local.clone(), remote.clone()));
        };
        let category = config.category_name();
        let id = self.inner.stats.class_id(category, Role::Server);
        self.inner
            .stats
            .with(id, |c| c.cell.rejected.fetch_add(1, Ordering::Relaxed));
        let chain = config.chain().prepend(&trace::current());
        self.fire(&chain, &mut |h| {
            h.on_accept(&AcceptEvent {
                category,
                local_addr: local,
                connection: None,
                error: Some(&err),
                rejected: true,
            });
        });
        Admission::Refused(err)
    }

    /// Aborts one live connection: it closes now with [`CloseReason::Aborted`], its tracked
    /// stream's pending read or write is woken and fails with `ConnectionAborted`, and so does
    /// any later I/O on it (a blocking std stream is shut down). Returns whether the
    /// connection was live.
    pub fn abort(&self, id: ConnectionId) -> bool {
        self.registry
            .get(id.as_u64())
            .is_some_and(|e| e.abort(CloseReason::Aborted))
    }

    /// Closes the connections whose idle timeout or maximum age has passed (reason
    /// [`CloseReason::IdleTimeout`] or [`CloseReason::MaxAge`], aborted as by
    /// [`abort`](Tracker::abort)) and returns how long until the next check is due, `None`
    /// when no live connection has a policy. One walk over the live connections.
    ///
    /// The next check is the earliest deadline plus 1/64 of that connection's shortest policy
    /// (at least 1 ms), so connections due at about the same time close in one walk: a
    /// connection closes within that slack plus the coarse clock's tick after its deadline.
    pub fn enforce_policies(&self) -> Option<Duration> {
        let now = clock::now_nanos();
        let now_ms = clock::coarse_ms();
        let mut next: Option<u64> = None;
        for (_, e) in self.registry.collect() {
            if !e.has_policy() || e.is_closed() {
                continue;
            }
            if let Some(reason) = e.policy_due(now, now_ms) {
                e.abort(reason);
                continue;
            }
            if let Some(at) = e.policy_deadline(now, now_ms) {
                let at = at.saturating_add(e.policy_slack());
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next.map(|at| Duration::from_nanos(at.saturating_sub(now)))
    }

    /// Enforces the idle timeouts and maximum ages of this tracker's connections for as long
    /// as it is polled: [`enforce_policies`](Tracker::enforce_policies), then a sleep until
    /// the next check is due, made with the runtime's `sleep` (`tokio::time::sleep`,
    /// `async_io::Timer::after`, [`blocking::sleep`](crate::blocking::sleep)). With no
    /// policy-bearing connection it sleeps on no timer at all and is woken by the
    /// registration of one; a registration due later than the current sleep does not wake it.
    /// Run one per tracker, on your runtime (`tokio::spawn(tracker.run_policies(sleep))`).
    pub async fn run_policies<S, F>(&self, mut sleep: S)
    where
        S: FnMut(Duration) -> F,
        F: Future,
    {
        loop {
            // From here until the wake-up time below is set, every policy-bearing registration
            // leaves its deadline in `sweep_at` (an earlier one than `u64::MAX`): a connection
            // registered after the walk has collected the live ones is not missed.
            self.inner.sweep_at.store(u64::MAX, Ordering::SeqCst);
            let next = self.enforce_policies();
            let at = next.map_or(u64::MAX, |d| {
                clock::now_nanos().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            });
            // The earlier of the walk's next deadline and those registered during the walk.
            let at = at.min(self.inner.sweep_at.fetch_min(at, Ordering::SeqCst));
            let mut timer = pin!((at != u64::MAX)
                .then(|| sleep(Duration::from_nanos(at.saturating_sub(clock::now_nanos())))));
            poll_fn(|cx| {
                if let Some(t) = timer.as_mut().as_pin_mut() {
                    if t.poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                *self
                    .inner
                    .sweep_waker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
                // A registration due earlier lowered it (and woke this task, or will find the
                // waker just stored): check now.
                if self.inner.sweep_at.load(Ordering::SeqCst) != at {
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await;
        }
    }

    /// Shuts down gracefully with a deadline, on any runtime (`sleep` is the runtime's, as for
    /// [`run_policies`](Tracker::run_policies)):
    ///
    /// 1. listeners refuse new connections from now on ([`admit`](Tracker::admit) rejects
    ///    them; the tracker stays shut down);
    /// 2. connections idle between exchanges close at once, and busy ones as soon as their
    ///    last exchange ends (reason [`CloseReason::Shutdown`]); exchanges are those marked
    ///    with [`Connection::begin_exchange`] (the hyper, axum and tonic integrations do);
    ///    a connection that marks none is left to finish and close by itself;
    /// 3. waits for every connection to close, up to `grace`;
    /// 4. at the deadline, aborts what is left (reason [`CloseReason::ShutdownDeadline`]) and
    ///    reports it in [`ShutdownReport::still_open`].
    pub async fn shutdown<S, F>(&self, grace: Duration, sleep: S) -> ShutdownReport
    where
        S: FnOnce(Duration) -> F,
        F: Future,
    {
        let start = clock::now_nanos();
        // The count is the tracker's since its first shutdown (busy connections keep adding
        // to it as their exchanges end); this report gives what closed during this call.
        let closed_before = self.inner.shutdown_closed.load(Ordering::Relaxed);
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        for (_, e) in self.registry.collect() {
            if e.is_idle_exchange() && e.abort(CloseReason::Shutdown) {
                self.inner.shutdown_closed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut drained = pin!(self.drained());
        let mut deadline = pin!(sleep(grace));
        let drained = poll_fn(|cx| {
            if drained.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        let mut still_open = Vec::new();
        if !drained {
            let now = Now::read();
            for (_, e) in self.registry.collect_sorted() {
                if !e.is_closed() {
                    still_open.push(e.info_at(&now));
                    e.abort(CloseReason::ShutdownDeadline);
                }
            }
        }
        ShutdownReport {
            drained,
            elapsed: clock::since(start),
            closed_idle: self
                .inner
                .shutdown_closed
                .load(Ordering::Relaxed)
                .wrapping_sub(closed_before),
            still_open,
        }
    }

    /// Whether [`shutdown`](Tracker::shutdown) has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.is_shutting_down()
    }
}
