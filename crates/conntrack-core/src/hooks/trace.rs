//! Per-call hooks, in the manner of Go's `httptrace.WithClientTrace`.
//!
//! A *scope* attaches hooks to every connection registered and every dial made while it runs:
//! [`scope`] (or [`TraceExt::traced`]) for a future, [`with`] for a closure in blocking code.
//! Scopes nest: an inner scope's hooks run first, then the enclosing scope's, then the
//! listener's or dialer's config, then the tracker's.
//!
//! A connection made inside a scope reports its own later events (TLS handshake, reads and
//! writes for per-I/O hooks, close) to the scope's hooks **while the scope lives**: until the
//! traced future completes or is dropped, or the closure returns. After that the connection
//! reports only to its config's and the tracker's hooks. This is httptrace's per-request
//! contract: a pooled connection dialed for one request does not keep calling that request's
//! hooks when it later serves other requests (`docs/hooks.md`).
//! A traced HTTP request captures the scope for the connections dialed for it
//! ([`RequestTrace::dial_scope`](crate::RequestTrace::dial_scope)): they report to the
//! request's hooks until the request ends. [`capture`] keeps the current scope for code run
//! later or on another task.
//!
//! ```
//! use conntrack_core::{trace, Callbacks, DialerConfig, Tracker};
//! use std::sync::{Arc, Mutex};
//!
//! let tracker = Tracker::new();
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let s = Arc::clone(&seen);
//! let hook = Callbacks::new().on_dns_start(move |ev| s.lock().unwrap().push(ev.host.to_owned()));
//! trace::with(hook, || {
//!     let mut dial = tracker.dial(&DialerConfig::new(), "localhost:80");
//!     dial.dns_start("localhost");
//! });
//! assert_eq!(*seen.lock().unwrap(), ["localhost"]);
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::hooks::hook::{Chain, Hook};

thread_local! {
    static CURRENT: RefCell<Chain> = RefCell::new(Chain::default());
}

/// The hooks of the scope the current thread is in (empty outside any scope).
pub(crate) fn current() -> Chain {
    CURRENT.with(|c| c.borrow().clone())
}

/// Restores the previous scope on drop, so a panic inside a scope cannot leave it installed.
struct Restore(Option<Chain>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
}

fn enter(chain: Chain) -> Restore {
    Restore(Some(
        CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), chain)),
    ))
}

/// Runs `f` with `hook` in scope: connections registered and dials made on this thread while
/// `f` runs report to `hook` first.
pub fn with<R>(hook: impl Hook, f: impl FnOnce() -> R) -> R {
    let mine = Chain::new(vec![Arc::new(hook)]);
    let _restore = enter(current().prepend(&mine));
    f()
}

/// Wraps `future` so that, whenever it is polled, `hook` is in scope (see the module docs).
///
/// The enclosing scope is captured at the first poll, so a future built outside and awaited
/// inside another scope composes with it.
pub fn scope<F: Future>(hook: impl Hook, future: F) -> Scoped<F> {
    Scoped {
        inner: future,
        mine: Chain::new(vec![Arc::new(hook)]),
        chain: None,
    }
}

pin_project! {
    /// A future with trace hooks in scope, from [`scope`] or [`TraceExt::traced`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        mine: Chain,
        chain: Option<Chain>,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mine = &*this.mine;
        let chain = this
            .chain
            .get_or_insert_with(|| current().prepend(mine))
            .clone();
        let _restore = enter(chain);
        this.inner.poll(cx)
    }
}

/// `.traced(hook)` for every future.
pub trait TraceExt: Future + Sized {
    /// Same as [`scope(hook, self)`](scope).
    fn traced(self, hook: impl Hook) -> Scoped<Self> {
        scope(hook, self)
    }
}

impl<F: Future> TraceExt for F {}

/// The hooks of the scope current on this thread, kept to be put back in scope around a
/// future that is polled later, maybe on another task (from [`capture`]).
///
/// A connector whose `call` runs inside a caller's scope but whose future is driven by a
/// background task (as hyper-util's client does when a pooled connection wins the race against
/// a dial) captures the scope in `call` so the dial still reports to it.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    chain: Chain,
}

/// Captures the scope current on this thread (empty outside any scope).
#[must_use]
pub fn capture() -> Captured {
    Captured { chain: current() }
}

impl Captured {
    pub(crate) fn from_chain(chain: Chain) -> Self {
        Captured { chain }
    }

    /// Whether no hook was in scope.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Wraps `future` so that, whenever it is polled, exactly the captured scope is current
    /// (in place of whatever scope the poller is in).
    pub fn scope<F: Future>(self, future: F) -> InScope<F> {
        InScope {
            inner: future,
            chain: self.chain,
        }
    }

    /// Runs `f` with exactly the captured scope current.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let _restore = enter(self.chain.clone());
        f()
    }
}

pin_project! {
    /// A future polled inside a captured scope, from [`Captured::scope`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct InScope<F> {
        #[pin]
        inner: F,
        chain: Chain,
    }
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = enter(this.chain.clone());
        this.inner.poll(cx)
    }
}
