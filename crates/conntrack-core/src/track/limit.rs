//! Connection limits: [`LimitMode`], [`AcceptReady`] and the per-config bookkeeping behind
//! [`ListenerConfig::max_connections`](crate::ListenerConfig::max_connections) and
//! [`DialerConfig::max_connections`](crate::DialerConfig::max_connections).
//!
//! # Waiting
//!
//! Two kinds of tasks wait on a limit in [`LimitMode::Wait`]:
//!
//! - **Slot waiters** want a slot for themselves: a dial, or a connection already accepted
//!   that found the last slot taken by another accepter. They queue in arrival order. A
//!   release hands its slot straight to the first of them (the count does not drop, so no
//!   newcomer can take the slot in between) and wakes that one task only. A waiter that gives
//!   up (its future dropped) leaves the queue at once; if a slot had just been handed to it,
//!   the slot goes on to the next waiter.
//! - **Accepters** wait for a slot to be free before accepting ([`AcceptReady`]), so that
//!   connections wait in the kernel's backlog. They take nothing: a release that finds no slot
//!   waiter gives its slot back to the pool and wakes every waiting accepter (there are as
//!   many as accept loops, not as many as connections), because only the kernel knows which
//!   of their listeners has a connection waiting.
//!
//! The queues are smol-rs's [`event_listener`] lists: one entry per waiting task, unlinked in
//! O(1) when the waiter goes. Every step (take, queue, release, give up) is O(1) under one
//! short lock per limited config, whatever the number of waiters.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener, IntoNotification, Listener};

/// What a listener does when it is at its connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LimitMode {
    /// Stop accepting until a connection closes (the default): new connections wait in the
    /// kernel's accept backlog, as with Go's `netutil.LimitListener`. A per-IP limit cannot
    /// hold back one peer this way; it always rejects.
    ///
    /// Waiting is first come, first served: a slot that frees goes to the task that has waited
    /// longest for one (a dial, or an accepted connection whose slot another accepter took),
    /// waking that task alone. A waiter that gives up (its future dropped: a dial under a
    /// timeout, an accept in a `select!`) leaves nothing behind.
    #[default]
    Wait,
    /// Accept and close at once, counting the connection as rejected (Envoy's `cx_overflow`,
    /// Kestrel's `rejected_connections`). A dial fails at once.
    Reject,
}

/// Which limit refused a slot ([`Limiter::try_acquire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The config's `max_connections`.
    Count,
    /// The config's `max_connections_per_ip`.
    PerIp,
}

impl Full {
    /// Why, for the refusal's error.
    pub(crate) fn why(self) -> &'static str {
        match self {
            Full::Count => "connection limit reached",
            Full::PerIp => "per-IP connection limit reached",
        }
    }
}

/// The counts, under the limiter's lock.
#[derive(Default)]
struct State {
    /// Slots held (by connections, dials, or handed to a slot waiter not yet polled).
    count: usize,
    /// Slot waiters not yet handed a slot: exactly the un-notified entries of `Limiter::slot`.
    queued: usize,
    /// Slots held per peer IP, with a per-IP limit.
    by_ip: HashMap<IpAddr, u32>,
}

/// The shared count of one limited config (every listener using it, or a clone of it).
pub(crate) struct Limiter {
    pub(crate) max: usize,
    pub(crate) per_ip: Option<u32>,
    pub(crate) mode: LimitMode,
    state: Mutex<State>,
    /// Slot waiters, first come first served.
    slot: Event,
    /// Accepters waiting for a free slot.
    free: Event,
}

impl Limiter {
    pub(crate) fn new(max: usize, per_ip: Option<u32>, mode: LimitMode) -> Self {
        Limiter {
            max,
            per_ip,
            mode,
            state: Mutex::new(State::default()),
            slot: Event::new(),
            free: Event::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing user-supplied runs under the lock: it cannot be poisoned half-way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connections hold a slot.
    pub(crate) fn count(&self) -> usize {
        self.lock().count
    }

    /// How many tasks wait on this limit now: slot waiters and accepters, each one entry of a
    /// waiter list holding its waker.
    pub(crate) fn waiters(&self) -> usize {
        self.slot.total_listeners() + self.free.total_listeners()
    }

    /// Takes a slot for a connection from `ip`, or says which limit refused it. Never takes a
    /// slot ahead of a slot waiter: while any waits, every slot is held.
    pub(crate) fn try_acquire(&self, ip: Option<IpAddr>) -> Result<(), Full> {
        let mut st = self.lock();
        if st.count >= self.max {
            return Err(Full::Count);
        }
        self.take_ip(&mut st, ip)?;
        st.count += 1;
        Ok(())
    }

    /// Whether the per-IP limit would refuse `ip` now (a quick check before queueing).
    pub(crate) fn ip_full(&self, ip: Option<IpAddr>) -> bool {
        match (self.per_ip, ip) {
            (Some(per_ip), Some(ip)) => self.lock().by_ip.get(&ip).is_some_and(|n| *n >= per_ip),
            _ => false,
        }
    }

    fn take_ip(&self, st: &mut State, ip: Option<IpAddr>) -> Result<(), Full> {
        if let (Some(per_ip), Some(ip)) = (self.per_ip, ip) {
            let n = st.by_ip.entry(ip).or_insert(0);
            if *n >= per_ip {
                if *n == 0 {
                    st.by_ip.remove(&ip);
                }
                return Err(Full::PerIp);
            }
            *n += 1;
        }
        Ok(())
    }

    /// Takes a slot now if one is free, or queues for one (first come, first served).
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Slot, SlotWait> {
        let mut st = self.lock();
        if st.count < self.max {
            st.count += 1;
            return Ok(Slot(Some(Arc::clone(self))));
        }
        // Queued under the lock, so the release that hands out the next slot sees this
        // waiter's entry, and the entry's place in the list is its place in the queue.
        st.queued += 1;
        let listener = self.slot.listen();
        drop(st);
        Err(SlotWait {
            limiter: Arc::clone(self),
            listener: Some(listener),
        })
    }

    /// Gives back the slot of a connection from `ip`.
    pub(crate) fn release(&self, ip: Option<IpAddr>) {
        let mut st = self.lock();
        if let (Some(_), Some(ip)) = (self.per_ip, ip) {
            if let Some(n) = st.by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    st.by_ip.remove(&ip);
                }
            }
        }
        self.release_count(&mut st);
    }

    /// Gives back one slot of the count: to the first slot waiter if one waits (the count
    /// stays, the slot is theirs), otherwise to the pool, waking the waiting accepters.
    fn release_count(&self, st: &mut State) {
        if st.queued > 0 {
            st.queued -= 1;
            // Exactly one more entry notified, the oldest not yet notified one; under the
            // lock, so `queued` and the list agree.
            self.slot.notify(1.additional());
        } else {
            st.count -= 1;
            self.free.notify(usize::MAX);
        }
    }

    /// Takes the per-IP share of a slot handed to a waiter; on refusal the slot goes on.
    pub(crate) fn claim_ip(&self, slot: Slot, ip: Option<IpAddr>) -> Result<(), Full> {
        let mut st = self.lock();
        let taken = self.take_ip(&mut st, ip);
        // The slot is accounted for below, under this lock, whatever happens.
        slot.disarm();
        match taken {
            Ok(()) => Ok(()),
            Err(full) => {
                self.release_count(&mut st);
                Err(full)
            }
        }
    }

    /// Ready when a slot is free, or at once without waiting ([`LimitMode::Reject`]).
    fn poll_free(&self, listener: &mut Option<EventListener>, cx: &mut Context<'_>) -> Poll<()> {
        if self.mode == LimitMode::Reject {
            return Poll::Ready(());
        }
        loop {
            if listener.is_none() {
                let st = self.lock();
                if st.count < self.max {
                    return Poll::Ready(());
                }
                // Listening under the lock: the release that frees a slot notifies this entry.
                *listener = Some(self.free.listen());
            }
            let Some(l) = listener.as_mut() else {
                unreachable!("set above");
            };
            match Pin::new(l).poll(cx) {
                // Woken by a release: check again (another accepter may have taken the slot).
                Poll::Ready(()) => *listener = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("max", &self.max)
            .field("per_ip", &self.per_ip)
            .field("mode", &self.mode)
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

/// A slot of the count, held: given back on drop unless kept by a connection
/// ([`Slot::keep`]) or passed to [`Limiter::claim_ip`].
pub(crate) struct Slot(Option<Arc<Limiter>>);

impl Slot {
    /// The slot now belongs to a connection (or a dial), which releases it with
    /// [`Limiter::release`].
    pub(crate) fn keep(self) {
        self.disarm();
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(l) = self.0.take() {
            l.release(None);
        }
    }
}

/// A place in a limit's queue of slot waiters ([`Limiter::acquire`]).
pub(crate) struct SlotWait {
    limiter: Arc<Limiter>,
    listener: Option<EventListener>,
}

impl SlotWait {
    /// Ready with the slot once a release handed it over.
    pub(crate) fn poll_slot(&mut self, cx: &mut Context<'_>) -> Poll<Slot> {
        let Some(l) = self.listener.as_mut() else {
            unreachable!("a slot wait is not polled after it is ready");
        };
        match Pin::new(l).poll(cx) {
            Poll::Ready(()) => {
                // Notified only by `release_count`, which kept the count for this waiter.
                self.listener = None;
                Poll::Ready(Slot(Some(Arc::clone(&self.limiter))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for SlotWait {
    fn drop(&mut self) {
        let Some(l) = self.listener.take() else {
            return;
        };
        let mut st = self.limiter.lock();
        // Under the lock, so no release is handing a slot over meanwhile: either this waiter
        // was handed one (notified, not yet polled), which goes on to the next, or it is still
        // queued and leaves the queue. Its entry is unlinked either way.
        if l.discard() {
            self.limiter.release_count(&mut st);
        } else {
            st.queued -= 1;
        }
    }
}

/// Ready when the connection limit of a listener's config has a free slot
/// ([`Tracker::accept_ready`](crate::Tracker::accept_ready)): what a listener awaits before
/// each accept, so that in [`LimitMode::Wait`] connections wait in the kernel's backlog while
/// the limit is reached. Ready at once without a limit or in [`LimitMode::Reject`].
///
/// It takes no slot: a listener that then accepts registers the connection with
/// [`Tracker::admit_waiting`](crate::Tracker::admit_waiting). Dropping it while it waits
/// leaves nothing behind (its entry in the limit's waiter list goes with it). `Unpin`,
/// `Send`, `Sync`, and owns what it needs (no borrow of the tracker or the config), so a
/// poll-based listener can keep one between polls.
#[must_use = "futures do nothing unless polled"]
pub struct AcceptReady {
    limiter: Option<Arc<Limiter>>,
    listener: Option<EventListener>,
}

impl AcceptReady {
    pub(crate) fn new(limiter: Option<Arc<Limiter>>) -> Self {
        AcceptReady {
            limiter,
            listener: None,
        }
    }
}

impl Future for AcceptReady {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &this.limiter {
            Some(l) => l.poll_free(&mut this.listener, cx),
            None => Poll::Ready(()),
        }
    }
}

impl fmt::Debug for AcceptReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcceptReady")
            .field("limited", &self.limiter.is_some())
            .field("waiting", &self.listener.is_some())
            .finish()
    }
}
