//! [`ListenerConfig`] and [`DialerConfig`]: the category and hooks of one listener or dialer,
//! shared by every adapter.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::hooks::hook::{for_each_event, if_true, Callbacks, Chain, Hook};
use crate::record::event::*;
use crate::track::limit::{LimitMode, Limiter};

/// The category, closures and hooks shared by every config.
#[derive(Clone, Default)]
struct Common {
    category: Arc<str>,
    callbacks: Callbacks,
    hooks: Vec<Arc<dyn Hook>>,
    chain: OnceLock<Chain>,
    policy: Policy,
}

/// The idle timeout and maximum age of a config's connections.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Policy {
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_age: Option<Duration>,
    /// TCP statistics turned off ([`ListenerConfig::tcp_info`]).
    pub(crate) no_tcp_info: bool,
    /// TCP statistics also read once at close ([`ListenerConfig::tcp_info_at_close`]).
    pub(crate) tcp_info_at_close: bool,
}

impl Common {
    /// Closures first (as one hook), then `.hook()` hooks in the order they were added.
    fn chain(&self) -> &Chain {
        self.chain.get_or_init(|| {
            let mut v: Vec<Arc<dyn Hook>> = Vec::with_capacity(self.hooks.len() + 1);
            if !self.callbacks.is_empty() {
                v.push(Arc::new(self.callbacks.clone()));
            }
            v.extend(self.hooks.iter().cloned());
            Chain::new(v)
        })
    }

    fn edit(&mut self) -> &mut Self {
        self.chain = OnceLock::new();
        self
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("category", &self.category)
            .field("callbacks", &self.callbacks)
            .field("hooks", &self.hooks.len())
            .field("idle_timeout", &self.policy.idle_timeout)
            .field("max_age", &self.policy.max_age)
            .finish()
    }
}

/// One closure setter of a config.
macro_rules! setter {
    ($(#[$doc:meta])* $method:ident $ev:ident) => {
        $(#[$doc])*
        ///
        /// Sets the closure for this event; it runs before the config's hooks.
        #[must_use]
        pub fn $method(mut self, f: impl Fn(&$ev<'_>) + Send + Sync + 'static) -> Self {
            let c = self.common.edit();
            c.callbacks = std::mem::take(&mut c.callbacks).$method(f);
            self
        }
    };
}

/// The closure setters of [`ListenerConfig`]: the events of the list marked `listener=true`.
macro_rules! listener_setters {
    ($($(#[$doc:meta])* $method:ident($ev:ident) io=$io:tt listener=$l:tt dialer=$d:tt;)*) => {
        impl ListenerConfig {
            $(if_true!($l { setter!($(#[$doc])* $method $ev); });)*
        }
    };
}

/// The closure setters of [`DialerConfig`]: the events of the list marked `dialer=true`.
macro_rules! dialer_setters {
    ($($(#[$doc:meta])* $method:ident($ev:ident) io=$io:tt listener=$l:tt dialer=$d:tt;)*) => {
        impl DialerConfig {
            $(if_true!($d { setter!($(#[$doc])* $method $ev); });)*
        }
    };
}

macro_rules! common_setters {
    () => {
        /// Sets the category that every connection of this config is labelled with.
        #[must_use]
        pub fn category(mut self, category: impl Into<Arc<str>>) -> Self {
            self.common.edit().category = category.into();
            self
        }

        /// Adds a hook. Hooks run after the closures of this config, in the order added.
        #[must_use]
        pub fn hook(mut self, hook: impl Hook) -> Self {
            self.common.edit().hooks.push(Arc::new(hook));
            self
        }

        /// The category (`""` when unset).
        #[must_use]
        pub fn category_name(&self) -> &Arc<str> {
            &self.common.category
        }

        pub(crate) fn chain(&self) -> &Chain {
            self.common.chain()
        }

        pub(crate) fn policy(&self) -> Policy {
            self.common.policy
        }

        /// Closes a connection that has made no read or write for `timeout` while no exchange
        /// is in flight on it (see [`Connection::begin_exchange`](crate::Connection::begin_exchange)):
        /// its pending and later I/O fail with `ConnectionAborted` and it closes with
        /// [`CloseReason::IdleTimeout`](crate::CloseReason::IdleTimeout). Enforced by
        /// [`Tracker::enforce_policies`](crate::Tracker::enforce_policies) (see
        /// `docs/control.md`); no timer per connection.
        #[must_use]
        pub fn idle_timeout(mut self, timeout: Duration) -> Self {
            self.common.policy.idle_timeout = Some(timeout);
            self
        }

        /// Closes a connection once it is `age` old, busy or not, with
        /// [`CloseReason::MaxAge`](crate::CloseReason::MaxAge) (gRPC's `MAX_CONNECTION_AGE`).
        /// Enforced like [`idle_timeout`](Self::idle_timeout).
        #[must_use]
        pub fn max_age(mut self, age: Duration) -> Self {
            self.common.policy.max_age = Some(age);
            self
        }

        /// Whether the kernel's TCP statistics ([`ConnectionInfo::tcp`](crate::ConnectionInfo::tcp))
        /// are read for this config's connections when a snapshot or record is built, for
        /// the records it returns (Linux and Android; on by default: nothing is read until
        /// someone looks). `tcp_info(false)` turns it off (`tcp` stays `None`). The reading at
        /// close is separate and off by default: see
        /// [`tcp_info_at_close`](Self::tcp_info_at_close).
        #[must_use]
        pub fn tcp_info(mut self, on: bool) -> Self {
            self.common.policy.no_tcp_info = !on;
            self
        }

        /// Whether the TCP statistics are also read once when a connection closes, so that
        /// `on_close`, the history of closed connections and the metrics' round-trip-time
        /// histogram carry the final figures (off by default). Each reading is a `getsockopt`
        /// (~1 µs on the reference VM), a visible share of a short loopback connection's
        /// connect/accept/close: turn it on where the final figures are worth it. With it off,
        /// a closed connection's record carries the last statistics a snapshot read, if any.
        /// Has no effect with [`tcp_info(false)`](Self::tcp_info).
        #[must_use]
        pub fn tcp_info_at_close(mut self, on: bool) -> Self {
            self.common.policy.tcp_info_at_close = on;
            self
        }

        /// Whether TCP statistics are read (see [`tcp_info`](Self::tcp_info)).
        #[must_use]
        pub fn tcp_info_value(&self) -> bool {
            !self.common.policy.no_tcp_info
        }

        /// The idle timeout, if set.
        #[must_use]
        pub fn idle_timeout_value(&self) -> Option<Duration> {
            self.common.policy.idle_timeout
        }

        /// The maximum age, if set.
        #[must_use]
        pub fn max_age_value(&self) -> Option<Duration> {
            self.common.policy.max_age
        }
    };
}

/// The limit getters of [`ListenerConfig`] and [`DialerConfig`].
macro_rules! limit_getters {
    () => {
        /// The limit on open connections of this config, if set.
        #[must_use]
        pub fn max_connections_value(&self) -> Option<usize> {
            self.limiter
                .as_ref()
                .map(|l| l.max)
                .filter(|&m| m != usize::MAX)
        }

        /// How many connections (or, for a dialer, dials in progress) hold a slot of this
        /// config's limit now (0 without a limit).
        #[must_use]
        pub fn limited_connections(&self) -> usize {
            self.limiter().map_or(0, |l| l.count())
        }

        /// How many tasks wait on this config's limit now (0 without a limit): accepters
        /// waiting for a free slot before accepting, connections accepted while another
        /// accepter took the last slot, and dials waiting for a slot, in
        /// [`LimitMode::Wait`](crate::LimitMode::Wait). Each is one entry holding its waker;
        /// a waiter that gives up (its future dropped) is gone from the count at once.
        #[must_use]
        pub fn limit_waiters(&self) -> usize {
            self.limiter().map_or(0, |l| l.waiters())
        }

        /// The limiter, if the config limits something: a `limit_mode` given without a limit
        /// only keeps the mode for one set later, and nothing is counted.
        pub(crate) fn limiter(&self) -> Option<&Arc<Limiter>> {
            self.limiter
                .as_ref()
                .filter(|l| l.max != usize::MAX || l.per_ip.is_some())
        }
    };
}

/// How a listener labels and reports the connections it accepts (Go: `ListenerConfig`).
///
/// ```
/// use conntrack_core::ListenerConfig;
///
/// let config = ListenerConfig::new()
///     .category("api")
///     .on_accept(|ev| {
///         if let Some(err) = ev.error {
///             eprintln!("accept failed: {err}");
///         }
///     })
///     .on_close(|ev| println!("{} closed after {:?}", ev.connection.id, ev.connection.established_for));
/// assert_eq!(&**config.category_name(), "api");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ListenerConfig {
    common: Common,
    limiter: Option<Arc<Limiter>>,
}

impl ListenerConfig {
    /// A config with no category and no hooks.
    #[must_use]
    pub fn new() -> Self {
        ListenerConfig::default()
    }

    common_setters!();

    fn set_limits(mut self, f: impl FnOnce(&mut (usize, Option<u32>, LimitMode))) -> Self {
        let mut l = self
            .limiter
            .as_ref()
            .map_or((usize::MAX, None, LimitMode::Wait), |l| {
                (l.max, l.per_ip, l.mode)
            });
        f(&mut l);
        self.limiter = Some(Arc::new(Limiter::new(l.0, l.1, l.2)));
        self
    }

    /// At most `n` connections of this config open at once. At the limit a listener waits
    /// for a slot before accepting again ([`LimitMode::Wait`], the default) or accepts and
    /// closes at once ([`LimitMode::Reject`]); a refused connection is counted in
    /// [`CategoryStats::rejected`](crate::CategoryStats::rejected) and reported to `on_accept`
    /// with `rejected: true`, and the listener keeps serving.
    ///
    /// The count belongs to this config value: listeners given the same config (or clones of
    /// it made after this call) share one limit.
    #[must_use]
    pub fn max_connections(self, n: usize) -> Self {
        self.set_limits(|l| l.0 = n)
    }

    /// At most `n` connections of this config open at once from one peer IP address. Always
    /// enforced by rejecting: the peer is known only once its connection is accepted.
    #[must_use]
    pub fn max_connections_per_ip(self, n: u32) -> Self {
        self.set_limits(|l| l.1 = Some(n))
    }

    /// What to do at the [`max_connections`](Self::max_connections) limit.
    #[must_use]
    pub fn limit_mode(self, mode: LimitMode) -> Self {
        self.set_limits(|l| l.2 = mode)
    }

    limit_getters!();
}

/// The default delay before a Happy Eyeballs dialer starts the next address's attempt while the
/// previous one is still pending: 250 ms, the "Connection Attempt Delay" RFC 8305 §5
/// recommends (Go's dialer uses 300 ms).
pub const DEFAULT_FALLBACK_DELAY: Duration = Duration::from_millis(250);

/// How a dialer labels, times and reports the connections it makes (Go: `DialerConfig`).
///
/// ```
/// use std::time::Duration;
/// use conntrack_core::DialerConfig;
///
/// let config = DialerConfig::new()
///     .category("db")
///     .connect_timeout(Duration::from_secs(5))
///     .on_dns_done(|ev| println!("{} -> {:?} in {:?}", ev.host, ev.addrs, ev.duration))
///     .on_dial(|ev| {
///         if let Some(err) = ev.error {
///             eprintln!("dial {} failed: {err}", ev.target);
///         }
///     });
/// assert_eq!(config.connect_timeout_value(), Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, Debug)]
pub struct DialerConfig {
    common: Common,
    connect_timeout: Option<Duration>,
    fallback_delay: Duration,
    limiter: Option<Arc<Limiter>>,
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            common: Common::default(),
            connect_timeout: None,
            fallback_delay: DEFAULT_FALLBACK_DELAY,
            limiter: None,
        }
    }
}

impl DialerConfig {
    /// A config with no category, no hooks, no connect timeout and the default fallback delay.
    #[must_use]
    pub fn new() -> Self {
        DialerConfig::default()
    }

    common_setters!();

    /// At most `n` outbound connections of this config open at once (a pool's "max
    /// connections per category"). At the limit a dial waits for one of them to close before
    /// it starts ([`LimitMode::Wait`], the default), or fails at once ([`LimitMode::Reject`])
    /// with an error of kind `ResourceBusy`, counted in
    /// [`CategoryStats::rejected`](crate::CategoryStats::rejected) (role client) and reported
    /// to `on_dial`. The slot is taken before name resolution and held by the connection
    /// until it closes; a dial that fails or is dropped gives it back.
    ///
    /// As for a listener, the count belongs to this config value: dialers given the same
    /// config (or clones of it made after this call) share one limit.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        let mode = self.limiter.as_ref().map_or(LimitMode::Wait, |l| l.mode);
        self.limiter = Some(Arc::new(Limiter::new(n, None, mode)));
        self
    }

    /// What a dial does at the [`max_connections`](Self::max_connections) limit.
    #[must_use]
    pub fn limit_mode(mut self, mode: LimitMode) -> Self {
        let max = self.limiter.as_ref().map_or(usize::MAX, |l| l.max);
        self.limiter = Some(Arc::new(Limiter::new(max, None, mode)));
        self
    }

    limit_getters!();

    /// Limits the whole connect phase (all attempts, not name resolution). A zero timeout
    /// means none, as Go's `net.Dialer.Timeout` does (the same on every runtime, whose timers
    /// would otherwise race a loopback connect differently).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// The Happy Eyeballs delay (RFC 8305) before starting an attempt to the next address while
    /// the previous one is still pending. Default [`DEFAULT_FALLBACK_DELAY`] (250 ms).
    #[must_use]
    pub fn fallback_delay(mut self, delay: Duration) -> Self {
        self.fallback_delay = delay;
        self
    }

    /// The connect timeout, if set.
    #[must_use]
    pub fn connect_timeout_value(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The Happy Eyeballs fallback delay.
    #[must_use]
    pub fn fallback_delay_value(&self) -> Duration {
        self.fallback_delay
    }
}

for_each_event!(listener_setters);
for_each_event!(dialer_setters);
