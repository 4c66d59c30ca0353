//! Server-side request state (feature `server`, on with `axum` and `tonic`): a tower layer that
//! marks each request's begin and end on the tracked connection it arrived on.
//!
//! With [`ExchangeLayer`] around an axum router, a hyper service or a tonic server, every
//! server connection shows how many requests it has served
//! ([`ConnectionInfo::requests`](conntrack_core::ConnectionInfo::requests)),
//! how many are in flight, and its state (`new`, `active` while a request is being served,
//! `idle` between requests, Go's `http.ConnState`), in snapshots, the debug page and JSON. An
//! exchange begins when the request reaches the layer and ends when the response body has been
//! sent to its end (or dropped). A handler reads its own connection from the request's
//! extensions: a [`ConnectionRef`] (`Extension<ConnectionRef>` in axum; `.info()` gives the id,
//! peer, TLS details, ...).
//!
//! The layer finds the connection from the request's extensions: axum's
//! `ConnectInfo<TrackedConnectInfo>` (serve with `into_make_service_with_connect_info`), a
//! [`ConnectionId`] put there by your own per-connection service, or a fixed id
//! ([`ExchangeLayer::for_connection`], for a service built per connection as with hyper's
//! `serve_connection`). For tonic, [`Incoming::exchange_layer`](crate::Incoming::exchange_layer)
//! gives a layer that recognises the connections of that listener. A request whose connection
//! it cannot find passes through unmarked.
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn run() -> std::io::Result<()> {
//! use axum::{routing::get, Extension, Router};
//! use conntrack_core::{ConnectionRef, ListenerConfig, Tracker};
//! use conntrack_tokio::exchange::ExchangeLayer;
//! use conntrack_tokio::{Listener, TrackedConnectInfo};
//!
//! async fn me(Extension(conn): Extension<ConnectionRef>) -> String {
//!     let info = conn.info();
//!     format!("connection {} from {}: request {}", info.id, info.remote_addr, info.requests)
//! }
//!
//! let tracker = Tracker::new();
//! let inner = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http"));
//! let app = Router::new().route("/me", get(me)).layer(ExchangeLayer::new(&tracker));
//! axum::serve(listener, app.into_make_service_with_connect_info::<TrackedConnectInfo>()).await
//! # }
//! # #[cfg(feature = "axum")]
//! # let _ = run;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conntrack_core::{ConnectionId, ConnectionRef, Tracker};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Finds a request's connection id in its extensions.
type FindFn = dyn Fn(&http::Extensions) -> Option<ConnectionId> + Send + Sync;

/// Finds the connection a request arrived on.
#[derive(Clone)]
enum Finder {
    /// From the request's extensions (`ConnectionId`, axum's connect info).
    Extensions,
    /// Always this connection.
    Fixed(ConnectionId),
    /// From a lookup of the request's extensions (tonic's connect info, by peer address).
    Lookup(Arc<FindFn>),
}

/// A tower layer marking each request as an exchange on its tracked connection (see the
/// [module docs](self)).
#[derive(Clone)]
pub struct ExchangeLayer {
    tracker: Tracker,
    finder: Finder,
}

impl fmt::Debug for ExchangeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeLayer").finish_non_exhaustive()
    }
}

impl ExchangeLayer {
    /// A layer finding each request's connection in its extensions: a [`ConnectionId`], or
    /// axum's `ConnectInfo<TrackedConnectInfo>`.
    pub fn new(tracker: &Tracker) -> Self {
        ExchangeLayer {
            tracker: tracker.clone(),
            finder: Finder::Extensions,
        }
    }

    /// A layer for a service that serves one connection (hyper's `serve_connection`): every
    /// request is an exchange on `id`.
    pub fn for_connection(tracker: &Tracker, id: ConnectionId) -> Self {
        ExchangeLayer {
            tracker: tracker.clone(),
            finder: Finder::Fixed(id),
        }
    }

    /// A layer finding the connection with `find` (for integrations whose connect info is not
    /// one of the above).
    pub fn with_finder(
        tracker: &Tracker,
        find: impl Fn(&http::Extensions) -> Option<ConnectionId> + Send + Sync + 'static,
    ) -> Self {
        ExchangeLayer {
            tracker: tracker.clone(),
            finder: Finder::Lookup(Arc::new(find)),
        }
    }

    fn find(&self, ext: &http::Extensions) -> Option<ConnectionRef> {
        let id = match &self.finder {
            Finder::Fixed(id) => Some(*id),
            Finder::Lookup(f) => f(ext),
            Finder::Extensions => ext.get::<ConnectionId>().copied().or_else(|| axum_id(ext)),
        }?;
        self.tracker.lookup(id)
    }
}

/// The id in axum's `ConnectInfo<TrackedConnectInfo>`.
#[cfg(feature = "axum")]
fn axum_id(ext: &http::Extensions) -> Option<ConnectionId> {
    ext.get::<axum::extract::ConnectInfo<crate::TrackedConnectInfo>>()
        .map(|c| c.0.id)
}

#[cfg(not(feature = "axum"))]
fn axum_id(_: &http::Extensions) -> Option<ConnectionId> {
    None
}

impl<S> tower_layer::Layer<S> for ExchangeLayer {
    type Service = Exchange<S>;

    fn layer(&self, inner: S) -> Exchange<S> {
        Exchange {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of an [`ExchangeLayer`].
#[derive(Clone)]
pub struct Exchange<S> {
    inner: S,
    layer: ExchangeLayer,
}

impl<S: fmt::Debug> fmt::Debug for Exchange<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Ends an exchange when dropped.
struct Guard(ConnectionRef);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.end_exchange();
    }
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Exchange<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Body,
{
    type Response = http::Response<ExchangeBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let guard = self.layer.find(req.extensions()).map(|conn| {
            conn.begin_exchange();
            req.extensions_mut().insert(conn.clone());
            Guard(conn)
        });
        ResponseFuture {
            inner: self.inner.call(req),
            guard,
        }
    }
}

pin_project! {
    /// The response future of an [`Exchange`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: Body,
{
    type Output = Result<http::Response<ExchangeBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        // An error ends the exchange here (the guard drops); a response carries it in its body.
        let guard = this.guard.take();
        Poll::Ready(res.map(|res| {
            res.map(|body| {
                let guard = if body.is_end_stream() { None } else { guard };
                ExchangeBody { inner: body, guard }
            })
        }))
    }
}

pin_project! {
    /// A response body that ends its request's exchange when it ends (or is dropped).
    pub struct ExchangeBody<B> {
        #[pin]
        inner: B,
        guard: Option<Guard>,
    }
}

impl<B> fmt::Debug for ExchangeBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for ExchangeBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() || frame.as_ref().is_some_and(Result::is_err) {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
