//! axum integration (feature `axum`): serve an axum app on a tracked [`Listener`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use conntrack_core::{ListenerConfig, Tracker};
//! use conntrack_tokio::{Listener, TrackedConnectInfo};
//!
//! async fn hello(ConnectInfo(conn): ConnectInfo<TrackedConnectInfo>) -> String {
//!     format!("hello, connection {} from {}", conn.id, conn.remote_addr)
//! }
//!
//! let tracker = Tracker::new();
//! let inner = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http"));
//! let app = Router::new().route("/", get(hello));
//! axum::serve(listener, app.into_make_service_with_connect_info::<TrackedConnectInfo>()).await
//! # }
//! # let _ = run;
//! ```

use std::future::poll_fn;
use std::io;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use conntrack_core::{Addr, ConnectionId, ConnectionRef};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::listener::{is_connection_error, ACCEPT_ERROR_PAUSE};
use crate::{Accept, Listener, Tracked};

// axum's `Listener::accept` cannot fail, so errors are retried here, after being counted and
// reported to the hooks by `Listener::poll_accept`. As axum does for its own listeners:
// per-connection errors are retried at once; anything else (like `EMFILE`) after a pause so
// the accept loop does not spin.

impl<L> axum::serve::Listener for Listener<L>
where
    L: Accept + Send + 'static,
    L::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    L::PeerAddr: Send,
{
    type Io = Tracked<L::Stream>;
    type Addr = L::PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Holding `&mut self` (not `&self`) keeps the future `Send` without `L: Sync`.
            let this = &mut *self;
            match poll_fn(move |cx| this.poll_accept(cx)).await {
                Ok(accepted) => return accepted,
                Err(e) if is_connection_error(&e) => {}
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_PAUSE).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.get_ref().bound_addr()
    }
}

/// What a handler learns about its connection, with
/// `router.into_make_service_with_connect_info::<TrackedConnectInfo>()` and the
/// `ConnectInfo<TrackedConnectInfo>` extractor.
///
/// (axum's own `SocketAddr` connect info cannot be implemented for a listener outside axum.)
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TrackedConnectInfo {
    /// The connection's tracker id (`tracker.get(id)` for the live record).
    pub id: ConnectionId,
    /// The server's address.
    pub local_addr: Addr,
    /// The client's address.
    pub remote_addr: Addr,
    /// The connection itself, so that `ExchangeLayer` finds it without a lookup.
    conn: ConnectionRef,
}

impl TrackedConnectInfo {
    /// The connection (reading it or marking exchanges on it; it does not keep the connection
    /// in the tracker).
    #[must_use]
    pub fn connection(&self) -> &ConnectionRef {
        &self.conn
    }
}

impl<L> Connected<IncomingStream<'_, Listener<L>>> for TrackedConnectInfo
where
    L: Accept + Send + 'static,
    L::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    L::PeerAddr: Send,
{
    fn connect_info(stream: IncomingStream<'_, Listener<L>>) -> Self {
        let conn = stream.io().connection().downgrade();
        let info = conn.info();
        TrackedConnectInfo {
            id: info.id,
            local_addr: info.local_addr,
            remote_addr: info.remote_addr,
            conn,
        }
    }
}
