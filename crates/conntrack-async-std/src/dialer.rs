//! The dial logic shared by the runtimes' `Dialer`s: resolve (with DNS hooks), then try each
//! address in order (with connect hooks and the config's connect timeout), reporting every
//! phase to the core's [`Dial`].
#![allow(dead_code, unused_macros)] // used only with a runtime feature

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conntrack_core::{Addr, Dial, DialerConfig, Tracker};

use crate::Tracked;

/// What a runtime provides to the shared dial logic.
pub(crate) trait Net {
    /// The runtime's TCP stream.
    type Tcp: Send;
    /// The runtime's Unix stream.
    #[cfg(unix)]
    type Unix: Send;

    /// Resolves `"host:port"` on the runtime's resolver.
    fn resolve(target: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
    /// One TCP connect.
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Tcp>> + Send;
    /// Runs `f`, failing with `TimedOut` after `limit`.
    fn timeout<T: Send>(
        limit: Duration,
        f: impl Future<Output = io::Result<T>> + Send,
    ) -> impl Future<Output = io::Result<T>> + Send;
    /// This side's address of a connected TCP stream.
    fn local_addr(s: &Self::Tcp) -> Addr;
    /// One Unix connect.
    #[cfg(unix)]
    fn connect_unix(path: &std::path::Path) -> impl Future<Output = io::Result<Self::Unix>> + Send;
    /// This side's address of a connected Unix stream.
    #[cfg(unix)]
    fn unix_local_addr(s: &Self::Unix) -> Addr;
}

/// The host part of `"host:port"` (the whole target if it has no port).
fn host_of(target: &str) -> &str {
    target.rsplit_once(':').map_or(target, |(host, _)| host)
}

pub(crate) async fn connect<N: Net>(
    tracker: &Tracker,
    config: &DialerConfig,
    target: &str,
) -> io::Result<Tracked<N::Tcp>> {
    let mut dial = tracker.dial(config, target);
    let addrs = if let Ok(addr) = target.parse::<SocketAddr>() {
        vec![addr]
    } else {
        let host = host_of(target);
        dial.dns_start(host);
        match N::resolve(target).await {
            Ok(addrs) => {
                dial.dns_done(host, Ok(&addrs));
                addrs
            }
            Err(e) => {
                dial.dns_done(host, Err(&e));
                dial.failed(&e);
                return Err(e);
            }
        }
    };
    attempts::<N>(config, dial, &addrs).await
}

pub(crate) async fn connect_addr<N: Net>(
    tracker: &Tracker,
    config: &DialerConfig,
    addr: SocketAddr,
) -> io::Result<Tracked<N::Tcp>> {
    let dial = tracker.dial_addr(config, addr);
    attempts::<N>(config, dial, &[addr]).await
}

/// Tries each address in order, within the connect timeout.
async fn attempts<N: Net>(
    config: &DialerConfig,
    mut dial: Dial,
    addrs: &[SocketAddr],
) -> io::Result<Tracked<N::Tcp>> {
    let deadline = config.connect_timeout_value().map(|d| Instant::now() + d);
    let mut last_err = None;
    for &addr in addrs {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            last_err = Some(io::Error::from(io::ErrorKind::TimedOut));
            break;
        }
        let attempt = dial.connect_start(addr);
        let res = match left {
            Some(left) => N::timeout(left, N::connect(addr)).await,
            None => N::connect(addr).await,
        };
        dial.connect_done(&attempt, res.as_ref().map(|_| ()));
        match res {
            Ok(stream) => {
                let conn = dial.established(N::local_addr(&stream), addr);
                return Ok(Tracked::new(stream, conn));
            }
            Err(e) => last_err = Some(e),
        }
    }
    let err = last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    });
    dial.failed(&err);
    Err(err)
}

#[cfg(unix)]
pub(crate) async fn connect_unix<N: Net>(
    tracker: &Tracker,
    config: &DialerConfig,
    path: &std::path::Path,
) -> io::Result<Tracked<N::Unix>> {
    let mut dial = tracker.dial(config, path.display().to_string());
    let attempt = dial.connect_start(Addr::unix(path));
    let res = N::connect_unix(path).await;
    dial.connect_done(&attempt, res.as_ref().map(|_| ()));
    match res {
        Ok(stream) => {
            let conn = dial.established(N::unix_local_addr(&stream), Addr::unix(path));
            Ok(Tracked::new(stream, conn))
        }
        Err(e) => {
            dial.failed(&e);
            Err(e)
        }
    }
}

/// The public `Dialer` of one runtime, over the shared logic above.
macro_rules! dialer {
    ($net:ty, $tcp:ty, $unix:ty, $runtime:literal) => {
        #[doc = concat!("Makes tracked outbound connections on ", $runtime, ".")]
        ///
        /// [`connect`](Dialer::connect) resolves the name itself (`on_dns_start` /
        /// `on_dns_done`; an IP literal is not resolved), then tries each address in order
        /// (`on_connect_start` / `on_connect_done` per attempt) until one connects, and finishes
        /// with `on_dial`. With a
        /// [`connect_timeout`](conntrack_core::DialerConfig::connect_timeout) the attempts
        /// together get that long. A failed dial is counted, reported with its error, and
        /// returns that error unchanged. Dropping the future mid-dial reports nothing and
        /// tracks nothing.
        #[derive(Debug, Clone)]
        pub struct Dialer {
            tracker: conntrack_core::Tracker,
            config: conntrack_core::DialerConfig,
        }

        impl Dialer {
            /// A dialer registering its connections with `tracker` under `config`.
            pub fn new(
                tracker: &conntrack_core::Tracker,
                config: conntrack_core::DialerConfig,
            ) -> Self {
                Dialer {
                    tracker: tracker.clone(),
                    config,
                }
            }

            /// The tracker.
            pub fn tracker(&self) -> &conntrack_core::Tracker {
                &self.tracker
            }

            /// The config.
            pub fn config(&self) -> &conntrack_core::DialerConfig {
                &self.config
            }

            /// Resolves `target` (`"host:port"`, or an IP socket address) and connects to the
            /// first address that accepts, trying them in the order the resolver returned.
            pub async fn connect(&self, target: &str) -> std::io::Result<$crate::Tracked<$tcp>> {
                $crate::dialer::connect::<$net>(&self.tracker, &self.config, target).await
            }

            /// Connects to `addr` (no name resolution); the entry's target is the address.
            pub async fn connect_addr(
                &self,
                addr: std::net::SocketAddr,
            ) -> std::io::Result<$crate::Tracked<$tcp>> {
                $crate::dialer::connect_addr::<$net>(&self.tracker, &self.config, addr).await
            }

            /// Connects to a Unix socket at `path`; the entry's target is the path.
            #[cfg(unix)]
            pub async fn connect_unix(
                &self,
                path: impl AsRef<std::path::Path>,
            ) -> std::io::Result<$crate::Tracked<$unix>> {
                $crate::dialer::connect_unix::<$net>(&self.tracker, &self.config, path.as_ref())
                    .await
            }
        }
    };
}
