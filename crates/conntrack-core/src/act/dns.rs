//! Name resolution for dialers: the [`Resolve`] trait every adapter's `Dialer` takes, and the
//! boxed future it returns.
//!
//! Each adapter supplies its runtime's system resolver (re-exported with these types in the
//! adapter's own `dns` module); bring your own (e.g. hickory) or, in tests, hand back a chosen
//! address list. Any `Fn(String, u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>>` is a
//! resolver:
//!
//! ```
//! use std::net::SocketAddr;
//! use conntrack_core::dns::Resolve;
//!
//! let fixed: SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let resolver = move |_host: String, _port: u16| async move { Ok(vec![fixed]) };
//! fn takes(_: impl Resolve) {}
//! takes(resolver);
//! ```
//!
//! A resolver used by the blocking `conntrack-std` dialer is driven by
//! [`blocking::block_on`](crate::blocking::block_on), outside any async runtime: its future must
//! not need one (a ready future, or one woken from another thread, is fine).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

/// A boxed, sendable future (what [`Resolve`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Name resolution for a dialer.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host` (a name, never an IP literal) for `port`.
    ///
    /// An empty list is not an error here: the dialer reports it as a
    /// [`NotFound`](io::ErrorKind::NotFound) DNS failure, the same on every runtime.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

impl<F, Fut> Resolve for F
where
    F: Fn(String, u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
{
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(self(host.to_owned(), port))
    }
}

/// Lookups in flight, shared by the concurrent dials of one dialer (and its clones): a dial of
/// a name already being resolved waits for that lookup instead of starting its own, and its
/// `on_dns_done` says `coalesced` (Go: `DNSDoneInfo.Coalesced`).
#[derive(Default)]
pub(crate) struct Coalescer {
    inflight: std::sync::Mutex<std::collections::HashMap<(String, u16), std::sync::Arc<Shared>>>,
}

/// One lookup in flight.
#[derive(Default)]
struct Shared {
    state: std::sync::Mutex<SharedState>,
}

/// A lookup's error, kept to hand each waiting dial a copy: kind, OS code, text.
type SharedError = (io::ErrorKind, Option<i32>, String);

#[derive(Default)]
struct SharedState {
    /// The outcome, once the leader has it: the addresses, or the error's kind, OS code and
    /// text (an `io::Error` cannot be cloned).
    outcome: Option<Result<Vec<SocketAddr>, SharedError>>,
    /// The leader's future was dropped before it finished: waiters look up again.
    abandoned: bool,
    wakers: Vec<std::task::Waker>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn settle(&self, outcome: Option<&io::Result<Vec<SocketAddr>>>) {
        let wakers = {
            let mut s = lock(&self.state);
            match outcome {
                Some(Ok(a)) => s.outcome = Some(Ok(a.clone())),
                Some(Err(e)) => {
                    s.outcome = Some(Err((e.kind(), e.raw_os_error(), e.to_string())));
                }
                None => s.abandoned = true,
            }
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Settles a leader's lookup as abandoned if its future is dropped before it finished.
struct Leading<'a> {
    coalescer: &'a Coalescer,
    key: (String, u16),
    shared: std::sync::Arc<Shared>,
    done: bool,
}

impl Leading<'_> {
    fn finish(mut self, outcome: &io::Result<Vec<SocketAddr>>) {
        self.done = true;
        self.coalescer.remove(&self.key, &self.shared);
        self.shared.settle(Some(outcome));
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.coalescer.remove(&self.key, &self.shared);
            self.shared.settle(None);
        }
    }
}

impl Coalescer {
    fn remove(&self, key: &(String, u16), shared: &std::sync::Arc<Shared>) {
        let mut map = lock(&self.inflight);
        if map
            .get(key)
            .is_some_and(|s| std::sync::Arc::ptr_eq(s, shared))
        {
            map.remove(key);
        }
    }

    /// Resolves `host:port` with `resolver`, or waits for a lookup of the same `host:port`
    /// already in flight. Returns the outcome and whether it was shared (`coalesced`). `started` runs
    /// once, as soon as the dial has started its lookup or joined one (and before it waits):
    /// the dial's `on_dns_start`, so that a dial seen starting is already one a concurrent
    /// dial of the same name will share with.
    pub(crate) async fn resolve(
        &self,
        resolver: &dyn Resolve,
        host: &str,
        port: u16,
        started: impl FnOnce(),
    ) -> (io::Result<Vec<SocketAddr>>, bool) {
        let key = (host.to_owned(), port);
        let mut started = Some(started);
        loop {
            let (shared, leader) = {
                let mut map = lock(&self.inflight);
                match map.get(&key) {
                    Some(s) => (std::sync::Arc::clone(s), false),
                    None => {
                        let s = std::sync::Arc::new(Shared::default());
                        map.insert(key.clone(), std::sync::Arc::clone(&s));
                        (s, true)
                    }
                }
            };
            if let Some(f) = started.take() {
                f();
            }
            if leader {
                let leading = Leading {
                    coalescer: self,
                    key: key.clone(),
                    shared,
                    done: false,
                };
                let outcome = resolver.resolve(host, port).await;
                leading.finish(&outcome);
                return (outcome, false);
            }
            let waited = std::future::poll_fn(|cx| {
                let mut s = lock(&shared.state);
                if let Some(outcome) = &s.outcome {
                    return std::task::Poll::Ready(Some(match outcome {
                        Ok(a) => Ok(a.clone()),
                        Err((_, Some(code), _)) => Err(io::Error::from_raw_os_error(*code)),
                        Err((kind, None, text)) => Err(io::Error::new(*kind, text.clone())),
                    }));
                }
                if s.abandoned {
                    return std::task::Poll::Ready(None);
                }
                if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.wakers.push(cx.waker().clone());
                }
                std::task::Poll::Pending
            })
            .await;
            match waited {
                Some(outcome) => return (outcome, true),
                // The dial that was resolving was cancelled: look up again (perhaps leading).
                None => continue,
            }
        }
    }
}
