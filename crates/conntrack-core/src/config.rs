//! [`ListenerConfig`] and [`DialerConfig`]: the category and hooks of one listener or dialer,
//! shared by every adapter.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::event::*;
use crate::hook::{for_each_event, if_true, Callbacks, Chain, Hook};

/// The category, closures and hooks shared by every config.
#[derive(Clone, Default)]
struct Common {
    category: Arc<str>,
    callbacks: Callbacks,
    hooks: Vec<Arc<dyn Hook>>,
    chain: OnceLock<Chain>,
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
}

impl ListenerConfig {
    /// A config with no category and no hooks.
    #[must_use]
    pub fn new() -> Self {
        ListenerConfig::default()
    }

    common_setters!();
}

/// The default delay before a Happy Eyeballs dialer starts the next address family's attempt.
pub const DEFAULT_FALLBACK_DELAY: Duration = Duration::from_millis(300);

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
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            common: Common::default(),
            connect_timeout: None,
            fallback_delay: DEFAULT_FALLBACK_DELAY,
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

    /// Limits the whole connect phase (all attempts, not name resolution).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The Happy Eyeballs delay (RFC 8305) before starting an attempt to the next address while
    /// the previous one is still pending. Default [`DEFAULT_FALLBACK_DELAY`] (300 ms).
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
