//! [`Listener`]: a tracked accept loop over any tokio listener.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use conntrack_core::{
    AcceptReady, Addr, AdmitWaiting, Connection, ListenerConfig, TcpInfoGuard, Tracker,
};

use crate::Tracked;

/// A listener [`Listener`] can wrap: tokio's `TcpListener` and `UnixListener`, or your own.
pub trait Accept {
    /// The accepted stream.
    type Stream;
    /// The peer address `accept` returns with the stream.
    type PeerAddr;

    /// Polls for the next connection. It takes `&self`, as tokio's own listeners do, so a
    /// [`Listener`] can be shared by tasks (in an `Arc`) and accept from all of them.
    fn poll_accept(&self, cx: &mut Context<'_>)
        -> Poll<io::Result<(Self::Stream, Self::PeerAddr)>>;

    /// The listener's own address, for reporting failed accepts.
    fn listen_addr(&self) -> Addr;

    /// `(local, remote)` of an accepted stream, for the tracker entry. `listen` is the
    /// listener's address, as [`listen_addr`](Accept::listen_addr) gave it when the
    /// [`Listener`] was made (see [`Addr::fixed_local`]).
    fn stream_addrs(
        &self,
        listen: &Addr,
        stream: &Self::Stream,
        peer: &Self::PeerAddr,
    ) -> (Addr, Addr);

    /// Registers an accepted stream's socket for TCP statistics
    /// ([`Connection::watch_tcp_info`]); the default registers nothing.
    fn watch_tcp_info(_stream: &Self::Stream, _conn: &Connection) -> Option<TcpInfoGuard> {
        None
    }

    /// The listener's address in the listener's own type, what [`Listener::local_addr`] (and
    /// axum's `local_addr`) returns.
    ///
    /// # Errors
    ///
    /// As the inner listener's `local_addr`; the default says it is not known.
    fn bound_addr(&self) -> io::Result<Self::PeerAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "listener address not known",
        ))
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type PeerAddr = std::net::SocketAddr;

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Stream, Self::PeerAddr)>> {
        tokio::net::TcpListener::poll_accept(self, cx)
    }

    fn listen_addr(&self) -> Addr {
        self.local_addr().map_or(Addr::Unknown, Addr::Inet)
    }

    fn stream_addrs(
        &self,
        listen: &Addr,
        stream: &Self::Stream,
        peer: &Self::PeerAddr,
    ) -> (Addr, Addr) {
        let local = listen
            .fixed_local()
            .unwrap_or_else(|| stream.local_addr().map_or(Addr::Unknown, Addr::Inet));
        (local, Addr::Inet(*peer))
    }

    fn bound_addr(&self) -> io::Result<Self::PeerAddr> {
        self.local_addr()
    }

    #[cfg(unix)]
    fn watch_tcp_info(stream: &Self::Stream, conn: &Connection) -> Option<TcpInfoGuard> {
        Some(conn.watch_tcp_info(stream))
    }
}

#[cfg(unix)]
fn unix_addr(a: &tokio::net::unix::SocketAddr) -> Addr {
    Addr::Unix(a.as_pathname().map(std::sync::Arc::from))
}

#[cfg(unix)]
impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type PeerAddr = tokio::net::unix::SocketAddr;

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Stream, Self::PeerAddr)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
    }

    fn listen_addr(&self) -> Addr {
        self.local_addr().map_or(Addr::Unknown, |a| unix_addr(&a))
    }

    fn stream_addrs(
        &self,
        listen: &Addr,
        _stream: &Self::Stream,
        peer: &Self::PeerAddr,
    ) -> (Addr, Addr) {
        (listen.clone(), unix_addr(peer))
    }

    fn bound_addr(&self) -> io::Result<Self::PeerAddr> {
        self.local_addr()
    }

    fn watch_tcp_info(stream: &Self::Stream, conn: &Connection) -> Option<TcpInfoGuard> {
        // No TCP statistics on a Unix socket; registered so that an abort shuts it down.
        Some(conn.watch_socket(stream))
    }
}

/// How long the server integrations (axum, tonic) wait after an accept error that is not about
/// one connection (like `EMFILE`) before accepting again, so the accept loop does not spin.
/// axum pauses its own listeners for one second; a tenth of that resumes serving sooner once
/// descriptors free up and still keeps the loop at ten tries a second.
#[cfg(any(feature = "axum", feature = "tonic"))]
pub(crate) const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether an accept error concerns only the connection being accepted (the next accept may
/// well succeed at once), as axum and hyper classify them.
#[cfg(any(feature = "axum", feature = "tonic"))]
pub(crate) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What [`Listener::accept`] yields: the tracked stream and the peer address.
pub type Accepted<L> = (Tracked<<L as Accept>::Stream>, <L as Accept>::PeerAddr);

/// A listener whose accepted connections are tracked.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use conntrack_core::{ListenerConfig, Tracker};
/// use conntrack_tokio::Listener;
///
/// let tracker = Tracker::new();
/// let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     // serve `stream`; its entry leaves the tracker when it is dropped
/// #   drop((stream, peer));
/// }
/// # }
/// # let _ = run;
/// ```
#[derive(Debug)]
pub struct Listener<L: Accept> {
    inner: L,
    tracker: Tracker,
    config: ListenerConfig,
    local: Addr,
    /// What an accept that has not returned yet waits on, kept between polls.
    waiting: Mutex<Waiting<L>>,
}

/// What [`Listener::poll_accept`] keeps between polls while the config's limit makes it wait.
struct Waiting<L: Accept> {
    /// The wait for a free slot before accepting.
    ready: Option<AcceptReady>,
    /// A connection accepted after another accepter took the last slot: it waits, queued,
    /// for the next one, and is what the next poll returns. Boxed: the listener stays `Unpin`
    /// whatever the stream type.
    admitting: Option<Box<Admitting<L>>>,
}

/// An accepted connection waiting for a slot: the stream, the peer address, the admission.
type Admitting<L> = (
    <L as Accept>::Stream,
    <L as Accept>::PeerAddr,
    AdmitWaiting<'static>,
);

impl<L: Accept> fmt::Debug for Waiting<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiting")
            .field("ready", &self.ready)
            .field("admitting", &self.admitting.as_ref().map(|a| &a.2))
            .finish()
    }
}

impl<L: Accept> Listener<L> {
    /// Wraps `inner`; its connections are registered with `tracker` under `config`.
    pub fn new(tracker: &Tracker, inner: L, config: ListenerConfig) -> Self {
        let local = inner.listen_addr();
        Listener {
            inner,
            tracker: tracker.clone(),
            config,
            local,
            waiting: Mutex::new(Waiting {
                ready: None,
                admitting: None,
            }),
        }
    }

    /// Accepts the next connection, registers it and returns it tracked.
    ///
    /// A failed accept is counted, reported to `on_accept` with the error, and returned
    /// unchanged; the listener keeps working.
    ///
    /// Cancel safe, as tokio's own `accept` is: a connection accepted by a call that is then
    /// dropped (in a `select!`) while it waits for a slot of the config's limit is kept by the
    /// listener and returned by the next call.
    pub async fn accept(&self) -> io::Result<Accepted<L>> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// The polling form of [`accept`](Listener::accept).
    ///
    /// With a [`max_connections`](ListenerConfig::max_connections) limit in
    /// [`LimitMode::Wait`](conntrack_core::LimitMode::Wait) it stays pending while the limit
    /// is reached (new connections wait in the kernel's backlog,
    /// [`Tracker::accept_ready`]). If another accepter takes the last slot between that check
    /// and the accept (another task accepting from this listener, or a listener given the
    /// same config), the connection accepted meanwhile is not refused: it waits, kept by the
    /// listener, for the next free slot ([`Tracker::admit_waiting`]), first come first
    /// served with the other waiters of the limit. A connection refused by a limit
    /// ([`LimitMode::Reject`](conntrack_core::LimitMode::Reject), the per-IP limit) or a
    /// shutdown is closed at once, counted as rejected, and the accept goes on to the next
    /// one.
    ///
    /// As tokio's own `poll_accept` keeps one waker, the listener keeps one wait between polls
    /// (for a free slot, or a connection queued for one), woken for the task of the most
    /// recent call; a call that is not polled again leaves that one wait, and the connection
    /// in it is returned by the next call.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted<L>>> {
        if self.config.max_connections_value().is_none() {
            return self.poll_accept_unlimited(cx);
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let w = &mut *waiting;
        loop {
            if let Some(kept) = &mut w.admitting {
                let admitted = ready!(Pin::new(&mut kept.2).poll(cx));
                let Some(kept) = w.admitting.take() else {
                    unreachable!("polled above");
                };
                let (stream, peer, _) = *kept;
                match admitted {
                    Ok(conn) => return Poll::Ready(Ok(self.track(stream, peer, conn))),
                    // Refused (a shutdown began, or the per-IP limit): closed, next.
                    Err(_) => continue,
                }
            }
            let ready = w
                .ready
                .get_or_insert_with(|| self.tracker.accept_ready(&self.config));
            ready!(Pin::new(ready).poll(cx));
            w.ready = None;
            match ready!(self.inner.poll_accept(cx)) {
                Ok((stream, peer)) => {
                    let (local, remote) = self.inner.stream_addrs(&self.local, &stream, &peer);
                    let mut admitting = self.tracker.admit_waiting(&self.config, local, remote);
                    match Pin::new(&mut admitting).poll(cx) {
                        Poll::Ready(Ok(conn)) => {
                            return Poll::Ready(Ok(self.track(stream, peer, conn)));
                        }
                        Poll::Ready(Err(_)) => {}
                        // Queued for a slot (this task's waker is registered): kept.
                        Poll::Pending => {
                            w.admitting = Some(Box::new((stream, peer, admitting.into_owned())));
                            return Poll::Pending;
                        }
                    }
                }
                Err(e) => {
                    self.tracker.accept_failed(&self.config, &self.local, &e);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// [`poll_accept`](Listener::poll_accept) without a connection limit: nothing ever waits,
    /// so nothing is kept between polls (only a per-IP limit or a shutdown can refuse).
    fn poll_accept_unlimited(&self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted<L>>> {
        loop {
            match ready!(self.inner.poll_accept(cx)) {
                Ok((stream, peer)) => {
                    let (local, remote) = self.inner.stream_addrs(&self.local, &stream, &peer);
                    if let Ok(conn) = self.tracker.admit(&self.config, local, remote) {
                        return Poll::Ready(Ok(self.track(stream, peer, conn)));
                    }
                }
                Err(e) => {
                    self.tracker.accept_failed(&self.config, &self.local, &e);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    fn track(&self, stream: L::Stream, peer: L::PeerAddr, conn: Connection) -> Accepted<L> {
        let tcp = L::watch_tcp_info(&stream, &conn);
        (Tracked::new(stream, conn).with_guard(tcp), peer)
    }

    /// The listener's address, as the wrapped listener's `local_addr` returns it
    /// (`listener.local_addr()?.port()`).
    ///
    /// # Errors
    ///
    /// The wrapped listener's error.
    pub fn local_addr(&self) -> io::Result<L::PeerAddr> {
        self.inner.bound_addr()
    }

    /// The listener's address as the tracker records it (the local address of failed accepts
    /// and, where fixed, of accepted connections).
    pub fn listen_addr(&self) -> &Addr {
        &self.local
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The config.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// The inner listener.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// Unwraps the inner listener.
    pub fn into_inner(self) -> L {
        self.inner
    }
}
