//! [`Dialer`]: tracked outbound connections on tokio, over the dial algorithm of
//! [`conntrack_core::dialer`]; this file only supplies tokio's connect, sleep and resolver.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use conntrack_core::dialer::{self, Runtime};
use conntrack_core::dns::{BoxFuture, Resolve};
use conntrack_core::{Addr, DialerConfig, Tracker};
use tokio::net::TcpStream;

use crate::Tracked;

/// Name resolution for the [`Dialer`]: the [`Resolve`] trait of `conntrack-core`, and tokio's
/// system resolver.
pub mod dns {
    pub use conntrack_core::dns::{BoxFuture, Resolve};

    pub use super::SystemResolver;
}

/// The default resolver: the system's, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// tokio's part of a dial.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tokio;

impl Runtime for Tokio {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr, _: Option<Duration>) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn local_addr(&self, stream: &TcpStream) -> Addr {
        stream.local_addr().map_or(Addr::Unknown, Addr::Inet)
    }
}

/// Makes tracked outbound TCP (and Unix) connections.
///
/// [`connect`](Dialer::connect) resolves the name itself, firing `on_dns_start` /
/// `on_dns_done`, then tries the addresses as Happy Eyeballs (RFC 8305) does: IPv6 and IPv4
/// interleaved, the next attempt started when one fails or after the config's fallback delay
/// (250 ms by default), the first to connect wins and the others are dropped untracked. The
/// config's connect timeout bounds the whole connect phase. Each attempt fires
/// `on_connect_start` and `on_connect_done`; the dial finishes with `on_dial`. The behaviour,
/// errors and hook order are those of [`conntrack_core::dialer`], the same on every adapter.
///
/// A dial future dropped before it finishes (cancelled) reports nothing more and tracks
/// nothing: its pending attempts are closed.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::time::Duration;
/// use conntrack_core::{DialerConfig, Tracker};
/// use conntrack_tokio::Dialer;
/// use tokio::io::AsyncWriteExt;
///
/// let tracker = Tracker::new();
/// let dialer = Dialer::new(
///     &tracker,
///     DialerConfig::new().category("db").connect_timeout(Duration::from_secs(5)),
/// );
/// let mut stream = dialer.connect("localhost:5432").await?;
/// stream.write_all(b"hello").await?;
/// println!("{:?}", stream.info().timings);
/// # Ok(())
/// # }
/// # let _ = run;
/// ```
#[derive(Debug, Clone)]
pub struct Dialer {
    // Shared: hyper-util clones its connector for every request (its lazy connect), so a
    // clone is one reference count, not one per part of the dialer.
    inner: std::sync::Arc<dialer::Dialer<Tokio>>,
}

impl Dialer {
    /// A dialer registering with `tracker` under `config`, resolving with the system resolver.
    pub fn new(tracker: &Tracker, config: DialerConfig) -> Self {
        Dialer {
            inner: std::sync::Arc::new(dialer::Dialer::new(tracker, config, Tokio, SystemResolver)),
        }
    }

    /// Uses `resolver` for names instead of the system resolver.
    #[must_use]
    pub fn with_resolver(self, resolver: impl Resolve) -> Self {
        let inner = std::sync::Arc::unwrap_or_clone(self.inner);
        Dialer {
            inner: std::sync::Arc::new(inner.with_resolver(resolver)),
        }
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        self.inner.tracker()
    }

    /// The config.
    pub fn config(&self) -> &DialerConfig {
        self.inner.config()
    }

    /// Connects to `target`, `"host:port"` (`"[::1]:443"` for an IPv6 literal). An IP literal
    /// is not resolved and fires no DNS hooks.
    ///
    /// # Errors
    ///
    /// As [`conntrack_core::dialer::Dialer::connect`]: a bad target, the resolver's error,
    /// `TimedOut`, or the last connect attempt's error, unchanged; reported and counted.
    pub async fn connect(&self, target: impl AsRef<str>) -> io::Result<Tracked<TcpStream>> {
        let (stream, conn) = self.inner.connect(target.as_ref()).await?;
        Ok(tcp_tracked(stream, conn))
    }

    /// Connects to one address (no resolution, no DNS hooks).
    ///
    /// # Errors
    ///
    /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
    pub async fn connect_addr(&self, addr: SocketAddr) -> io::Result<Tracked<TcpStream>> {
        let (stream, conn) = self.inner.connect_addr(addr).await?;
        Ok(tcp_tracked(stream, conn))
    }

    /// Connects to a Unix socket at `path`.
    ///
    /// # Errors
    ///
    /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
    #[cfg(unix)]
    pub async fn connect_unix(
        &self,
        path: impl AsRef<std::path::Path>,
    ) -> io::Result<Tracked<tokio::net::UnixStream>> {
        let path = path.as_ref();
        let local = |s: &tokio::net::UnixStream| {
            s.local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Addr::unix))
                .unwrap_or(Addr::Unix(None))
        };
        let connect = tokio::net::UnixStream::connect(path);
        let (stream, conn) = self
            .inner
            .connect_with(path.display().to_string(), Addr::unix(path), connect, local)
            .await?;
        // Registered so that an abort shuts the socket down (no TCP statistics on it).
        Ok(Tracked::new(stream, conn).with_tcp_info())
    }
}

/// A dialed TCP stream, tracked with its TCP statistics where the platform has them.
pub(crate) fn tcp_tracked(
    stream: TcpStream,
    conn: conntrack_core::Connection,
) -> Tracked<TcpStream> {
    let tracked = Tracked::new(stream, conn);
    #[cfg(unix)]
    let tracked = tracked.with_tcp_info();
    tracked
}
