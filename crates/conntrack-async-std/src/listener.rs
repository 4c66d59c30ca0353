//! [`Listener`]: a tracked accept loop over any async listener.

use std::future::Future;
use std::io;

use conntrack_core::{Addr, Connection, ListenerConfig, TcpInfoGuard, Tracker};

use crate::Tracked;

/// A listener [`Listener`] can wrap: the `TcpListener` and `UnixListener` of smol and of
/// async-std (with their features), or your own.
pub trait Accept {
    /// The accepted stream.
    type Stream;
    /// The peer address `accept` returns with the stream.
    type PeerAddr;

    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::PeerAddr)>> + Send;

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
}

#[cfg(unix)]
#[cfg(any(feature = "smol", feature = "async-std"))] // only a runtime feature uses it
pub(crate) fn unix_addr(a: &std::os::unix::net::SocketAddr) -> Addr {
    Addr::Unix(a.as_pathname().map(std::sync::Arc::from))
}

/// [`Accept`] for a runtime's `TcpListener`.
#[cfg(any(feature = "smol", feature = "async-std"))] // only a runtime feature uses it
macro_rules! tcp_accept {
    ($listener:ty, $stream:ty) => {
        impl $crate::Accept for $listener {
            type Stream = $stream;
            type PeerAddr = std::net::SocketAddr;

            async fn accept(&self) -> std::io::Result<($stream, std::net::SocketAddr)> {
                <$listener>::accept(self).await
            }

            fn listen_addr(&self) -> conntrack_core::Addr {
                self.local_addr()
                    .map_or(conntrack_core::Addr::Unknown, conntrack_core::Addr::Inet)
            }

            fn bound_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                self.local_addr()
            }

            fn stream_addrs(
                &self,
                listen: &conntrack_core::Addr,
                stream: &$stream,
                peer: &std::net::SocketAddr,
            ) -> (conntrack_core::Addr, conntrack_core::Addr) {
                let local = listen.fixed_local().unwrap_or_else(|| {
                    stream
                        .local_addr()
                        .map_or(conntrack_core::Addr::Unknown, conntrack_core::Addr::Inet)
                });
                (local, conntrack_core::Addr::Inet(*peer))
            }

            #[cfg(unix)]
            fn watch_tcp_info(
                stream: &$stream,
                conn: &conntrack_core::Connection,
            ) -> Option<conntrack_core::TcpInfoGuard> {
                Some(conn.watch_tcp_info(stream))
            }
        }
    };
}

/// [`Accept`] for a runtime's `UnixListener`.
#[cfg(any(feature = "smol", feature = "async-std"))] // only a runtime feature uses it
macro_rules! unix_accept {
    ($listener:ty, $stream:ty) => {
        #[cfg(unix)]
        impl $crate::Accept for $listener {
            type Stream = $stream;
            type PeerAddr = std::os::unix::net::SocketAddr;

            async fn accept(&self) -> std::io::Result<($stream, std::os::unix::net::SocketAddr)> {
                <$listener>::accept(self).await
            }

            fn listen_addr(&self) -> conntrack_core::Addr {
                self.local_addr()
                    .map_or(conntrack_core::Addr::Unknown, |a| {
                        $crate::listener::unix_addr(&a)
                    })
            }

            fn bound_addr(&self) -> std::io::Result<std::os::unix::net::SocketAddr> {
                self.local_addr()
            }

            fn stream_addrs(
                &self,
                listen: &conntrack_core::Addr,
                _stream: &$stream,
                peer: &std::os::unix::net::SocketAddr,
            ) -> (conntrack_core::Addr, conntrack_core::Addr) {
                (listen.clone(), $crate::listener::unix_addr(peer))
            }

            fn watch_tcp_info(
                stream: &$stream,
                conn: &conntrack_core::Connection,
            ) -> Option<conntrack_core::TcpInfoGuard> {
                // No TCP statistics on a Unix socket; registered so that an abort shuts it
                // down.
                Some(conn.watch_socket(stream))
            }
        }
    };
}

/// What [`Listener::accept`] yields: the tracked stream and the peer address.
pub type Accepted<L> = (Tracked<<L as Accept>::Stream>, <L as Accept>::PeerAddr);

/// A listener whose accepted connections are tracked.
///
/// ```no_run
/// # #[cfg(feature = "smol")]
/// # fn main() -> std::io::Result<()> { smol::block_on(async {
/// use conntrack_async_std::Listener;
/// use conntrack_core::{ListenerConfig, Tracker};
///
/// let tracker = Tracker::new();
/// let inner = smol::net::TcpListener::bind("127.0.0.1:0").await?;
/// let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     // serve `stream` (in a task); its entry leaves the tracker when it is dropped
/// #   drop((stream, peer));
/// }
/// # }) }
/// # #[cfg(not(feature = "smol"))]
/// # fn main() {}
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

    /// Accepts the next connection, registers it and returns it tracked.
    ///
    /// A failed accept is counted, reported to `on_accept` with the error, and returned
    /// unchanged; the listener keeps working.
    ///
    /// With a [`max_connections`](ListenerConfig::max_connections) limit in
    /// [`LimitMode::Wait`](conntrack_core::LimitMode::Wait) it waits for a slot before
    /// accepting (new connections wait in the kernel's backlog). If another accepter takes
    /// that slot meanwhile (another task accepting from this listener, or a listener given
    /// the same config), the connection it accepted waits for the next free slot instead of
    /// being refused ([`Tracker::admit_waiting`]), first come first served with the other
    /// waiters of the limit. A connection refused by a limit
    /// ([`LimitMode::Reject`](conntrack_core::LimitMode::Reject), the per-IP limit) or a
    /// shutdown is closed at once, counted as rejected, and the accept goes on to the next
    /// one. Dropping the future drops a connection waiting for its slot.
    pub async fn accept(&self) -> io::Result<Accepted<L>> {
        loop {
            self.tracker.accept_ready(&self.config).await;
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let (local, remote) = self.inner.stream_addrs(&self.local, &stream, &peer);
                    let admitted = self.tracker.admit_waiting(&self.config, local, remote);
                    if let Ok(conn) = admitted.await {
                        let tcp = L::watch_tcp_info(&stream, &conn);
                        return Ok((Tracked::new(stream, conn).with_guard(tcp), peer));
                    }
                }
                Err(e) => {
                    self.tracker.accept_failed(&self.config, &self.local, &e);
                    return Err(e);
                }
            }
        }
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
