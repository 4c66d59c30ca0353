//! [`Listener`]: a tracked accept loop over a blocking std listener.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use conntrack_core::{blocking, Addr, Connection, ListenerConfig, TcpInfoGuard, Tracker};

use crate::Tracked;

/// A listener [`Listener`] can wrap: std's `TcpListener` and `UnixListener`, or your own.
pub trait Accept {
    /// The accepted stream.
    type Stream;
    /// The peer address `accept` returns with the stream.
    type PeerAddr;

    /// Blocks until the next connection arrives.
    fn accept(&self) -> io::Result<(Self::Stream, Self::PeerAddr)>;

    /// The listener's own address, for reporting failed accepts.
    fn listen_addr(&self) -> Addr;

    /// The listener's address in the listener's own type, what
    /// [`Listener::local_addr`] returns.
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

    /// `(local, remote)` of an accepted stream, for the tracker entry. `listen` is the
    /// listener's address as [`listen_addr`](Accept::listen_addr) gave it when the
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

    /// Wraps an accepted stream. std's sockets are made
    /// [`abortable`](Tracked::abortable), so that an abort wakes a thread blocked on them.
    fn track(&self, stream: Self::Stream, conn: Connection) -> Tracked<Self::Stream> {
        Tracked::new(stream, conn)
    }
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    type PeerAddr = SocketAddr;

    fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self)
    }

    fn listen_addr(&self) -> Addr {
        self.local_addr().map_or(Addr::Unknown, Addr::Inet)
    }

    fn bound_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr()
    }

    fn stream_addrs(&self, listen: &Addr, stream: &TcpStream, peer: &SocketAddr) -> (Addr, Addr) {
        let local = listen
            .fixed_local()
            .unwrap_or_else(|| stream.local_addr().map_or(Addr::Unknown, Addr::Inet));
        (local, Addr::Inet(*peer))
    }

    // The socket is registered for TCP statistics in `track`, before it is made abortable:
    // on Linux and Android that one registration also lets an abort shut it down.
    fn track(&self, stream: TcpStream, conn: Connection) -> Tracked<TcpStream> {
        let tracked = Tracked::new(stream, conn);
        #[cfg(unix)]
        let tracked = tracked.with_tcp_info();
        tracked.abortable()
    }
}

#[cfg(unix)]
pub(crate) fn unix_addr(a: &std::os::unix::net::SocketAddr) -> Addr {
    Addr::Unix(a.as_pathname().map(std::sync::Arc::from))
}

#[cfg(unix)]
impl Accept for std::os::unix::net::UnixListener {
    type Stream = std::os::unix::net::UnixStream;
    type PeerAddr = std::os::unix::net::SocketAddr;

    fn accept(&self) -> io::Result<(Self::Stream, Self::PeerAddr)> {
        std::os::unix::net::UnixListener::accept(self)
    }

    fn listen_addr(&self) -> Addr {
        self.local_addr().map_or(Addr::Unknown, |a| unix_addr(&a))
    }

    fn bound_addr(&self) -> io::Result<Self::PeerAddr> {
        self.local_addr()
    }

    fn stream_addrs(
        &self,
        listen: &Addr,
        _stream: &Self::Stream,
        peer: &Self::PeerAddr,
    ) -> (Addr, Addr) {
        (listen.clone(), unix_addr(peer))
    }

    fn track(&self, stream: Self::Stream, conn: Connection) -> Tracked<Self::Stream> {
        Tracked::new(stream, conn).abortable()
    }
}

/// What [`Listener::accept`] yields: the tracked stream and the peer address.
pub type Accepted<L> = (Tracked<<L as Accept>::Stream>, <L as Accept>::PeerAddr);

/// A listener whose accepted connections are tracked.
///
/// ```no_run
/// use conntrack_core::{ListenerConfig, Tracker};
/// use conntrack_std::Listener;
///
/// let tracker = Tracker::new();
/// let inner = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
/// for stream in listener.incoming() {
///     let stream = stream?;
///     // serve `stream` (on a thread); its entry leaves the tracker when it is dropped
/// #   drop(stream);
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Listener<L> {
    inner: L,
    tracker: Tracker,
    config: ListenerConfig,
    local: Addr,
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
        }
    }

    /// Blocks until the next connection arrives, registers it and returns it tracked.
    ///
    /// A failed accept is counted, reported to `on_accept` with the error, and returned
    /// unchanged; the listener keeps working. On a non-blocking listener `WouldBlock` is
    /// returned as it is, without being counted as a failure. An accept interrupted by a
    /// signal (`Interrupted`) is retried, as std's own `read_exact` and `write_all` retry
    /// theirs; it is neither counted nor reported.
    ///
    /// With a [`max_connections`](ListenerConfig::max_connections) limit in
    /// [`LimitMode::Wait`](conntrack_core::LimitMode::Wait), it first blocks until a slot is
    /// free. If another accepter takes that slot meanwhile (another thread accepting from this
    /// listener, or a listener given the same config), the connection it accepted waits for
    /// the next free slot instead of being refused
    /// ([`Tracker::admit_waiting`](conntrack_core::Tracker::admit_waiting)), first come first
    /// served with the other waiters of the limit. A connection
    /// refused by a limit ([`LimitMode::Reject`](conntrack_core::LimitMode::Reject), the
    /// per-IP limit) or a shutdown is closed at once, counted as rejected, and the accept goes
    /// on to the next one.
    pub fn accept(&self) -> io::Result<Accepted<L>> {
        loop {
            blocking::block_on(self.tracker.accept_ready(&self.config));
            match self.inner.accept() {
                Ok((stream, peer)) => {
                    let (local, remote) = self.inner.stream_addrs(&self.local, &stream, &peer);
                    let admitted = self.tracker.admit_waiting(&self.config, local, remote);
                    if let Ok(conn) = blocking::block_on(admitted) {
                        let tcp = L::watch_tcp_info(&stream, &conn);
                        return Ok((self.inner.track(stream, conn).with_guard(tcp), peer));
                    }
                }
                // A signal arrived while blocked: nothing failed, wait again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A non-blocking listener with nothing to accept has not failed.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    self.tracker.accept_failed(&self.config, &self.local, &e);
                    return Err(e);
                }
            }
        }
    }

    /// An endless iterator over accepted connections, like `TcpListener::incoming`: each item
    /// is [`accept`](Listener::accept) without the peer address.
    pub fn incoming(&self) -> Incoming<'_, L> {
        Incoming { listener: self }
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

/// The iterator returned by [`Listener::incoming`]. It never returns `None`.
#[derive(Debug)]
pub struct Incoming<'a, L> {
    listener: &'a Listener<L>,
}

impl<L: Accept> Iterator for Incoming<'_, L> {
    type Item = io::Result<Tracked<L::Stream>>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}
