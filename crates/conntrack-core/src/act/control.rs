//! Acting on connections: limits at accept ([`Tracker::accept_ready`],
//! [`Tracker::admit_waiting`], [`Tracker::admit`]), abort by id, the idle and
//! age policies ([`Tracker::enforce_policies`]) and [`Tracker::shutdown`] with its
//! [`ShutdownReport`] and the [`ShutdownSignal`] that hands it to the servers.
//!
//! Everything here runs when called: no thread, no timer per connection. The one thing that
//! must happen later (a policy's deadline) is slept for by a future the user's runtime runs,
//! [`Tracker::run_policies`], one per tracker, sleeping until the earliest deadline.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::act::admit::{Admission, AdmitWaiting};
use crate::record::info::{Addr, CloseReason, ConnectionId, ConnectionInfo};
use crate::track::clock::{self, Now};
use crate::track::config::ListenerConfig;
use crate::track::connection::Connection;
use crate::track::limit::AcceptReady;
use crate::track::state::TrackerInner;
use crate::track::tracker::Tracker;

/// What [`Tracker::shutdown`] found.
///
/// Every connection open when the shutdown began is counted once: in
/// [`closed_idle`](ShutdownReport::closed_idle) or [`closed_busy`](ShutdownReport::closed_busy)
/// if it closed before the deadline, in [`still_open`](ShutdownReport::still_open) otherwise.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every connection closed before the deadline.
    pub drained: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
    /// Connections with no exchange in flight when the shutdown began (idle between
    /// exchanges, or new), closed before the deadline: by the tracker at once, or by their
    /// server (an idle HTTP/1 keep-alive connection is closed at once by hyper's graceful
    /// shutdown; an HTTP/2 one after its `GOAWAY`).
    pub closed_idle: usize,
    /// Connections busy when the shutdown began (an exchange in flight, or
    /// [upgraded](crate::ConnState::Upgraded)) that closed before the deadline: their
    /// exchanges finished (their responses were written) and they closed.
    pub closed_busy: usize,
    /// The connections still open at the deadline, as they were then (category, peer, age,
    /// bytes, exchanges in flight, state), oldest first. Each was then aborted with
    /// [`CloseReason::ShutdownDeadline`].
    pub still_open: Vec<ConnectionInfo>,
}

/// A future that resolves when [`Tracker::shutdown`] begins (at once if it has begun), from
/// [`Tracker::shutdown_signal`]: the graceful-shutdown signal for a server (axum's
/// `with_graceful_shutdown`, tonic's `serve_with_incoming_shutdown`, the accept loop of a
/// hyper-util server). Runtime-agnostic, `Send + 'static`; dropping it unregisters it.
#[must_use = "futures do nothing unless polled"]
pub struct ShutdownSignal {
    tracker: Arc<TrackerInner>,
    key: u64,
}

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = &self.tracker;
        if t.shutting_down.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            let mut w = t
                .signal
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match w.iter_mut().find(|(k, _)| *k == self.key) {
                Some((_, old)) if old.will_wake(cx.waker()) => {}
                Some((_, old)) => old.clone_from(cx.waker()),
                None => w.push((self.key, cx.waker().clone())),
            }
        }
        // SeqCst with the store in `shutdown`, which then takes the wakers: either it finds
        // this one or this load sees the store.
        if t.shutting_down.load(Ordering::SeqCst) {
            t.signal.remove(self.key);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for ShutdownSignal {
    fn drop(&mut self) {
        self.tracker.signal.remove(self.key);
    }
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal")
            .field("shutting_down", &self.tracker.is_shutting_down())
            .finish()
    }
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
    /// [`LimitMode`](crate::LimitMode). A listener in [`LimitMode::Wait`](crate::LimitMode::Wait) uses
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

    /// A future that resolves when [`shutdown`](Tracker::shutdown) begins: hand it to your
    /// server's graceful shutdown, one line per server, so that a tracker shutdown drives it.
    ///
    /// ```text
    /// axum::serve(listener, app).with_graceful_shutdown(tracker.shutdown_signal())
    /// Server::builder().serve_with_incoming_shutdown(svc, listener.incoming(), tracker.shutdown_signal())
    /// tokio::select! { a = listener.accept() => .., () = &mut signal => break }  // hyper-util, then
    ///                          // drop(listener) and GracefulShutdown::shutdown
    /// ```
    ///
    /// The server then stops accepting, lets each connection finish the exchange it is
    /// serving and closes it the way its protocol wants (HTTP/1: `Connection: close` on the
    /// response in flight, a half-close after its last byte, idle keep-alive connections
    /// closed at once; HTTP/2: `GOAWAY`, the streams in flight finish, then the close), and
    /// the shutdown waits for that, up to its deadline.
    ///
    /// **Handing out a signal tells the tracker that its servers close their connections
    /// themselves**: from then on a shutdown closes no server connection before its deadline
    /// (without a signal it closes idle ones itself, see [`shutdown`](Tracker::shutdown));
    /// client connections (a pool's) it still closes when idle. Give every server of the
    /// tracker a signal. Take one signal per server and keep it across its accept loop (a
    /// signal created after the shutdown began resolves at once).
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.inner.signal.handed_out.store(true, Ordering::Relaxed);
        ShutdownSignal {
            tracker: Arc::clone(&self.inner),
            key: self.inner.signal.next_key.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Shuts down gracefully with a deadline, on any runtime (`sleep` is the runtime's, as for
    /// [`run_policies`](Tracker::run_policies)):
    ///
    /// 1. listeners refuse new connections from now on ([`admit`](Tracker::admit) rejects
    ///    them; the tracker stays shut down), and every [`ShutdownSignal`] resolves: the
    ///    servers given one begin their own graceful shutdown;
    /// 2. busy connections (an exchange in flight, or [upgraded](crate::ConnState::Upgraded))
    ///    are left to finish. An exchange ends when its response has been written (see
    ///    [`Connection::end_exchange_when_flushed`]), so a response is never cut short;
    /// 3. the tracker closes connections itself (reason [`CloseReason::Shutdown`]): those
    ///    idle between exchanges at once, busy ones as soon as their last exchange ends. Not
    ///    an upgraded one, nor a [multiplexed](crate::Connection::mark_multiplexed) one (those
    ///    wait for the deadline), nor, once a [`ShutdownSignal`] was handed out, a server
    ///    connection: its server closes it, the protocol's way. Exchanges are those marked
    ///    with [`Connection::begin_exchange`] (the hyper, axum and tonic integrations do); a
    ///    connection that marks none is left to finish and close by itself;
    /// 4. waits for every connection to close, up to `grace`;
    /// 5. at the deadline, aborts what is left (reason [`CloseReason::ShutdownDeadline`]) and
    ///    reports it in [`ShutdownReport::still_open`].
    ///
    /// A connection that closes without error during a shutdown, by itself or by its server,
    /// has the reason [`CloseReason::Shutdown`] too.
    pub async fn shutdown<S, F>(&self, grace: Duration, sleep: S) -> ShutdownReport
    where
        S: FnOnce(Duration) -> F,
        F: Future,
    {
        let start = clock::now_nanos();
        // Every connection open now, and whether it is busy: the report counts each once.
        // (Taken before the shutdown shows, so that none closes uncounted meanwhile.)
        let open: Vec<_> = self
            .registry
            .collect()
            .into_iter()
            .filter(|(_, e)| !e.is_closed())
            .map(|(_, e)| {
                let busy = e.is_busy();
                (e, busy)
            })
            .collect();
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.signal.wake_all();
        for (e, _) in &open {
            if e.is_idle_exchange() {
                e.abort(CloseReason::Shutdown);
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
        // Oldest first is by id: the aborted ones are found by a binary search.
        let (mut closed_idle, mut closed_busy) = (0, 0);
        for (e, busy) in &open {
            let id = ConnectionId(e.id);
            if still_open.binary_search_by_key(&id, |c| c.id).is_err() {
                *(if *busy {
                    &mut closed_busy
                } else {
                    &mut closed_idle
                }) += 1;
            }
        }
        drop(open);
        ShutdownReport {
            drained,
            elapsed: clock::since(start),
            closed_idle,
            closed_busy,
            still_open,
        }
    }

    /// Whether [`shutdown`](Tracker::shutdown) has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.is_shutting_down()
    }
}
