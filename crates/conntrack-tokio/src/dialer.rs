//! [`Dialer`]: tracked outbound connections with DNS and per-attempt hooks, Happy Eyeballs and a
//! connect timeout.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use conntrack_core::{Addr, ConnectAttempt, Dial, DialerConfig, Tracker};
use tokio::net::TcpStream;

use crate::Tracked;

/// A boxed, sendable future (what [`Resolve`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Name resolution for a [`Dialer`]: bring your own resolver (e.g. hickory) or, in tests, hand
/// back a chosen address list.
///
/// Any `Fn(String, u16) -> impl Future<Output = io::Result<Vec<SocketAddr>>>` is a resolver.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host` (a name, never an IP literal) for `port`.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

impl<F, Fut> Resolve for F
where
    F: Fn(String, u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'static,
{
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(self(host.to_owned(), port))
    }
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

/// Makes tracked outbound TCP (and Unix) connections.
///
/// [`connect`](Dialer::connect) resolves the name itself, firing `on_dns_start` /
/// `on_dns_done`, then tries the addresses as Happy Eyeballs (RFC 8305) does: IPv6 and IPv4
/// interleaved, the next attempt started when one fails or after the config's fallback delay
/// (300 ms by default), the first to connect wins and the others are dropped untracked. Each
/// attempt fires `on_connect_start` and then `on_connect_done`, with its own error if it failed
/// or, if it was still running when another attempt won, an error of kind
/// [`Other`](io::ErrorKind::Other) saying so (Go's httptrace reports such an attempt as
/// cancelled). The config's connect timeout bounds the whole connect phase, every attempt
/// together (name resolution is not included): when it passes, each running attempt reports
/// `TimedOut` and so does the dial. The connection is registered with the dialed `target`, the
/// DNS and connect timings, and the config's category and hooks, plus any
/// [`trace`](conntrack_core::trace) scope around the call.
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
#[derive(Clone)]
pub struct Dialer {
    tracker: Tracker,
    config: DialerConfig,
    resolver: Arc<dyn Resolve>,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer registering with `tracker` under `config`, resolving with the system resolver.
    pub fn new(tracker: &Tracker, config: DialerConfig) -> Self {
        Dialer {
            tracker: tracker.clone(),
            config,
            resolver: Arc::new(SystemResolver),
        }
    }

    /// Uses `resolver` for names instead of the system resolver.
    #[must_use]
    pub fn with_resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The config.
    pub fn config(&self) -> &DialerConfig {
        &self.config
    }

    /// Connects to `target`, `"host:port"` (`"[::1]:443"` for an IPv6 literal). An IP literal
    /// is not resolved and fires no DNS hooks.
    ///
    /// # Errors
    ///
    /// The resolver's error, `TimedOut` when the connect timeout passes, or the last connect
    /// attempt's error, unchanged. Every failure is also reported to `on_dial` and counted.
    pub async fn connect(&self, target: &str) -> io::Result<Tracked<TcpStream>> {
        let mut dial = self.tracker.dial(&self.config, target);
        let (host, port) = match split_host_port(target) {
            Ok(hp) => hp,
            Err(e) => {
                dial.failed(&e);
                return Err(e);
            }
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            let res = self.connect_one(&mut dial, SocketAddr::new(ip, port)).await;
            return finish(dial, res);
        }
        dial.dns_start(host);
        let resolved = match self.resolver.resolve(host, port).await {
            Ok(a) if a.is_empty() => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host}: name resolved to no addresses"),
            )),
            other => other,
        };
        let addrs = match resolved {
            Ok(a) => {
                dial.dns_done(host, Ok(&a));
                a
            }
            Err(e) => {
                dial.dns_done(host, Err(&e));
                dial.failed(&e);
                return Err(e);
            }
        };
        self.attempts(dial, addrs).await
    }

    /// Connects to one address (no resolution, no DNS hooks).
    ///
    /// # Errors
    ///
    /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
    pub async fn connect_addr(&self, addr: SocketAddr) -> io::Result<Tracked<TcpStream>> {
        let mut dial = self.tracker.dial_addr(&self.config, addr);
        let res = self.connect_one(&mut dial, addr).await;
        finish(dial, res)
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
        let mut dial = self.tracker.dial(&self.config, path.display().to_string());
        let attempt = dial.connect_start(Addr::unix(path));
        let res = self.timed(tokio::net::UnixStream::connect(path)).await;
        match res {
            Ok(stream) => {
                dial.connect_done(&attempt, Ok(()));
                let local = stream
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Addr::unix))
                    .unwrap_or(Addr::Unix(None));
                let conn = dial.established(local, Addr::unix(path));
                Ok(Tracked::new(stream, conn))
            }
            Err(e) => {
                dial.connect_done(&attempt, Err(&e));
                dial.failed(&e);
                Err(e)
            }
        }
    }

    async fn timed<T>(&self, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        match self.config.connect_timeout_value() {
            Some(limit) => tokio::time::timeout(limit, f)
                .await
                .unwrap_or_else(|_| Err(timed_out(limit))),
            None => f.await,
        }
    }

    /// Connects to the resolved addresses: a single address is simply connected to (there is
    /// nothing to race), several go through Happy Eyeballs.
    async fn attempts(
        &self,
        mut dial: Dial,
        addrs: Vec<SocketAddr>,
    ) -> io::Result<Tracked<TcpStream>> {
        let res = if let [addr] = addrs[..] {
            self.connect_one(&mut dial, addr).await
        } else {
            happy_eyeballs(
                &mut dial,
                interleave(addrs),
                self.config.fallback_delay_value(),
                self.config.connect_timeout_value(),
            )
            .await
        };
        finish(dial, res)
    }

    /// The only connect attempt of a dial, reported as [`happy_eyeballs`] reports each attempt
    /// (`connect_start`, then `connect_done` with success, the connect error, or `TimedOut`
    /// when the connect timeout passes) but without its race machinery: no boxed attempt, no
    /// attempt list, no timer unless a connect timeout is set.
    async fn connect_one(
        &self,
        dial: &mut Dial,
        addr: SocketAddr,
    ) -> io::Result<(TcpStream, Addr)> {
        let attempt = dial.connect_start(addr);
        let res = self.timed(TcpStream::connect(addr)).await;
        dial.connect_done(&attempt, res.as_ref().map(|_| ()));
        res.map(|s| (s, Addr::Inet(addr)))
    }
}

/// Registers the connection of a finished connect phase, or reports the dial's failure.
fn finish(dial: Dial, res: io::Result<(TcpStream, Addr)>) -> io::Result<Tracked<TcpStream>> {
    // The remote address is the winning attempt's: no getpeername needed.
    match res.and_then(|(s, remote)| {
        let local = s.local_addr()?;
        Ok((s, local, remote))
    }) {
        Ok((stream, local, remote)) => Ok(Tracked::new(stream, dial.established(local, remote))),
        Err(e) => {
            dial.failed(&e);
            Err(e)
        }
    }
}

fn timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect timed out after {limit:?}"),
    )
}

/// The error `on_connect_done` carries for an attempt abandoned because another one connected
/// first (Go's httptrace reports such an attempt as cancelled).
fn lost_race() -> io::Error {
    io::Error::other("connect attempt abandoned: another address connected first")
}

/// Splits `"host:port"` / `"[v6]:port"`. An IPv6 literal needs its brackets, as in Go's
/// `net.SplitHostPort`: `"::1:80"` is ambiguous and rejected.
fn split_host_port(target: &str) -> io::Result<(&str, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{target:?} is not host:port"),
        )
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains([':', '[', ']']) => return Err(bad()),
        None => host,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// RFC 8305 §4: alternate address families, starting with the family of the first address.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_v6 = first.is_ipv6();
    let (a, b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

type Attempt = (
    ConnectAttempt,
    Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>,
);

enum Step {
    Done(usize, io::Result<TcpStream>),
    Fallback,
    TimedOut,
}

/// Races connect attempts (RFC 8305 §5): a new one starts when the previous fails or `delay`
/// passes; the first success wins. Every attempt started gets its `connect_done`: the winner
/// with success, a failed one with its error, one still running when another wins with
/// [`lost_race`] (its socket is dropped, never tracked), and every running one with `TimedOut`
/// when `timeout` passes. Dropping the future (a cancelled dial) reports nothing more.
async fn happy_eyeballs(
    dial: &mut Dial,
    addrs: Vec<SocketAddr>,
    delay: Duration,
    timeout: Option<Duration>,
) -> io::Result<(TcpStream, Addr)> {
    let mut queue = addrs.into_iter();
    let mut running: Vec<Attempt> = Vec::new();
    let mut fallback: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut deadline = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
    let mut last_err = None;
    let mut start_next = |dial: &Dial, running: &mut Vec<Attempt>, fallback: &mut Option<_>| {
        if let Some(addr) = queue.next() {
            let attempt = dial.connect_start(addr);
            running.push((attempt, Box::pin(TcpStream::connect(addr))));
            // The fallback timer only matters while another address is waiting its turn.
            *fallback = (queue.len() > 0).then(|| Box::pin(tokio::time::sleep(delay)));
        } else {
            *fallback = None;
        }
    };
    start_next(dial, &mut running, &mut fallback);
    loop {
        if running.is_empty() {
            return Err(last_err.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
            }));
        }
        let step = poll_fn(|cx| {
            for (i, (_, fut)) in running.iter_mut().enumerate() {
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    return Poll::Ready(Step::Done(i, r));
                }
            }
            if deadline
                .as_mut()
                .is_some_and(|d| d.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Step::TimedOut);
            }
            if fallback
                .as_mut()
                .is_some_and(|t| t.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Step::Fallback);
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Done(i, Ok(stream)) => {
                let (winner, _) = running.swap_remove(i);
                dial.connect_done(&winner, Ok(()));
                if !running.is_empty() {
                    let lost = lost_race();
                    for (attempt, _) in running.drain(..) {
                        dial.connect_done(&attempt, Err(&lost));
                    }
                }
                return Ok((stream, winner.addr().clone()));
            }
            Step::Done(i, Err(e)) => {
                let (attempt, _) = running.swap_remove(i);
                dial.connect_done(&attempt, Err(&e));
                last_err = Some(e);
                start_next(dial, &mut running, &mut fallback);
            }
            Step::Fallback => start_next(dial, &mut running, &mut fallback),
            Step::TimedOut => {
                let e = timed_out(timeout.unwrap_or_default());
                for (attempt, _) in running.drain(..) {
                    dial.connect_done(&attempt, Err(&e));
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("localhost:80").unwrap(), ("localhost", 80));
        assert_eq!(split_host_port("[::1]:443").unwrap(), ("::1", 443));
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port(":80").is_err());
        assert_eq!(split_host_port("[fe80::1]:80").unwrap(), ("fe80::1", 80));
        assert!(
            split_host_port("::1:80").is_err(),
            "an IPv6 literal needs brackets"
        );
        assert!(split_host_port("[::1:80").is_err());
        assert!(split_host_port("[]:80").is_err());
        assert!(split_host_port("localhost:http").is_err());
    }

    #[test]
    fn interleaves_families() {
        let v6a: SocketAddr = "[::1]:1".parse().unwrap();
        let v6b: SocketAddr = "[::1]:2".parse().unwrap();
        let v4a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v4b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let v4c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        assert_eq!(
            interleave(vec![v6a, v6b, v4a, v4b, v4c]),
            vec![v6a, v4a, v6b, v4b, v4c]
        );
        assert_eq!(interleave(vec![v4a, v6a, v4b]), vec![v4a, v6a, v4b]);
    }
}
