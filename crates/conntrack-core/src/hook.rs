//! The [`Hook`] trait and the ready-made hooks: [`NoopHook`], [`Hooks`] (several in order) and
//! [`Callbacks`] (closures).

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::{
    AcceptEvent, CloseEvent, ConnectDoneEvent, ConnectStartEvent, DialEvent, DnsDoneEvent,
    DnsStartEvent, ReadEvent, TlsHandshakeDoneEvent, TlsHandshakeStartEvent, WriteEvent,
};

/// Observes the life of tracked connections.
///
/// Every method has a no-op default, so a hook implements only what it needs. Methods take
/// `&self` and may be called concurrently from many threads; a hook that keeps state uses
/// atomics or a lock of its own.
///
/// # Per-I/O events
///
/// [`on_read`](Hook::on_read) and [`on_write`](Hook::on_write) are called only for hooks whose
/// [`wants_io_events`](Hook::wants_io_events) returns `true`. While no such hook is installed
/// for a connection, its reads and writes cost a few relaxed atomic operations and no dynamic
/// call. Implement `wants_io_events` together with `on_read` / `on_write`.
///
/// # Panics
///
/// A panic in a hook is caught, counted in [`Stats::hook_panics`](crate::Stats::hook_panics),
/// and the remaining hooks still run; the tracker is never left half-updated.
///
/// # Example
///
/// ```
/// use conntrack_core::{CloseEvent, Hook, Tracker};
///
/// struct LogClose;
/// impl Hook for LogClose {
///     fn on_close(&self, ev: &CloseEvent<'_>) {
///         println!("closed {} after {:?}", ev.connection.id, ev.connection.established_for);
///     }
/// }
///
/// let tracker = Tracker::builder().hook(LogClose).build();
/// # drop(tracker);
/// ```
pub trait Hook: Send + Sync + 'static {
    /// A connection was accepted, or accepting failed (`ev.error`).
    fn on_accept(&self, _ev: &AcceptEvent<'_>) {}
    /// A dial finished, with a connection or an error.
    fn on_dial(&self, _ev: &DialEvent<'_>) {}
    /// Name resolution is starting.
    fn on_dns_start(&self, _ev: &DnsStartEvent<'_>) {}
    /// Name resolution finished.
    fn on_dns_done(&self, _ev: &DnsDoneEvent<'_>) {}
    /// One connect attempt is starting.
    fn on_connect_start(&self, _ev: &ConnectStartEvent<'_>) {}
    /// One connect attempt finished.
    fn on_connect_done(&self, _ev: &ConnectDoneEvent<'_>) {}
    /// A TLS handshake is starting.
    fn on_tls_handshake_start(&self, _ev: &TlsHandshakeStartEvent<'_>) {}
    /// A TLS handshake finished.
    fn on_tls_handshake_done(&self, _ev: &TlsHandshakeDoneEvent<'_>) {}
    /// A read finished. Called only if [`wants_io_events`](Hook::wants_io_events) is `true`.
    fn on_read(&self, _ev: &ReadEvent<'_>) {}
    /// A write finished. Called only if [`wants_io_events`](Hook::wants_io_events) is `true`.
    fn on_write(&self, _ev: &WriteEvent<'_>) {}
    /// A connection left the tracker. Called exactly once per connection.
    fn on_close(&self, _ev: &CloseEvent<'_>) {}
    /// Whether this hook wants [`on_read`](Hook::on_read) and [`on_write`](Hook::on_write).
    ///
    /// Asked once, when the hook is installed. Defaults to `false`.
    fn wants_io_events(&self) -> bool {
        false
    }
}

macro_rules! forward_hook {
    ($($method:ident: $ev:ident),* $(,)?) => {
        $(fn $method(&self, ev: &$ev<'_>) { (**self).$method(ev) })*
        fn wants_io_events(&self) -> bool { (**self).wants_io_events() }
    };
}

impl<H: Hook + ?Sized> Hook for Arc<H> {
    forward_hook!(
        on_accept: AcceptEvent, on_dial: DialEvent, on_dns_start: DnsStartEvent,
        on_dns_done: DnsDoneEvent, on_connect_start: ConnectStartEvent,
        on_connect_done: ConnectDoneEvent, on_tls_handshake_start: TlsHandshakeStartEvent,
        on_tls_handshake_done: TlsHandshakeDoneEvent, on_read: ReadEvent,
        on_write: WriteEvent, on_close: CloseEvent,
    );
}

impl<H: Hook + ?Sized> Hook for Box<H> {
    forward_hook!(
        on_accept: AcceptEvent, on_dial: DialEvent, on_dns_start: DnsStartEvent,
        on_dns_done: DnsDoneEvent, on_connect_start: ConnectStartEvent,
        on_connect_done: ConnectDoneEvent, on_tls_handshake_start: TlsHandshakeStartEvent,
        on_tls_handshake_done: TlsHandshakeDoneEvent, on_read: ReadEvent,
        on_write: WriteEvent, on_close: CloseEvent,
    );
}

/// A hook that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHook;

impl Hook for NoopHook {}

/// Several hooks called in order, as one.
///
/// Each hook is treated as if installed on its own: a panic in one does not stop the ones
/// after it, and only the hooks that want per-I/O events get [`on_read`](Hook::on_read) and
/// [`on_write`](Hook::on_write).
///
/// Panics are re-raised once all hooks have run, so the tracker counts them in
/// [`Stats::hook_panics`](crate::Stats::hook_panics), one per panicking hook (nested `Hooks`
/// included). When one hook panicked, its own payload is re-raised; when several did, the
/// payload is an opaque value that carries their number, for the tracker to count.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Each hook with its [`wants_io_events`](Hook::wants_io_events), asked once when added.
    hooks: Vec<(Arc<dyn Hook>, bool)>,
}

impl Hooks {
    /// No hooks.
    #[must_use]
    pub fn new() -> Self {
        Hooks::default()
    }

    /// Appends a hook; hooks run in the order they were pushed.
    #[must_use]
    pub fn with(mut self, hook: impl Hook) -> Self {
        self.push(hook);
        self
    }

    /// Appends a hook.
    pub fn push(&mut self, hook: impl Hook) {
        let io = hook.wants_io_events();
        self.hooks.push((Arc::new(hook), io));
    }

    /// Calls `f` on every hook (only those that want per-I/O events if `io`), running the rest
    /// when one panics. At the end it re-raises the only panic as it was, or, when several hooks
    /// panicked, a [`PanicCount`] so that each one is counted.
    fn each(&self, io: bool, f: &mut dyn FnMut(&dyn Hook)) {
        let mut first = None;
        let mut count = 0;
        for (h, wants_io) in &self.hooks {
            if io && !wants_io {
                continue;
            }
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&**h))) {
                count += panics_in(&*p);
                first.get_or_insert(p);
            }
        }
        match first {
            Some(p) if count == 1 => resume_unwind(p),
            Some(_) => resume_unwind(Box::new(PanicCount(count))),
            None => {}
        }
    }

    /// How many hooks there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("len", &self.hooks.len())
            .finish()
    }
}

macro_rules! each_hook {
    ($($method:ident: $ev:ident, $io:literal),* $(,)?) => {
        $(fn $method(&self, ev: &$ev<'_>) {
            self.each($io, &mut |h| h.$method(ev));
        })*
        fn wants_io_events(&self) -> bool {
            self.hooks.iter().any(|(_, io)| *io)
        }
    };
}

impl Hook for Hooks {
    each_hook!(
        on_accept: AcceptEvent, false, on_dial: DialEvent, false,
        on_dns_start: DnsStartEvent, false, on_dns_done: DnsDoneEvent, false,
        on_connect_start: ConnectStartEvent, false, on_connect_done: ConnectDoneEvent, false,
        on_tls_handshake_start: TlsHandshakeStartEvent, false,
        on_tls_handshake_done: TlsHandshakeDoneEvent, false,
        on_read: ReadEvent, true, on_write: WriteEvent, true, on_close: CloseEvent, false,
    );
}

macro_rules! callbacks {
    ($($(#[$doc:meta])* $method:ident: $ev:ident),* $(,)?) => {
        /// A hook made of closures, one optional closure per event.
        ///
        /// [`ListenerConfig`](crate::ListenerConfig) and [`DialerConfig`](crate::DialerConfig)
        /// use it for their `on_*` methods; it is also handy for
        /// [`trace`](crate::trace) scopes. Setting `on_read` or `on_write` turns on per-I/O
        /// events for the connections it applies to.
        ///
        /// ```
        /// use conntrack_core::Callbacks;
        ///
        /// let hook = Callbacks::new()
        ///     .on_dns_done(|ev| println!("resolved {} to {:?}", ev.host, ev.addrs))
        ///     .on_close(|ev| println!("closed {}", ev.connection.id));
        /// # drop(hook);
        /// ```
        #[derive(Clone, Default)]
        pub struct Callbacks {
            $($method: Option<Arc<dyn Fn(&$ev<'_>) + Send + Sync>>,)*
        }

        impl Callbacks {
            /// No callbacks.
            #[must_use]
            pub fn new() -> Self {
                Callbacks::default()
            }

            $(
                $(#[$doc])*
                #[must_use]
                pub fn $method(mut self, f: impl Fn(&$ev<'_>) + Send + Sync + 'static) -> Self {
                    self.$method = Some(Arc::new(f));
                    self
                }
            )*

            /// Whether no callback is set.
            #[must_use]
            pub fn is_empty(&self) -> bool {
                true $(&& self.$method.is_none())*
            }
        }

        impl Hook for Callbacks {
            $(fn $method(&self, ev: &$ev<'_>) {
                if let Some(f) = &self.$method { f(ev) }
            })*
            fn wants_io_events(&self) -> bool {
                self.on_read.is_some() || self.on_write.is_some()
            }
        }

        impl fmt::Debug for Callbacks {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct("Callbacks");
                $(if self.$method.is_some() { d.field(stringify!($method), &"Fn"); })*
                d.finish()
            }
        }
    };
}

callbacks!(
    /// Called when a connection is accepted or accepting fails.
    on_accept: AcceptEvent,
    /// Called when a dial finishes.
    on_dial: DialEvent,
    /// Called when name resolution starts.
    on_dns_start: DnsStartEvent,
    /// Called when name resolution finishes.
    on_dns_done: DnsDoneEvent,
    /// Called when a connect attempt starts.
    on_connect_start: ConnectStartEvent,
    /// Called when a connect attempt finishes.
    on_connect_done: ConnectDoneEvent,
    /// Called when a TLS handshake starts.
    on_tls_handshake_start: TlsHandshakeStartEvent,
    /// Called when a TLS handshake finishes.
    on_tls_handshake_done: TlsHandshakeDoneEvent,
    /// Called after each read (turns on per-I/O events).
    on_read: ReadEvent,
    /// Called after each write (turns on per-I/O events).
    on_write: WriteEvent,
    /// Called once when a connection leaves the tracker.
    on_close: CloseEvent,
);

/// The payload [`Hooks`] re-raises when more than one of its hooks panicked during one event:
/// how many did, so that [`Stats::hook_panics`](crate::Stats::hook_panics) counts each.
#[derive(Debug)]
struct PanicCount(u64);

/// How many hook panics a caught payload stands for.
fn panics_in(payload: &(dyn Any + Send)) -> u64 {
    payload.downcast_ref::<PanicCount>().map_or(1, |c| c.0)
}

/// An immutable, ordered list of hooks with its per-I/O flag computed once. The empty chain
/// (the common case: no scope, no config hooks) is `None` and costs no allocation to make or
/// clone; a non-empty one is one thin pointer, which keeps every tracked connection small.
#[derive(Clone, Default)]
pub(crate) struct Chain {
    inner: Option<Arc<ChainInner>>,
}

struct ChainInner {
    hooks: Box<[Arc<dyn Hook>]>,
    io: bool,
}

impl Chain {
    pub(crate) fn new(hooks: Vec<Arc<dyn Hook>>) -> Self {
        if hooks.is_empty() {
            return Chain::default();
        }
        let io = hooks.iter().any(|h| Hook::wants_io_events(&**h));
        Chain {
            inner: Some(Arc::new(ChainInner {
                hooks: hooks.into_boxed_slice(),
                io,
            })),
        }
    }

    pub(crate) fn hooks(&self) -> &[Arc<dyn Hook>] {
        self.inner.as_deref().map_or(&[], |i| &i.hooks)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    pub(crate) fn wants_io(&self) -> bool {
        self.inner.as_deref().is_some_and(|i| i.io)
    }

    /// `front` followed by `self`, sharing `self` when `front` is empty.
    pub(crate) fn prepend(&self, front: &Chain) -> Chain {
        if front.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return front.clone();
        }
        let mut v = Vec::with_capacity(front.hooks().len() + self.hooks().len());
        v.extend(front.hooks().iter().cloned());
        v.extend(self.hooks().iter().cloned());
        Chain::new(v)
    }

    /// Calls `f` on every hook, catching and counting panics so one bad hook cannot stop the
    /// others or unwind through the tracker.
    pub(crate) fn call(&self, panics: &AtomicU64, f: &mut dyn FnMut(&dyn Hook)) {
        for h in self.hooks() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&**h))) {
                panics.fetch_add(panics_in(&*p), Ordering::Relaxed);
            }
        }
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("len", &self.hooks().len())
            .field("io", &self.wants_io())
            .finish()
    }
}
