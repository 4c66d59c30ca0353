//! [`Dialer`]: tracked blocking connects, reporting name resolution and every attempt.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Instant;

use conntrack_core::{Dial, DialerConfig, Tracker};

use crate::Tracked;

/// Makes tracked outbound connections.
///
/// [`connect`](Dialer::connect) resolves the name itself (`on_dns_start` / `on_dns_done`; an
/// IP literal is not resolved), then tries each address in order (`on_connect_start` /
/// `on_connect_done` per attempt) until one connects, and finishes with `on_dial`. With a
/// [`connect_timeout`](DialerConfig::connect_timeout) the attempts together get that long.
/// A failed dial is counted, reported with its error, and returns that error unchanged.
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
    tracker: Tracker,
    config: DialerConfig,
}

/// The host part of `"host:port"` (the whole target if it has no port).
fn host_of(target: &str) -> &str {
    target.rsplit_once(':').map_or(target, |(host, _)| host)
}

impl Dialer {
    /// A dialer registering its connections with `tracker` under `config`.
    pub fn new(tracker: &Tracker, config: DialerConfig) -> Self {
        Dialer {
            tracker: tracker.clone(),
            config,
        }
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The config.
    pub fn config(&self) -> &DialerConfig {
        &self.config
    }

    /// Resolves `target` (`"host:port"`, or an IP socket address) and connects to the first
    /// address that accepts, trying them in the order the resolver returned.
    pub fn connect(&self, target: &str) -> io::Result<Tracked<TcpStream>> {
        let mut dial = self.tracker.dial(&self.config, target);
        let addrs = if let Ok(addr) = target.parse::<SocketAddr>() {
            vec![addr]
        } else {
            let host = host_of(target);
            dial.dns_start(host);
            match target.to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
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
        self.attempts(dial, &addrs)
    }

    /// Connects to `addr` (no name resolution); the entry's target is the address.
    pub fn connect_addr(&self, addr: SocketAddr) -> io::Result<Tracked<TcpStream>> {
        let dial = self.tracker.dial_addr(&self.config, addr);
        self.attempts(dial, &[addr])
    }

    /// Connects to a Unix socket at `path`; the entry's target is the path. (std has no connect
    /// timeout for Unix sockets, and none is needed: a local connect does not wait on a peer.)
    #[cfg(unix)]
    pub fn connect_unix(
        &self,
        path: impl AsRef<std::path::Path>,
    ) -> io::Result<Tracked<std::os::unix::net::UnixStream>> {
        let path = path.as_ref();
        let mut dial = self.tracker.dial(&self.config, path.display().to_string());
        let attempt = dial.connect_start(conntrack_core::Addr::unix(path));
        let res = std::os::unix::net::UnixStream::connect(path);
        dial.connect_done(&attempt, res.as_ref().map(|_| ()));
        match res {
            Ok(stream) => {
                let local = stream
                    .local_addr()
                    .map_or(conntrack_core::Addr::Unknown, |a| {
                        crate::listener::unix_addr(&a)
                    });
                let conn = dial.established(local, conntrack_core::Addr::unix(path));
                Ok(Tracked::new(stream, conn))
            }
            Err(e) => {
                dial.failed(&e);
                Err(e)
            }
        }
    }

    /// Tries each address in order, within the connect timeout.
    fn attempts(&self, mut dial: Dial, addrs: &[SocketAddr]) -> io::Result<Tracked<TcpStream>> {
        let deadline = self
            .config
            .connect_timeout_value()
            .map(|d| Instant::now() + d);
        let mut last_err = None;
        for &addr in addrs {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                last_err = Some(io::Error::from(io::ErrorKind::TimedOut));
                break;
            }
            let attempt = dial.connect_start(addr);
            let res = match left {
                Some(left) => TcpStream::connect_timeout(&addr, left),
                None => TcpStream::connect(addr),
            };
            dial.connect_done(&attempt, res.as_ref().map(|_| ()));
            match res {
                Ok(stream) => {
                    let local = stream
                        .local_addr()
                        .map_or(conntrack_core::Addr::Unknown, conntrack_core::Addr::Inet);
                    let conn = dial.established(local, addr);
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
}
