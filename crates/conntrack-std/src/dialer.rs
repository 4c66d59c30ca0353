//! [`Dialer`]: tracked blocking connects, over the dial algorithm of [`conntrack_core::dialer`]
//! run by [`conntrack_core::blocking`]; this file only supplies std's connect and resolver.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use conntrack_core::blocking;
use conntrack_core::dialer::{self, Runtime};
use conntrack_core::dns::{BoxFuture, Resolve};
use conntrack_core::{Addr, DialerConfig, Tracker};

use crate::Tracked;

/// Name resolution for the [`Dialer`]: the [`Resolve`] trait of `conntrack-core`, and the
/// system resolver. A resolver's future is run by
/// [`conntrack_core::blocking::block_on`]: it must not need an async runtime.
pub mod dns {
    pub use conntrack_core::dns::{BoxFuture, Resolve};

    pub use super::SystemResolver;
}

/// The default resolver: the system's, through `std::net::ToSocketAddrs` (blocking, on the
/// dialing thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        // Resolved when first polled (inside the dial, between the DNS hooks), not now.
        Box::pin(async move { Ok((host.as_str(), port).to_socket_addrs()?.collect()) })
    }
}

/// Blocking std's part of a dial: a racing attempt is a blocking connect on its own thread
/// (bounded by what is left of the connect timeout, since it cannot be cancelled), a dial of
/// one address connects on the calling thread.
#[derive(Debug, Clone, Copy)]
struct Std;

fn connect_blocking(addr: SocketAddr, limit: Option<Duration>) -> io::Result<TcpStream> {
    match limit {
        Some(limit) if limit.is_zero() => Err(dialer::timed_out(limit)),
        Some(limit) => TcpStream::connect_timeout(&addr, limit).map_err(|e| {
            // std's own timer (no OS error) is the dial's connect timeout passing.
            if e.kind() == io::ErrorKind::TimedOut && e.raw_os_error().is_none() {
                dialer::timed_out(limit)
            } else {
                e
            }
        }),
        None => TcpStream::connect(addr),
    }
}

impl Runtime for Std {
    type Stream = TcpStream;

    async fn connect(&self, addr: SocketAddr, limit: Option<Duration>) -> io::Result<TcpStream> {
        blocking::spawn(move || connect_blocking(addr, limit)).await
    }

    async fn connect_only(
        &self,
        addr: SocketAddr,
        limit: Option<Duration>,
    ) -> io::Result<TcpStream> {
        connect_blocking(addr, limit)
    }

    async fn sleep(&self, duration: Duration) {
        blocking::sleep(duration).await;
    }

    fn local_addr(&self, stream: &TcpStream) -> Addr {
        stream.local_addr().map_or(Addr::Unknown, Addr::Inet)
    }
}

/// Makes tracked outbound connections.
///
/// [`connect`](Dialer::connect) resolves the name itself (`on_dns_start` / `on_dns_done`; an
/// IP literal is not resolved), then tries the addresses as Happy Eyeballs (RFC 8305) does:
/// IPv6 and IPv4 interleaved, the next attempt started when one fails or after the config's
/// fallback delay, the first to connect wins, and the config's connect timeout bounds the
/// connect phase. The behaviour, errors and hook order are those of
/// [`conntrack_core::dialer`], the same as on the async adapters: a dead first address does
/// not hold up the next one. Racing attempts are blocking connects on short-lived threads (one
/// per attempt); a dial of one address (an IP literal, a name with one address) connects on the
/// calling thread. An abandoned attempt's thread ends when its connect does (at the latest when
/// the connect timeout passes, if one is set) and closes its socket.
///
/// ```no_run
/// use std::io::Write;
/// use std::time::Duration;
/// use conntrack_core::{DialerConfig, Tracker};
/// use conntrack_std::Dialer;
///
/// let tracker = Tracker::new();
/// let dialer = Dialer::new(
///     &tracker,
///     DialerConfig::new().category("db").connect_timeout(Duration::from_secs(3)),
/// );
/// let mut stream = dialer.connect("localhost:5432")?;
/// stream.write_all(b"hello")?;
/// assert_eq!(tracker.connections()[0].write_bytes, 5);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Dialer {
    inner: dialer::Dialer<Std>,
}

impl Dialer {
    /// A dialer registering its connections with `tracker` under `config`, resolving with the
    /// system resolver.
    pub fn new(tracker: &Tracker, config: DialerConfig) -> Self {
        Dialer {
            inner: dialer::Dialer::new(tracker, config, Std, SystemResolver),
        }
    }

    /// Uses `resolver` for names instead of the system resolver (its future is run by
    /// [`blocking::block_on`]).
    #[must_use]
    pub fn with_resolver(self, resolver: impl Resolve) -> Self {
        Dialer {
            inner: self.inner.with_resolver(resolver),
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

    /// Connects to `target`, `"host:port"` (`"[::1]:443"` for an IPv6 literal).
    ///
    /// # Errors
    ///
    /// As [`conntrack_core::dialer::Dialer::connect`].
    pub fn connect(&self, target: impl AsRef<str>) -> io::Result<Tracked<TcpStream>> {
        let (stream, conn) = blocking::block_on(self.inner.connect(target.as_ref()))?;
        Ok(tcp_tracked(stream, conn).abortable())
    }

    /// Connects to `addr` (no name resolution); the entry's target is the address.
    ///
    /// # Errors
    ///
    /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
    pub fn connect_addr(&self, addr: SocketAddr) -> io::Result<Tracked<TcpStream>> {
        let (stream, conn) = blocking::block_on(self.inner.connect_addr(addr))?;
        Ok(tcp_tracked(stream, conn).abortable())
    }

    /// Connects to a Unix socket at `path`; the entry's target is the path. (std has no connect
    /// timeout for Unix sockets, and none is needed: a local connect does not wait on a peer.)
    ///
    /// # Errors
    ///
    /// The connect error; reported to `on_dial` and counted.
    #[cfg(unix)]
    pub fn connect_unix(
        &self,
        path: impl AsRef<std::path::Path>,
    ) -> io::Result<Tracked<std::os::unix::net::UnixStream>> {
        use std::os::unix::net::UnixStream;
        let path = path.as_ref();
        let local = |s: &UnixStream| {
            s.local_addr()
                .map_or(Addr::Unknown, |a| crate::listener::unix_addr(&a))
        };
        let (stream, conn) = blocking::block_on(self.inner.connect_with(
            path.display().to_string(),
            Addr::unix(path),
            async { UnixStream::connect(path) },
            local,
        ))?;
        Ok(Tracked::new(stream, conn).abortable())
    }
}

/// A dialed TCP stream, tracked with its TCP statistics where the platform has them.
fn tcp_tracked(stream: TcpStream, conn: conntrack_core::Connection) -> Tracked<TcpStream> {
    let tracked = Tracked::new(stream, conn);
    #[cfg(unix)]
    let tracked = tracked.with_tcp_info();
    tracked
}
