//! The debug page on a listener of its own (feature `axum`), as tokio-console and Envoy's admin
//! interface serve theirs: bound to `127.0.0.1` unless told otherwise, apart from the
//! application's ports.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use conntrack_core::Tracker;
//!
//! let tracker = Tracker::new();
//! // ... the application uses `tracker` ...
//! // http://127.0.0.1:6060/ until the server stops.
//! conntrack_tokio::debug::serve(&tracker, "127.0.0.1:6060").await
//! # }
//! # let _ = run;
//! ```
//!
//! [`Server`] does the same with options: the address (default [`Server::DEFAULT_ADDR`],
//! `127.0.0.1:6060`), the page's own ([`DebugPage`]), and a graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use conntrack_core::Tracker;
//! use conntrack_tokio::debug::Server;
//! use conntrack_tokio::DebugPage;
//!
//! let tracker = Tracker::new();
//! let server = Server::new(&tracker)
//!     .port(6060) // on 127.0.0.1
//!     .page(DebugPage::new(&tracker).default_limit(200))
//!     .bind()
//!     .await?;
//! println!("debug page on http://{}/", server.local_addr());
//! // Stops when `stop` is sent to (or dropped): say, from the application's own shutdown.
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! server
//!     .run_until(async {
//!         let _ = stopped.await;
//!     })
//!     .await
//! # }
//! # let _ = run;
//! ```
//!
//! The page is at `/`, its events at `/events`; the listener's own connections are not
//! tracked. The [`DebugPage`] rules still apply: binding a public address serves direct loopback
//! requests only, unless the page has a [bearer token](DebugPage::bearer_token).

use std::future::{Future, IntoFuture};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use conntrack_core::Tracker;
use tokio::net::{TcpListener, ToSocketAddrs};

pub use crate::debug_page::{debug_router, DebugPage, PROXY_HEADERS};

/// Serves `tracker`'s debug page on `addr` (say `"127.0.0.1:6060"`) until the server fails:
/// [`Server`] with the default page, on an address of your choosing.
///
/// # Errors
///
/// Binding `addr` failed, or serving did.
pub async fn serve(tracker: &Tracker, addr: impl ToSocketAddrs) -> io::Result<()> {
    Server::new(tracker)
        .listener(TcpListener::bind(addr).await?)?
        .run()
        .await
}

/// The debug page's own server (see the [module docs](self)).
#[derive(Debug)]
pub struct Server {
    page: DebugPage,
    addr: SocketAddr,
}

impl Server {
    /// Where [`Server::new`] binds: `127.0.0.1:6060`.
    pub const DEFAULT_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 6060);

    /// The default page of `tracker`, to be bound on [`DEFAULT_ADDR`](Server::DEFAULT_ADDR).
    pub fn new(tracker: &Tracker) -> Self {
        Server {
            page: DebugPage::new(tracker),
            addr: Self::DEFAULT_ADDR,
        }
    }

    /// Binds `addr` instead. A non-loopback address serves only requests the page admits (a
    /// [bearer token](DebugPage::bearer_token), or [`DebugPage::allow_any_peer`]).
    #[must_use]
    pub fn addr(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Binds `port` on `127.0.0.1` (0: any free port).
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self
    }

    /// Serves this page (its limits, token, HTML options) instead of the default one.
    #[must_use]
    pub fn page(mut self, page: DebugPage) -> Self {
        self.page = page;
        self
    }

    /// Binds the address.
    ///
    /// # Errors
    ///
    /// Binding failed.
    pub async fn bind(self) -> io::Result<BoundServer> {
        let listener = TcpListener::bind(self.addr).await?;
        self.listener(listener)
    }

    /// Serves on a listener you bound yourself instead of the address.
    ///
    /// # Errors
    ///
    /// The listener has no local address.
    pub fn listener(self, listener: TcpListener) -> io::Result<BoundServer> {
        Ok(BoundServer {
            local_addr: listener.local_addr()?,
            listener,
            page: self.page,
        })
    }
}

/// A bound [`Server`]: [`run`](BoundServer::run) or [`run_until`](BoundServer::run_until) it
/// (or `.await` it, the same as `run`).
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    page: DebugPage,
}

impl BoundServer {
    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the server fails (accept errors are retried, as `axum::serve` does).
    ///
    /// # Errors
    ///
    /// Serving failed.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: no new connection is
    /// accepted, every event stream ends, requests in flight finish; returns when every
    /// connection has closed.
    ///
    /// # Errors
    ///
    /// Serving failed.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let page = self.page;
        let app = axum::Router::new().merge(page.clone().router());
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Event streams never end by themselves: end them, or the graceful shutdown would
            // wait for their subscribers forever.
            page.close_events();
        })
        .await
    }
}

impl IntoFuture for BoundServer {
    type Output = io::Result<()>;
    type IntoFuture = std::pin::Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
