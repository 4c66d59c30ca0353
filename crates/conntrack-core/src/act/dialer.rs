//! The dial algorithm, written once for every runtime: target parsing, name resolution, RFC 8305
//! address interleaving, Happy Eyeballs with the configured fallback delay, the connect timeout,
//! and the hooks of every phase, reported through a [`Dial`].
//!
//! A runtime supplies only what a runtime can do, the [`Runtime`] trait (in the manner of hyper's
//! `rt::Timer`): connect one address, sleep, read a socket's local address. Each adapter's
//! `Dialer` is a [`Dialer<R>`] with its runtime and its system resolver, wrapping the stream it
//! returns in its own `Tracked`. The blocking `conntrack-std` dialer runs the same algorithm
//! under [`blocking::block_on`](crate::blocking::block_on), each racing attempt a blocking
//! connect on its own thread, so a dead first address behaves the same there as on tokio.
//!
//! # Behaviour (the same on every runtime)
//!
//! - The target is `"host:port"`, `"[v6]:port"` for an IPv6 literal ([`split_host_port`]). A
//!   target without a port fails with [`InvalidInput`](io::ErrorKind::InvalidInput) before any
//!   DNS hook fires: only `on_dial` reports it.
//! - An IP literal is not resolved (no DNS hooks). A name goes to the [`Resolve`]r between
//!   `on_dns_start` and `on_dns_done`; a name resolving to no address is a DNS failure of kind
//!   [`NotFound`](io::ErrorKind::NotFound) (`"HOST: name resolved to no addresses"`).
//! - Concurrent dials of the same name through one dialer (or its clones) share one lookup:
//!   the first resolves, the others wait for its answer, and their `on_dns_done` says
//!   `coalesced: true` (Go's `DNSDoneInfo.Coalesced`). Each still fires its own
//!   `on_dns_start`/`on_dns_done`. If the dial that was resolving is cancelled, a waiting one
//!   looks up again.
//! - One address is simply connected to (no race machinery). Several are interleaved by family
//!   ([`interleave`], RFC 8305 §4) and raced (§5): the next attempt starts when the previous one
//!   fails or after the config's [`fallback_delay`](DialerConfig::fallback_delay) (250 ms by
//!   default); the first to connect wins. Every attempt fires `on_connect_start` and then
//!   `on_connect_done`: the winner with success, a failed one with its own error, one still
//!   running when another won with an [`Other`](io::ErrorKind::Other) error `"connect attempt
//!   abandoned: another address connected first"` (its socket is closed, never tracked).
//! - The config's [`connect_timeout`](DialerConfig::connect_timeout) bounds the whole connect
//!   phase (not name resolution): when it passes, every running attempt and the dial report
//!   [`TimedOut`](io::ErrorKind::TimedOut), `"connect timed out after {limit:?}"`.
//! - When every attempt fails, the dial fails with the last attempt's error, unchanged.
//! - A dial future dropped before it finishes reports nothing more and tracks nothing.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::act::dial::{ConnectAttempt, Dial};
use crate::act::dns::{Coalescer, Resolve};
use crate::record::info::Addr;
use crate::track::config::DialerConfig;
use crate::track::connection::Connection;
use crate::track::tracker::Tracker;

/// What a dialer needs from a runtime: connect one address, sleep.
///
/// The [`Dialer`] calls these from the future it returns, so they run on whatever drives that
/// future (the runtime's executor, or [`blocking::block_on`](crate::blocking::block_on)).
pub trait Runtime: Send + Sync + 'static {
    /// The connected TCP stream.
    type Stream: Send + 'static;

    /// Connects one socket to `addr`. The future may be dropped at any time (a lost race, a
    /// timeout, a cancelled dial); the dialer enforces the connect timeout itself. `limit` is
    /// what is left of that timeout, for a runtime whose connect cannot be dropped (a blocking
    /// connect on a thread) to bound the attempt with.
    fn connect(
        &self,
        addr: SocketAddr,
        limit: Option<Duration>,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// The only connect of a dial of one address, bounded by the connect timeout `limit`. The
    /// default races [`connect`](Runtime::connect) against [`sleep`](Runtime::sleep); a
    /// blocking runtime connects on the calling thread instead, failing with
    /// [`timed_out`]`(limit)` when the limit passes.
    fn connect_only(
        &self,
        addr: SocketAddr,
        limit: Option<Duration>,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        timed(self, self.connect(addr, limit), limit)
    }

    /// A future ready after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;

    /// This side's address of a connected stream ([`Addr::Unknown`] if it cannot be read).
    fn local_addr(&self, stream: &Self::Stream) -> Addr;
}

/// Runs `f`, failing with [`timed_out`] once `limit` has passed.
async fn timed<R: Runtime + ?Sized, T>(
    rt: &R,
    f: impl Future<Output = io::Result<T>>,
    limit: Option<Duration>,
) -> io::Result<T> {
    let Some(limit) = limit else {
        return f.await;
    };
    let mut f = std::pin::pin!(f);
    let mut timer = std::pin::pin!(rt.sleep(limit));
    poll_fn(|cx| {
        if let Poll::Ready(r) = f.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        timer.as_mut().poll(cx).map(|()| Err(timed_out(limit)))
    })
    .await
}

/// The error of a connect phase that ran past the connect timeout `limit` (kind
/// [`TimedOut`](io::ErrorKind::TimedOut)).
#[must_use]
pub fn timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("connect timed out after {limit:?}"),
    )
}

/// The error `on_connect_done` carries for an attempt abandoned because another one connected
/// first (Go's httptrace reports such an attempt as cancelled).
#[must_use]
pub fn abandoned() -> io::Error {
    io::Error::other("connect attempt abandoned: another address connected first")
}

/// The error of a name that resolved to no address (kind [`NotFound`](io::ErrorKind::NotFound)).
#[must_use]
pub fn no_addresses(host: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host}: name resolved to no addresses"),
    )
}

/// Splits `"host:port"` / `"[v6]:port"` into the host (brackets removed) and the port.
///
/// With a `default_port`, a target without a port (`"example.com"`, `"[::1]"`) takes it. An
/// IPv6 literal needs its brackets, as in Go's `net.SplitHostPort`: `"::1:80"` is ambiguous.
///
/// # Errors
///
/// [`InvalidInput`](io::ErrorKind::InvalidInput), `"\"TARGET\" is not host:port"`.
pub fn split_host_port(target: &str, default_port: Option<u16>) -> io::Result<(&str, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{target:?} is not host:port"),
        )
    };
    let (host, port) = match (target.rsplit_once(':'), default_port) {
        // "[::1]" has a colon but no port after its bracket.
        (Some((h, p)), _) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| bad())?),
        (_, Some(port)) => (target, port),
        _ => return Err(bad()),
    };
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

/// RFC 8305 §4: alternates address families, starting with the family of the first address
/// and keeping the resolver's order within each family.
#[must_use]
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
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

/// Makes tracked outbound connections on the runtime `R`: the algorithm every adapter's
/// `Dialer` runs (see the [module docs](self) for its behaviour).
///
/// It returns the connected stream and its registered [`Connection`]; the adapter wraps them
/// in its `Tracked` stream.
pub struct Dialer<R> {
    tracker: Tracker,
    config: DialerConfig,
    resolver: Arc<dyn Resolve>,
    runtime: R,
    /// Lookups in flight, shared with clones: concurrent dials of one name share one lookup.
    lookups: Arc<Coalescer>,
}

impl<R: Clone> Clone for Dialer<R> {
    fn clone(&self) -> Self {
        Dialer {
            tracker: self.tracker.clone(),
            config: self.config.clone(),
            resolver: Arc::clone(&self.resolver),
            runtime: self.runtime.clone(),
            lookups: Arc::clone(&self.lookups),
        }
    }
}

impl<R> fmt::Debug for Dialer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type Connecting<'a, S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send + 'a>>;
type Timer<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

enum Step<S> {
    Done(usize, io::Result<S>),
    Fallback,
    TimedOut,
}

impl<R: Runtime> Dialer<R> {
    /// A dialer registering with `tracker` under `config`, connecting on `runtime` and resolving
    /// names with `resolver` (the runtime's system resolver, usually).
    pub fn new(
        tracker: &Tracker,
        config: DialerConfig,
        runtime: R,
        resolver: impl Resolve,
    ) -> Self {
        Dialer {
            tracker: tracker.clone(),
            config,
            resolver: Arc::new(resolver),
            runtime,
            lookups: Arc::default(),
        }
    }

    /// Uses `resolver` for names instead.
    #[must_use]
    pub fn with_resolver(mut self, resolver: impl Resolve) -> Self {
        self.resolver = Arc::new(resolver);
        self.lookups = Arc::default();
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

    /// The runtime.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Connects to `target`, `"host:port"` (`"[::1]:443"` for an IPv6 literal).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a bad target, the resolver's error (or `NotFound` for no address),
    /// `TimedOut` when the connect timeout passes, or the last attempt's error, unchanged.
    /// Every failure is also reported to `on_dial` and counted.
    pub async fn connect(&self, target: &str) -> io::Result<(R::Stream, Connection)> {
        self.connect_default_port(target, None).await
    }

    /// [`connect`](Dialer::connect), with `default_port` for a target that has none (a URI's
    /// scheme port, say).
    ///
    /// # Errors
    ///
    /// As [`connect`](Dialer::connect).
    pub async fn connect_default_port(
        &self,
        target: &str,
        default_port: Option<u16>,
    ) -> io::Result<(R::Stream, Connection)> {
        let mut dial = self.tracker.dial(&self.config, target);
        let (host, port) = match split_host_port(target, default_port) {
            Ok(hp) => hp,
            Err(e) => {
                dial.failed(&e);
                return Err(e);
            }
        };
        dial.admit(&self.config).await?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            let res = self.connect_one(&mut dial, SocketAddr::new(ip, port)).await;
            return self.finish(dial, res);
        }
        let (resolved, coalesced) = self
            .lookups
            .resolve(&*self.resolver, host, port, || dial.dns_start(host))
            .await;
        let resolved = match resolved {
            Ok(a) if a.is_empty() => Err(no_addresses(host)),
            other => other,
        };
        let addrs = match resolved {
            Ok(a) => {
                dial.dns_done_coalesced(host, Ok(&a), coalesced);
                a
            }
            Err(e) => {
                dial.dns_done_coalesced(host, Err(&e), coalesced);
                dial.failed(&e);
                return Err(e);
            }
        };
        let res = if let [addr] = addrs[..] {
            self.connect_one(&mut dial, addr).await
        } else {
            self.race(&mut dial, interleave(addrs)).await
        };
        self.finish(dial, res)
    }

    /// Connects to one address (no resolution, no DNS hooks); the target is the address.
    ///
    /// # Errors
    ///
    /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
    pub async fn connect_addr(&self, addr: SocketAddr) -> io::Result<(R::Stream, Connection)> {
        let mut dial = self.tracker.dial_addr(&self.config, addr);
        dial.admit(&self.config).await?;
        let res = self.connect_one(&mut dial, addr).await;
        self.finish(dial, res)
    }

    /// Dials something other than a TCP address (a Unix socket path, say) with the same hooks,
    /// connect timeout and reporting: `target` is what the entry shows, `remote` the address
    /// attempted, `connect` the runtime's connect and `local` reads the connected stream's
    /// own address.
    ///
    /// # Errors
    ///
    /// The connect error, or `TimedOut`; reported to `on_dial` and counted.
    pub async fn connect_with<S>(
        &self,
        target: impl Into<Arc<str>>,
        remote: Addr,
        connect: impl Future<Output = io::Result<S>>,
        local: impl FnOnce(&S) -> Addr,
    ) -> io::Result<(S, Connection)> {
        let mut dial = self.tracker.dial(&self.config, target);
        dial.admit(&self.config).await?;
        let attempt = dial.connect_start(remote.clone());
        let limit = self.config.connect_timeout_value();
        let res = timed(&self.runtime, connect, limit).await;
        dial.connect_done(&attempt, res.as_ref().map(|_| ()));
        match res {
            Ok(stream) => {
                let conn = dial.established(local(&stream), remote);
                Ok((stream, conn))
            }
            Err(e) => {
                dial.failed(&e);
                Err(e)
            }
        }
    }

    /// Registers the connection of a finished connect phase, or reports the dial's failure.
    fn finish(
        &self,
        dial: Dial,
        res: io::Result<(R::Stream, Addr)>,
    ) -> io::Result<(R::Stream, Connection)> {
        match res {
            // The remote address is the winning attempt's: no getpeername needed.
            Ok((stream, remote)) => {
                let local = self.runtime.local_addr(&stream);
                Ok((stream, dial.established(local, remote)))
            }
            Err(e) => {
                dial.failed(&e);
                Err(e)
            }
        }
    }

    /// The only connect attempt of a dial, reported as [`race`](Self::race) reports each
    /// attempt but without its machinery: no boxed attempt, no attempt list, no timer unless a
    /// connect timeout is set.
    async fn connect_one(
        &self,
        dial: &mut Dial,
        addr: SocketAddr,
    ) -> io::Result<(R::Stream, Addr)> {
        let attempt = dial.connect_start(addr);
        let limit = self.config.connect_timeout_value();
        let res = self.runtime.connect_only(addr, limit).await;
        dial.connect_done(&attempt, res.as_ref().map(|_| ()));
        res.map(|s| (s, Addr::Inet(addr)))
    }

    /// Races connect attempts (RFC 8305 §5), reporting each as the module docs say.
    async fn race<'a>(
        &'a self,
        dial: &mut Dial,
        addrs: Vec<SocketAddr>,
    ) -> io::Result<(R::Stream, Addr)> {
        let rt = &self.runtime;
        let delay = self.config.fallback_delay_value();
        let timeout = self.config.connect_timeout_value();
        // Read only with a timeout to measure against (a clock reading less per dial).
        let started = timeout.map(|_| std::time::Instant::now());
        let mut queue = addrs.into_iter();
        let mut running: Vec<(ConnectAttempt, Connecting<'a, R::Stream>)> = Vec::new();
        let mut fallback: Option<Timer<'a>> = None;
        let mut deadline: Option<Timer<'a>> =
            timeout.map(|t| -> Timer<'a> { Box::pin(rt.sleep(t)) });
        let mut last_err = None;
        let mut start_next = |dial: &Dial,
                              running: &mut Vec<(ConnectAttempt, Connecting<'a, R::Stream>)>,
                              fallback: &mut Option<Timer<'a>>| {
            if let Some(addr) = queue.next() {
                let attempt = dial.connect_start(addr);
                let left = timeout
                    .zip(started)
                    .map(|(t, s)| t.saturating_sub(s.elapsed()));
                let connecting: Connecting<'a, R::Stream> = Box::pin(rt.connect(addr, left));
                running.push((attempt, connecting));
                // The fallback timer only matters while another address waits its turn.
                *fallback = (queue.len() > 0).then(|| -> Timer<'a> { Box::pin(rt.sleep(delay)) });
            } else {
                *fallback = None;
            }
        };
        start_next(dial, &mut running, &mut fallback);
        loop {
            if running.is_empty() {
                // Every attempt failed (there was at least one: the list is never empty).
                return Err(last_err.unwrap_or_else(|| no_addresses(dial.target())));
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
                    let (winner, _) = running.remove(i);
                    dial.connect_done(&winner, Ok(()));
                    if !running.is_empty() {
                        let lost = abandoned();
                        // In the order they started.
                        for (attempt, _) in running.drain(..) {
                            dial.connect_done(&attempt, Err(&lost));
                        }
                    }
                    return Ok((stream, winner.addr().clone()));
                }
                // An attempt that failed once the connect timeout has passed (a blocking
                // connect bounded by the time left ends with its own timeout) is the timeout,
                // reported as such for every attempt still running, in the order they started.
                Step::Done(_, Err(_))
                    if timeout.zip(started).is_some_and(|(t, s)| s.elapsed() >= t) =>
                {
                    let e = timed_out(timeout.unwrap_or_default());
                    for (attempt, _) in running.drain(..) {
                        dial.connect_done(&attempt, Err(&e));
                    }
                    return Err(e);
                }
                Step::Done(i, Err(e)) => {
                    let (attempt, _) = running.remove(i);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        let split = |t| split_host_port(t, None);
        assert_eq!(split("localhost:80").unwrap(), ("localhost", 80));
        assert_eq!(split("[::1]:443").unwrap(), ("::1", 443));
        assert_eq!(split("[fe80::1]:80").unwrap(), ("fe80::1", 80));
        for bad in [
            "localhost",
            ":80",
            "::1:80",
            "[::1:80",
            "[]:80",
            "localhost:http",
            "[::1]",
            "",
        ] {
            let e = split(bad).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(e.to_string(), format!("{bad:?} is not host:port"));
        }
    }

    #[test]
    fn default_port() {
        let split = |t| split_host_port(t, Some(443));
        assert_eq!(split("example.com").unwrap(), ("example.com", 443));
        assert_eq!(split("[::1]").unwrap(), ("::1", 443));
        assert_eq!(split("example.com:8443").unwrap(), ("example.com", 8443));
        assert!(split("::1").is_err(), "an IPv6 literal needs brackets");
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
        assert_eq!(interleave(vec![]), vec![]);
    }
}
