//! The public `Dialer` of each runtime module: a thin wrapper over
//! [`conntrack_core::dialer::Dialer`], which holds the whole dial algorithm (target parsing,
//! resolution, interleaving, Happy Eyeballs, the connect timeout, the hooks). A runtime module
//! supplies only its [`Runtime`](conntrack_core::dialer::Runtime) (connect, sleep) and its
//! system resolver.

/// The public `Dialer` of one runtime.
#[cfg(any(feature = "smol", feature = "async-std"))] // only a runtime feature uses it
macro_rules! dialer {
    ($rt:expr, $rt_ty:ty, $resolver:expr, $tcp:ty, $unix:ty, $runtime:literal) => {
        #[doc = concat!("Makes tracked outbound connections on ", $runtime, ".")]
        ///
        /// [`connect`](Dialer::connect) resolves the name itself (`on_dns_start` /
        /// `on_dns_done`; an IP literal is not resolved), then tries the addresses as Happy
        /// Eyeballs (RFC 8305) does: IPv6 and IPv4 interleaved, the next attempt started when
        /// one fails or after the config's fallback delay, the first to connect wins. Each
        /// attempt fires `on_connect_start` / `on_connect_done` and the dial finishes with
        /// `on_dial`; the config's connect timeout bounds the connect phase. The behaviour,
        /// errors and hook order are those of [`conntrack_core::dialer`], the same on every
        /// adapter. Dropping the future mid-dial reports nothing and tracks nothing.
        #[derive(Debug, Clone)]
        pub struct Dialer {
            inner: conntrack_core::dialer::Dialer<$rt_ty>,
        }

        impl Dialer {
            /// A dialer registering its connections with `tracker` under `config`, resolving
            /// names with the system resolver.
            pub fn new(
                tracker: &conntrack_core::Tracker,
                config: conntrack_core::DialerConfig,
            ) -> Self {
                Dialer {
                    inner: conntrack_core::dialer::Dialer::new(tracker, config, $rt, $resolver),
                }
            }

            /// Uses `resolver` for names instead of the system resolver.
            #[must_use]
            pub fn with_resolver(self, resolver: impl $crate::dns::Resolve) -> Self {
                Dialer {
                    inner: self.inner.with_resolver(resolver),
                }
            }

            /// The tracker.
            pub fn tracker(&self) -> &conntrack_core::Tracker {
                self.inner.tracker()
            }

            /// The config.
            pub fn config(&self) -> &conntrack_core::DialerConfig {
                self.inner.config()
            }

            /// Connects to `target`, `"host:port"` (`"[::1]:443"` for an IPv6 literal).
            ///
            /// # Errors
            ///
            /// As [`conntrack_core::dialer::Dialer::connect`].
            pub async fn connect(
                &self,
                target: impl AsRef<str>,
            ) -> std::io::Result<$crate::Tracked<$tcp>> {
                let (stream, conn) = self.inner.connect(target.as_ref()).await?;
                let tracked = $crate::Tracked::new(stream, conn);
                #[cfg(unix)]
                let tracked = tracked.with_tcp_info();
                Ok(tracked)
            }

            /// Connects to `addr` (no name resolution); the entry's target is the address.
            ///
            /// # Errors
            ///
            /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
            pub async fn connect_addr(
                &self,
                addr: std::net::SocketAddr,
            ) -> std::io::Result<$crate::Tracked<$tcp>> {
                let (stream, conn) = self.inner.connect_addr(addr).await?;
                let tracked = $crate::Tracked::new(stream, conn);
                #[cfg(unix)]
                let tracked = tracked.with_tcp_info();
                Ok(tracked)
            }

            /// Connects to a Unix socket at `path`; the entry's target is the path.
            ///
            /// # Errors
            ///
            /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
            #[cfg(unix)]
            pub async fn connect_unix(
                &self,
                path: impl AsRef<std::path::Path>,
            ) -> std::io::Result<$crate::Tracked<$unix>> {
                let path = path.as_ref();
                let local = |s: &$unix| {
                    s.local_addr().map_or(conntrack_core::Addr::Unknown, |a| {
                        $crate::listener::unix_addr(&a)
                    })
                };
                let (stream, conn) = self
                    .inner
                    .connect_with(
                        path.display().to_string(),
                        conntrack_core::Addr::unix(path),
                        <$unix>::connect(path),
                        local,
                    )
                    .await?;
                // Registered so that an abort shuts the socket down (no TCP statistics).
                Ok($crate::Tracked::new(stream, conn).with_tcp_info())
            }
        }
    };
}
