//! The [`Hook`] trait and the ready-made hooks: [`NoopHook`], [`Hooks`] (several in order) and
//! [`Callbacks`] (closures).

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::record::event::*;

/// The one list of hook events. Every repetition over the events (the [`Hook`] trait's
/// methods, its forwarding impls for `Arc`/`Box`, [`Hooks`], [`Callbacks`], the config
/// setters, [`RecordingHook`](crate::RecordingHook)) is an expansion of this list: adding an
/// event is its struct in `record/event.rs`, its owned form in `hooks/recording.rs`, and one
/// line here.
///
/// Each line: doc, method, event struct, whether it is a per-I/O event, and whether
/// [`ListenerConfig`](crate::ListenerConfig) / [`DialerConfig`](crate::DialerConfig) get a
/// closure setter for it.
macro_rules! for_each_event {
    ($m:ident) => {
        $m! {
            /// A connection was accepted, or accepting failed (`ev.error`).
            on_accept(AcceptEvent) io=false listener=true dialer=false;
            /// A dial finished, with a connection or an error.
            on_dial(DialEvent) io=false listener=false dialer=true;
            /// Name resolution is starting.
            on_dns_start(DnsStartEvent) io=false listener=false dialer=true;
            /// Name resolution finished.
            on_dns_done(DnsDoneEvent) io=false listener=false dialer=true;
            /// One connect attempt is starting.
            on_connect_start(ConnectStartEvent) io=false listener=false dialer=true;
            /// One connect attempt finished.
            on_connect_done(ConnectDoneEvent) io=false listener=false dialer=true;
            /// A TLS handshake is starting.
            on_tls_handshake_start(TlsHandshakeStartEvent) io=false listener=true dialer=true;
            /// A TLS handshake finished.
            on_tls_handshake_done(TlsHandshakeDoneEvent) io=false listener=true dialer=true;
            /// A read finished. Called only if [`wants_io_events`](Hook::wants_io_events) is `true`.
            on_read(ReadEvent) io=true listener=true dialer=true;
            /// A write finished. Called only if [`wants_io_events`](Hook::wants_io_events) is `true`.
            on_write(WriteEvent) io=true listener=true dialer=true;
            /// A connection left the tracker. Called exactly once per connection.
            on_close(CloseEvent) io=false listener=true dialer=true;
            /// An HTTP request is about to get a connection (pooled or new).
            on_get_conn(GetConnEvent) io=false listener=false dialer=true;
            /// An HTTP request got its connection.
            on_got_conn(GotConnEvent) io=false listener=false dialer=true;
            /// A connection went back to the idle pool after a request, or could not.
            on_put_idle_conn(PutIdleConnEvent) io=false listener=false dialer=true;
            /// The first byte of an HTTP response arrived.
            on_got_first_response_byte(GotFirstResponseByteEvent) io=false listener=false dialer=true;
            /// The server answered `100 Continue`.
            on_got_100_continue(Got100ContinueEvent) io=false listener=false dialer=true;
            /// An informational (1xx) response arrived.
            on_got_1xx_response(Got1xxResponseEvent) io=false listener=false dialer=true;
            /// One request header field was written.
            on_wrote_header_field(WroteHeaderFieldEvent) io=false listener=false dialer=true;
            /// The request's header block was written.
            on_wrote_headers(WroteHeadersEvent) io=false listener=false dialer=true;
            /// The request waits for `100 Continue` before sending its body.
            on_wait_100_continue(Wait100ContinueEvent) io=false listener=false dialer=true;
            /// The whole request was written, or writing it failed.
            on_wrote_request(WroteRequestEvent) io=false listener=false dialer=true;
            /// A server exchange (a request served through an exchange layer) ended, with its
            /// phases. Called only if [`wants_server_exchanges`](Hook::wants_server_exchanges)
            /// is `true` (by default, if [`wants_request_events`](Hook::wants_request_events)
            /// is).
            on_server_exchange(ServerExchangeEvent) io=false listener=true dialer=false;
        }
    };
}
pub(crate) use for_each_event;

/// Expands its body only for `true` (used to pick events by the flags of the list).
macro_rules! if_true {
    (true { $($t:tt)* }) => { $($t)* };
    (false { $($t:tt)* }) => {};
}
pub(crate) use if_true;

macro_rules! hook_trait {
    ($($(#[$doc:meta])* $method:ident($ev:ident) io=$io:tt listener=$l:tt dialer=$d:tt;)*) => {
        /// Observes the life of tracked connections.
        ///
        /// Every method has a no-op default, so a hook implements only what it needs. Methods
        /// take `&self` and may be called concurrently from many threads; a hook that keeps
        /// state uses atomics or a lock of its own.
        ///
        /// # Per-I/O events
        ///
        /// [`on_read`](Hook::on_read) and [`on_write`](Hook::on_write) are called only for hooks
        /// whose [`wants_io_events`](Hook::wants_io_events) returns `true`. While no such hook
        /// is installed for a connection, its reads and writes cost a few relaxed atomic
        /// operations and no dynamic call. Implement `wants_io_events` together with `on_read`
        /// / `on_write`.
        ///
        /// # HTTP request events
        ///
        /// `on_get_conn` to `on_wrote_request` are Go httptrace's `ClientTrace` hooks for one
        /// HTTP request, fired by an HTTP client integration through a
        /// [`RequestTrace`](crate::RequestTrace) (see `docs/http-trace.md`).
        /// [`on_server_exchange`](Hook::on_server_exchange) is the server's: one event per
        /// served request, with its phases, while a hook of the connection wants request events.
        ///
        /// # Panics
        ///
        /// A panic in a hook is caught, counted in
        /// [`Stats::hook_panics`](crate::Stats::hook_panics), and the remaining hooks still
        /// run; the tracker is never left half-updated.
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
            $($(#[$doc])* fn $method(&self, _ev: &$ev<'_>) {})*
            /// Whether this hook wants [`on_read`](Hook::on_read) and
            /// [`on_write`](Hook::on_write).
            ///
            /// Asked once, when the hook is installed. Defaults to `false`.
            fn wants_io_events(&self) -> bool {
                false
            }

            /// Whether this hook wants the HTTP request events (`on_get_conn` to
            /// `on_wrote_request`, and `on_server_exchange`).
            ///
            /// Asked once, when the hook is installed. Defaults to `true`, so that a hook
            /// implementing a request event gets it; a hook that handles none returns `false`:
            /// while no hook in a request's scope wants them, an HTTP client integration skips
            /// the machinery that exists only to produce them (the request's I/O watch, its
            /// header-field copies, the events themselves), and a request costs little more
            /// than counting it as an exchange on its connection. The ready hooks
            /// ([`NoopHook`], the metrics and tracing hooks) and [`Callbacks`] (by the
            /// closures set) answer for themselves.
            fn wants_request_events(&self) -> bool {
                true
            }

            /// Whether this hook wants [`on_server_exchange`](Hook::on_server_exchange): while
            /// no hook of a server connection does, its exchanges are not timed (the exchange
            /// layer only counts them). Asked once, when the hook is installed. Defaults to
            /// [`wants_request_events`](Hook::wants_request_events); a hook can want the
            /// server's exchanges without the client's request events (the metrics hook does).
            fn wants_server_exchanges(&self) -> bool {
                self.wants_request_events()
            }
        }

        impl<H: Hook + ?Sized> Hook for Arc<H> {
            $(fn $method(&self, ev: &$ev<'_>) { (**self).$method(ev) })*
            fn wants_io_events(&self) -> bool { (**self).wants_io_events() }
            fn wants_request_events(&self) -> bool { (**self).wants_request_events() }
            fn wants_server_exchanges(&self) -> bool { (**self).wants_server_exchanges() }
        }

        impl<H: Hook + ?Sized> Hook for Box<H> {
            $(fn $method(&self, ev: &$ev<'_>) { (**self).$method(ev) })*
            fn wants_io_events(&self) -> bool { (**self).wants_io_events() }
            fn wants_request_events(&self) -> bool { (**self).wants_request_events() }
            fn wants_server_exchanges(&self) -> bool { (**self).wants_server_exchanges() }
        }

        impl Hook for Hooks {
            $(fn $method(&self, ev: &$ev<'_>) {
                self.each($io, &mut |h| h.$method(ev));
            })*
            fn wants_io_events(&self) -> bool {
                self.hooks.iter().any(|(_, io)| *io)
            }
            fn wants_request_events(&self) -> bool {
                self.hooks.iter().any(|(h, _)| h.wants_request_events())
            }
            fn wants_server_exchanges(&self) -> bool {
                self.hooks.iter().any(|(h, _)| h.wants_server_exchanges())
            }
        }
    };
}
for_each_event!(hook_trait);

/// A hook that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHook;

impl Hook for NoopHook {
    fn wants_request_events(&self) -> bool {
        false
    }
}

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

macro_rules! callbacks {
    ($($(#[$doc:meta])* $method:ident($ev:ident) io=$io:tt listener=$l:tt dialer=$d:tt;)*) => {
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
                ///
                /// Sets the closure for this event.
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
            fn wants_request_events(&self) -> bool {
                self.on_get_conn.is_some()
                    || self.on_got_conn.is_some()
                    || self.on_put_idle_conn.is_some()
                    || self.on_got_first_response_byte.is_some()
                    || self.on_got_100_continue.is_some()
                    || self.on_got_1xx_response.is_some()
                    || self.on_wrote_header_field.is_some()
                    || self.on_wrote_headers.is_some()
                    || self.on_wait_100_continue.is_some()
                    || self.on_wrote_request.is_some()
            }
            fn wants_server_exchanges(&self) -> bool {
                self.on_server_exchange.is_some()
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

for_each_event!(callbacks);

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
    requests: bool,
    servers: bool,
    /// For a nested trace scope's chain ([`Chain::nest`]): the enclosing scopes' chains, held
    /// weakly, so that a connection made in the inner scope still reports to the outer ones
    /// once the inner scope has ended.
    outer: WeakChain,
}

impl Chain {
    pub(crate) fn new(hooks: Vec<Arc<dyn Hook>>) -> Self {
        if hooks.is_empty() {
            return Chain::default();
        }
        let io = hooks.iter().any(|h| Hook::wants_io_events(&**h));
        let requests = hooks.iter().any(|h| Hook::wants_request_events(&**h));
        let servers = hooks.iter().any(|h| Hook::wants_server_exchanges(&**h));
        Chain {
            inner: Some(Arc::new(ChainInner {
                hooks: hooks.into_boxed_slice(),
                io,
                requests,
                servers,
                outer: WeakChain::default(),
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

    /// Whether some hook wants HTTP request events.
    pub(crate) fn wants_requests(&self) -> bool {
        self.inner.as_deref().is_some_and(|i| i.requests)
    }

    /// Whether some hook wants server exchanges.
    pub(crate) fn wants_servers(&self) -> bool {
        self.inner.as_deref().is_some_and(|i| i.servers)
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

    /// A trace scope's chain inside the scope whose chain is `self`: `inner`'s hooks, then
    /// `self`'s, remembering `self` (weakly) as the enclosing scope. A connection made in the
    /// inner scope reports to both while the inner lives, then to the enclosing scope's hooks
    /// alone while that lives ([`downgrade`](Chain::downgrade)).
    pub(crate) fn nest(&self, inner: &Chain) -> Chain {
        if inner.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return inner.clone();
        }
        let mut nested = self.prepend(inner);
        if let Some(i) = nested.inner.as_mut().and_then(Arc::get_mut) {
            i.outer = self.downgrade();
        }
        nested
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

impl Chain {
    /// A reference that does not keep the hooks alive (a connection's trace scope): to this
    /// chain and, for a nested scope's chain, to each enclosing scope's.
    pub(crate) fn downgrade(&self) -> WeakChain {
        let Some(i) = &self.inner else {
            return WeakChain::default();
        };
        let me = Arc::downgrade(i);
        WeakChain(match &i.outer.0 {
            Levels::None => Levels::One(me),
            Levels::One(o) => Levels::Many(Box::new([me, o.clone()])),
            Levels::Many(os) => {
                Levels::Many(std::iter::once(me).chain(os.iter().cloned()).collect())
            }
        })
    }
}

/// A [`Chain`] held weakly: a connection made inside a [`trace`](crate::trace) scope reports
/// to the scope's hooks only while the scope (the traced future or closure, or a request
/// that captured it) is alive. For nested scopes it holds each level, innermost first: once
/// the inner scope has ended, the connection reports to the enclosing scopes still alive.
#[derive(Clone, Default)]
pub(crate) struct WeakChain(Levels);

#[derive(Clone, Default)]
enum Levels {
    #[default]
    None,
    One(std::sync::Weak<ChainInner>),
    /// Innermost first; each level's chain holds the hooks of the levels after it too.
    Many(Box<[std::sync::Weak<ChainInner>]>),
}

impl WeakChain {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self.0, Levels::None)
    }

    /// The hooks of the innermost scope still alive (with its enclosing scopes'), else the
    /// empty chain.
    pub(crate) fn upgrade(&self) -> Chain {
        Chain {
            inner: match &self.0 {
                Levels::None => None,
                Levels::One(w) => w.upgrade(),
                Levels::Many(ws) => ws.iter().find_map(std::sync::Weak::upgrade),
            },
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
