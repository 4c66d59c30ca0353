//! Connection limits: [`LimitMode`] and the per-config bookkeeping behind
//! [`ListenerConfig::max_connections`](crate::ListenerConfig::max_connections).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// What a listener does when it is at its connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LimitMode {
    /// Stop accepting until a connection closes (the default): new connections wait in the
    /// kernel's accept backlog, as with Go's `netutil.LimitListener`. A per-IP limit cannot
    /// hold back one peer this way; it always rejects.
    #[default]
    Wait,
    /// Accept and close at once, counting the connection as rejected (Envoy's `cx_overflow`,
    /// Kestrel's `rejected_connections`).
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

/// The shared count of one limited config (every listener using it, or a clone of it).
pub(crate) struct Limiter {
    pub(crate) max: usize,
    pub(crate) per_ip: Option<u32>,
    pub(crate) mode: LimitMode,
    count: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, u32>>,
    waiters: Mutex<Vec<Waker>>,
    waiting: AtomicBool,
}

impl Limiter {
    pub(crate) fn new(max: usize, per_ip: Option<u32>, mode: LimitMode) -> Self {
        Limiter {
            max,
            per_ip,
            mode,
            count: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
            waiters: Mutex::new(Vec::new()),
            waiting: AtomicBool::new(false),
        }
    }

    /// How many connections hold a slot.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Ready when a slot is free (or the mode rejects rather than waits); otherwise the waker
    /// is woken by the next release.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.mode == LimitMode::Reject || self.count() < self.max {
            return Poll::Ready(());
        }
        {
            let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            // SeqCst with `release`: either it sees this flag or the re-check below sees its
            // decrement.
            self.waiting.store(true, Ordering::SeqCst);
        }
        if self.count() < self.max {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Takes a slot for a connection from `ip`, or says which limit refused it.
    pub(crate) fn try_acquire(&self, ip: Option<IpAddr>) -> Result<(), Full> {
        let taken = self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Full::Count);
        }
        if let (Some(per_ip), Some(ip)) = (self.per_ip, ip) {
            let mut m = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let n = m.entry(ip).or_insert(0);
            if *n >= per_ip {
                if *n == 0 {
                    m.remove(&ip);
                }
                drop(m);
                self.release_count();
                return Err(Full::PerIp);
            }
            *n += 1;
        }
        Ok(())
    }

    /// Gives back the slot of a connection from `ip`.
    pub(crate) fn release(&self, ip: Option<IpAddr>) {
        if let (Some(_), Some(ip)) = (self.per_ip, ip) {
            let mut m = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
        self.release_count();
    }

    fn release_count(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            let wakers = {
                let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
                self.waiting.store(false, Ordering::SeqCst);
                std::mem::take(&mut *w)
            };
            for w in wakers {
                w.wake();
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
