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
//! reports only to its config's and the tracker's hooks (inside nested scopes: once the inner
//! scope has ended, to the enclosing scopes still alive). This is httptrace's per-request
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
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::hooks::hook::{Chain, Hook};

/// Makes a scope's hooks when they are first asked for: a traced HTTP request's dial scope,
/// whose hooks (a gate closed when the request ends) are needed only if a connection is dialed
/// or registered while the request is in flight, which a request on a pooled connection never
/// does.
pub(crate) trait LazyScope: Send + Sync {
    /// The scope's hooks.
    fn chain(&self) -> Chain;
}

/// A lazy scope: its maker (held weakly: no hooks once it is gone) and the hooks it made,
/// kept here, so that they live exactly as long as the scope is held (by the future polled in
/// it, by a `Captured` copy of it), as the hooks of a scope made ready do.
pub(crate) struct LazyCell {
    source: Weak<dyn LazyScope>,
    chain: OnceLock<Chain>,
}

/// The hooks in scope: made already, or made when asked for.
#[derive(Clone, Default)]
enum Scope {
    Ready(Chain),
    Lazy(Arc<LazyCell>),
    #[default]
    Empty,
}

impl Scope {
    fn chain(&self) -> Chain {
        match self {
            Scope::Ready(c) => c.clone(),
            Scope::Lazy(l) => l
                .chain
                .get_or_init(|| l.source.upgrade().map(|s| s.chain()).unwrap_or_default())
                .clone(),
            Scope::Empty => Chain::default(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Scope::Ready(c) => c.is_empty(),
            Scope::Lazy(_) => false,
            Scope::Empty => true,
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Ready(c) => c.fmt(f),
            Scope::Lazy(_) => f.write_str("Lazy"),
            Scope::Empty => f.write_str("Empty"),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Scope> = const { RefCell::new(Scope::Empty) };
}

/// The hooks of the scope the current thread is in (empty outside any scope).
pub(crate) fn current() -> Chain {
    // Cloned out first: a lazy scope makes its hooks with the cell released.
    let scope = CURRENT.with(|c| c.borrow().clone());
    scope.chain()
}

/// Restores the previous scope on drop, so a panic inside a scope cannot leave it installed.
struct Restore(Option<Scope>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
}

fn enter(scope: Scope) -> Restore {
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        // No scope entered where there was none (the common case): nothing to put back.
        if matches!((&*current, &scope), (Scope::Empty, Scope::Empty)) {
            return Restore(None);
        }
        Restore(Some(std::mem::replace(&mut *current, scope)))
    })
}

/// Runs `f` with `hook` in scope: connections registered and dials made on this thread while
/// `f` runs report to `hook` first.
pub fn with<R>(hook: impl Hook, f: impl FnOnce() -> R) -> R {
    let mine = Chain::new(vec![Arc::new(hook)]);
    let _restore = enter(Scope::Ready(current().nest(&mine)));
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
            .get_or_insert_with(|| current().nest(mine))
            .clone();
        let res = {
            let _restore = enter(Scope::Ready(chain));
            this.inner.poll(cx)
        };
        if res.is_ready() {
            // Completed: the scope ends now, even if the future itself is kept.
            *this.chain = None;
            *this.mine = Chain::default();
        }
        res
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
    scope: Scope,
}

/// Captures the scope current on this thread (empty outside any scope).
#[must_use]
pub fn capture() -> Captured {
    Captured {
        scope: CURRENT.with(|c| c.borrow().clone()),
    }
}

impl Captured {
    /// A scope whose hooks `lazy` makes when a connection or dial first asks for them.
    pub(crate) fn lazy(source: Weak<dyn LazyScope>) -> Self {
        Captured {
            scope: Scope::Lazy(Arc::new(LazyCell {
                source,
                chain: OnceLock::new(),
            })),
        }
    }

    /// Whether no hook was in scope.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.scope.is_empty()
    }

    /// Wraps `future` so that, whenever it is polled, exactly the captured scope is current
    /// (in place of whatever scope the poller is in).
    pub fn scope<F: Future>(self, future: F) -> InScope<F> {
        InScope {
            inner: future,
            scope: self.scope,
        }
    }

    /// Runs `f` with exactly the captured scope current.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let _restore = enter(self.scope.clone());
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
        scope: Scope,
    }
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = enter(this.scope.clone());
        this.inner.poll(cx)
    }
}
