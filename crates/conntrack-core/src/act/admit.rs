//! The future of [`Tracker::admit_waiting`]: an accepted connection waiting for a slot of its
//! config's connection limit.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use crate::hooks::trace;
use crate::record::event::AcceptEvent;
use crate::record::info::Addr;
use crate::record::info::Role;
use crate::track::config::ListenerConfig;
use crate::track::connection::{Connection, Registration};
use crate::track::limit::{Full, LimitMode, Slot, SlotWait};
use crate::track::tracker::Tracker;

/// The future of [`Tracker::admit_waiting`]: a connection accepted by a listener in
/// [`LimitMode::Wait`](crate::LimitMode::Wait), registered as soon as its config's
/// connection limit has a slot for it.
///
/// Dropping it while it waits gives up its place in the queue and leaves nothing behind.
#[must_use = "futures do nothing unless polled"]
pub struct AdmitWaiting<'a> {
    tracker: Held<'a, Tracker>,
    config: Held<'a, ListenerConfig>,
    local: Addr,
    remote: Addr,
    /// Its place in the limit's queue, once it waits.
    wait: Option<SlotWait>,
    done: bool,
}

impl<'a> AdmitWaiting<'a> {
    pub(crate) fn new(
        tracker: &'a Tracker,
        config: &'a ListenerConfig,
        local: Addr,
        remote: Addr,
    ) -> Self {
        AdmitWaiting {
            tracker: Held::Borrowed(tracker),
            config: Held::Borrowed(config),
            local,
            remote,
            wait: None,
            done: false,
        }
    }

    /// The same admission owning a clone of the tracker and of the config, for a poll-based
    /// listener that keeps it between polls (a listener's `poll_accept` taking `&self`). Its
    /// place in the queue, if it has one, is kept.
    pub fn into_owned(self) -> AdmitWaiting<'static> {
        AdmitWaiting {
            tracker: self.tracker.into_owned(),
            config: self.config.into_owned(),
            local: self.local,
            remote: self.remote,
            wait: self.wait,
            done: self.done,
        }
    }
}

impl Future for AdmitWaiting<'_> {
    type Output = io::Result<Connection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "`AdmitWaiting` polled after it completed");
        loop {
            let handed = match this.wait.as_mut() {
                Some(queued) => {
                    let slot = ready!(queued.poll_slot(cx));
                    this.wait = None;
                    Some(slot)
                }
                None => None,
            };
            let (local, remote) = (&this.local, &this.remote);
            match this
                .tracker
                .try_admit(&this.config, local, remote, true, handed)
            {
                Admission::Admitted(conn) => {
                    this.done = true;
                    return Poll::Ready(Ok(conn));
                }
                Admission::Refused(err) => {
                    this.done = true;
                    return Poll::Ready(Err(err));
                }
                // Polled at once, to register this task's waker.
                Admission::Wait(queued) => this.wait = Some(queued),
            }
        }
    }
}

impl fmt::Debug for AdmitWaiting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmitWaiting")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("waiting", &self.wait.is_some())
            .finish_non_exhaustive()
    }
}

/// A borrowed or a boxed value, two words either way: a waiting admission stays small (a
/// `ListenerConfig` is a few hundred bytes), which matters when thousands wait.
enum Held<'a, T> {
    Borrowed(&'a T),
    Owned(Box<T>),
}

impl<T: Clone> Held<'_, T> {
    fn into_owned(self) -> Held<'static, T> {
        match self {
            Held::Borrowed(t) => Held::Owned(Box::new(t.clone())),
            Held::Owned(t) => Held::Owned(t),
        }
    }
}

impl<T> Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Held::Borrowed(t) => t,
            Held::Owned(t) => t,
        }
    }
}

/// What [`Tracker::try_admit`] did with an accepted connection.
pub(crate) enum Admission {
    Admitted(Connection),
    /// Refused, counted and reported.
    Refused(io::Error),
    /// The connection limit is reached in `Wait` mode: queued for a slot.
    Wait(SlotWait),
}

impl Tracker {
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
}
