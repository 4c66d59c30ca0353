//! Server-side request state (feature `server`, on with `axum` and `tonic`): a tower layer that
//! marks each request's begin and end on the tracked connection it arrived on.
//!
//! With [`ExchangeLayer`] around an axum router, a hyper service or a tonic server, every
//! server connection shows how many requests it has served
//! ([`ConnectionInfo::requests`](conntrack_core::ConnectionInfo::requests)),
//! how many are in flight, and its state (`new`, `active` while a request is being served,
//! `idle` between requests, Go's `http.ConnState`; `upgraded` after a `101 Switching
//! Protocols` or a `2xx` answer to `CONNECT`), in snapshots, the debug page and JSON. A handler
//! reads its own connection from the request's extensions: a [`ConnectionRef`]
//! (`Extension<ConnectionRef>` in axum; `.info()` gives the id, peer, TLS details, ...).
//!
//! # When an exchange begins and ends
//!
//! An exchange **begins** when the request reaches the layer (its head has been read) and
//! **ends when its response has been written**: hyper has taken the response body's last
//! frame (or, for a response without a body, its head), dropped the body, and the connection's
//! tracked stream then completed a flush, so the response's last byte has been handed to the
//! socket ([`Connection::end_exchange_when_flushed`](conntrack_core::Connection::end_exchange_when_flushed)).
//! On HTTP/1 that flush is the one hyper makes after writing the last bytes. On HTTP/2 it is
//! the connection's next flush after the stream's last frame was queued: HTTP/2 writes the
//! frames of all its streams from buffers of its own as flow control allows, flushing as it
//! goes, so a stream's last frames may leave after that flush.
//! Until then the connection counts the exchange in flight: an idle timeout does not close
//! it and a [shutdown](conntrack_core::Tracker::shutdown) waits for it. (So hyper must serve
//! the connection over its [`Tracked`](crate::Tracked) stream, directly or under TLS, as the
//! listeners of this crate give it; a custom stream reports its completed flushes with
//! [`Connection::record_flush`](conntrack_core::Connection::record_flush).)
//!
//! It ends at once, with nothing more to write, when the handler fails, when its response
//! future or body is dropped before the response was complete (the client went away, hyper
//! gave up on the response), or when the body fails.
//!
//! # Phases
//!
//! While a hook of the connection wants server exchanges
//! ([`Hook::wants_server_exchanges`](conntrack_core::Hook::wants_server_exchanges)), each
//! exchange is timed phase by phase (waiting, request head, request body, handler, response
//! write) and reported by
//! [`on_server_exchange`](conntrack_core::Hook::on_server_exchange) when it ends, with its
//! method, route (axum's `MatchedPath`), status, gRPC status and protocol version; the
//! connection's record shows the exchange in progress
//! ([`ConnectionInfo::exchange`](conntrack_core::ConnectionInfo::exchange)). The request body
//! phase needs [`ExchangeLayer::timed_body`], which hands the service a [`RequestBody`]. See
//! `docs/http-trace.md`, "Server requests, phase by phase". Without such a hook the layer only
//! counts the exchange.
//!
//! An HTTP/2 request marks its connection
//! [multiplexed](conntrack_core::Connection::mark_multiplexed): without a
//! [shutdown signal](conntrack_core::Tracker::shutdown_signal) handed out, a shutdown leaves it
//! to its deadline rather than closing it itself, since only hyper knows which of its frames
//! are still to be written.
//!
//! A response `101 Switching Protocols`, or a `2xx` answer to `CONNECT`, marks the connection
//! [upgraded](conntrack_core::ConnState::Upgraded) (the exchange itself ends when that response
//! has been written): busy for a shutdown, judged by its I/O for the idle timeout. On HTTP/2
//! a `CONNECT` stream marks the whole connection, for the rest of its life.
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
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conntrack_core::{BodyTimer, ConnectionId, ConnectionRef, ServerExchange, Tracker};
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
///
/// `M` says what the service under it gets as the request body: the body as it came
/// ([`UntimedBody`], the default), or, after [`timed_body`](ExchangeLayer::timed_body), a
/// [`RequestBody`] wrapping it that measures the request body phase.
pub struct ExchangeLayer<M = UntimedBody> {
    // Shared: axum clones a route's service (this layer with it) for every request.
    inner: Arc<LayerInner>,
    mode: PhantomData<fn() -> M>,
}

impl<M> Clone for ExchangeLayer<M> {
    fn clone(&self) -> Self {
        ExchangeLayer {
            inner: self.inner.clone(),
            mode: PhantomData,
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What the service under an [`ExchangeLayer`] gets as the request body: [`UntimedBody`] or
/// [`TimedBody`].
pub trait BodyMode: sealed::Sealed + 'static {
    /// The request body type for a request that came with `B`.
    type Body<B>;
    /// Wraps a request's body (`timer`: while a hook wants the exchange's phases).
    #[doc(hidden)]
    fn wrap<B>(body: B, timer: Option<&ServerExchange>) -> Self::Body<B>;
}

/// The service gets the request body as it came; the request body phase is not measured (the
/// handler phase includes it).
#[derive(Debug, Clone, Copy)]
pub enum UntimedBody {}

/// The service gets a [`RequestBody`]: the request body phase is measured.
#[derive(Debug, Clone, Copy)]
pub enum TimedBody {}

impl sealed::Sealed for UntimedBody {}
impl sealed::Sealed for TimedBody {}

impl BodyMode for UntimedBody {
    type Body<B> = B;
    fn wrap<B>(body: B, _: Option<&ServerExchange>) -> B {
        body
    }
}

impl BodyMode for TimedBody {
    type Body<B> = RequestBody<B>;
    fn wrap<B>(inner: B, phases: Option<&ServerExchange>) -> RequestBody<B> {
        RequestBody {
            inner,
            timer: phases.map(ServerExchange::body_timer),
        }
    }
}

struct LayerInner {
    tracker: Tracker,
    finder: Finder,
}

impl<M> fmt::Debug for ExchangeLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeLayer").finish_non_exhaustive()
    }
}

impl ExchangeLayer {
    /// A layer finding each request's connection in its extensions: a [`ConnectionId`], or
    /// axum's `ConnectInfo<TrackedConnectInfo>`.
    pub fn new(tracker: &Tracker) -> Self {
        ExchangeLayer::with(tracker, Finder::Extensions)
    }

    fn with(tracker: &Tracker, finder: Finder) -> Self {
        ExchangeLayer {
            inner: Arc::new(LayerInner {
                tracker: tracker.clone(),
                finder,
            }),
            mode: PhantomData,
        }
    }

    /// A layer for a service that serves one connection (hyper's `serve_connection`): every
    /// request is an exchange on `id`.
    pub fn for_connection(tracker: &Tracker, id: ConnectionId) -> Self {
        ExchangeLayer::with(tracker, Finder::Fixed(id))
    }

    /// A layer finding the connection with `find` (for integrations whose connect info is not
    /// one of the above).
    pub fn with_finder(
        tracker: &Tracker,
        find: impl Fn(&http::Extensions) -> Option<ConnectionId> + Send + Sync + 'static,
    ) -> Self {
        ExchangeLayer::with(tracker, Finder::Lookup(Arc::new(find)))
    }
}

impl<M> ExchangeLayer<M> {
    /// The same layer, handing the service a [`RequestBody`] (`Request<RequestBody<B>>`) that
    /// measures the request body phase: the time the handler spent waiting for the body's
    /// frames (see `on_server_exchange`). axum's router takes any body, so an axum app only
    /// adds this call; a service typed on one body (`service_fn` over
    /// `Request<hyper::body::Incoming>`) takes the new body, whose
    /// [`into_inner`](RequestBody::into_inner) gives the original. Without it the request body
    /// phase is `None` and the handler phase includes it.
    #[must_use]
    pub fn timed_body(self) -> ExchangeLayer<TimedBody> {
        ExchangeLayer {
            inner: self.inner,
            mode: PhantomData,
        }
    }

    fn find(&self, ext: &http::Extensions) -> Option<ConnectionRef> {
        let id = match &self.inner.finder {
            Finder::Fixed(id) => Some(*id),
            Finder::Lookup(f) => f(ext),
            Finder::Extensions => match ext.get::<ConnectionId>() {
                Some(id) => Some(*id),
                // axum's connect info carries the connection: no lookup.
                None => return axum_conn(ext),
            },
        }?;
        self.inner.tracker.lookup(id)
    }
}

/// The connection in axum's `ConnectInfo<TrackedConnectInfo>`.
#[cfg(feature = "axum")]
fn axum_conn(ext: &http::Extensions) -> Option<ConnectionRef> {
    ext.get::<axum::extract::ConnectInfo<crate::TrackedConnectInfo>>()
        .map(|c| c.0.connection().clone())
}

#[cfg(not(feature = "axum"))]
fn axum_conn(_: &http::Extensions) -> Option<ConnectionRef> {
    None
}

/// The route template that matched (axum's `MatchedPath`: present when the layer was added
/// with `Router::layer` or `route_layer`).
#[cfg(feature = "axum")]
fn matched_path(ext: &http::Extensions) -> Option<&str> {
    ext.get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
fn matched_path(_: &http::Extensions) -> Option<&str> {
    None
}

impl<S, M> tower_layer::Layer<S> for ExchangeLayer<M> {
    type Service = Exchange<S, M>;

    fn layer(&self, inner: S) -> Exchange<S, M> {
        Exchange {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of an [`ExchangeLayer`].
pub struct Exchange<S, M = UntimedBody> {
    inner: S,
    layer: ExchangeLayer<M>,
}

impl<S: Clone, M> Clone for Exchange<S, M> {
    fn clone(&self) -> Self {
        Exchange {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Exchange<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The `grpc-status` field's name, made once (a name given as text is parsed at every lookup).
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Ends an exchange when dropped: once its response has been written if the response was
/// complete, else at once.
struct Guard {
    conn: ConnectionRef,
    /// The response has been handed over whole: the exchange ends at the next flush.
    complete: bool,
    /// The exchange's phases, while a hook wants them.
    phases: Option<ServerExchange>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let phases = self.phases.take();
        if self.complete {
            if let Some(p) = phases {
                p.finish_when_flushed();
            }
            self.conn.end_exchange_when_flushed();
        } else {
            self.conn.end_exchange();
            if let Some(p) = phases {
                p.finish();
            }
        }
    }
}

impl Guard {
    /// Records the gRPC status in `headers` (a trailers-only response's head, or trailers).
    fn grpc_status(&mut self, headers: &http::HeaderMap) {
        if let Some(p) = &mut self.phases {
            let status = headers
                .get(&GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            if let Some(status) = status {
                p.set_grpc_status(status);
            }
        }
    }
}

/// The protocol version as OpenTelemetry's `network.protocol.version` writes it.
fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

impl<S, B, RB, M> tower_service::Service<http::Request<B>> for Exchange<S, M>
where
    M: BodyMode,
    S: tower_service::Service<http::Request<M::Body<B>>, Response = http::Response<RB>>,
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
            if req.version() == http::Version::HTTP_2 {
                conn.mark_multiplexed();
            }
            conn.begin_exchange();
            // Timed only while a hook wants the phases (else `None`, and no route looked up).
            let phases = if conn.wants_server_exchanges() {
                conn.server_exchange(
                    req.method().as_str(),
                    matched_path(req.extensions()),
                    version_name(req.version()),
                )
            } else {
                None
            };
            req.extensions_mut().insert(conn.clone());
            Guard {
                conn,
                complete: false,
                phases,
            }
        });
        let method = Method::of(req.method());
        let phases = guard.as_ref().and_then(|g| g.phases.as_ref());
        let req = req.map(|body| M::wrap(body, phases));
        ResponseFuture {
            inner: self.inner.call(req),
            guard,
            method,
        }
    }
}

/// What of the request method decides how its response ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    /// A `HEAD` request: its response carries no body, whatever the body says.
    Head,
    /// A `CONNECT` request: a `2xx` answer makes a tunnel.
    Connect,
    Other,
}

impl Method {
    fn of(m: &http::Method) -> Self {
        if m == http::Method::HEAD {
            Method::Head
        } else if m == http::Method::CONNECT {
            Method::Connect
        } else {
            Method::Other
        }
    }
}

pin_project! {
    /// The response future of an [`Exchange`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
        method: Method,
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
        let mut guard = this.guard.take();
        Poll::Ready(res.map(|res| {
            let status = res.status();
            let upgrade = status == http::StatusCode::SWITCHING_PROTOCOLS
                || (*this.method == Method::Connect && status.is_success());
            // Responses that hyper writes without a body, whatever the body says.
            let no_body = *this.method == Method::Head
                || status.is_informational()
                || status == http::StatusCode::NO_CONTENT
                || status == http::StatusCode::NOT_MODIFIED;
            if let Some(g) = &mut guard {
                if upgrade {
                    g.conn.mark_upgraded();
                }
                if let Some(p) = &mut g.phases {
                    p.response_head(status.as_u16());
                    g.grpc_status(res.headers());
                }
                g.complete = no_body || res.body().is_end_stream();
            }
            res.map(|body| ExchangeBody { inner: body, guard })
        }))
    }
}

pin_project! {
    /// A response body that ends its request's exchange when hyper has written it: the
    /// exchange ends at the connection's first flush after the body, having ended, is dropped
    /// (at once if it is dropped unfinished or fails; see the [module docs](self)).
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
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(g) = this.guard {
            match &frame {
                // The body failed: the response is cut short, nothing more is owed.
                Some(Err(_)) => {
                    g.complete = false;
                    this.guard.take();
                }
                // Its end (trailers are the last frame; hyper stops at a data frame after
                // which the body says it has ended): the exchange ends once hyper, having
                // dropped the body, has written and flushed what it holds.
                None => g.complete = true,
                Some(Ok(f)) => {
                    if let Some(t) = f.trailers_ref() {
                        g.grpc_status(t);
                    }
                    g.complete = f.is_trailers() || this.inner.is_end_stream();
                }
            }
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

pin_project! {
    /// The request body as the service under an [`ExchangeLayer`] gets it: the body as it
    /// came, which, while a hook wants the exchange's phases, sums the time its reader spent
    /// waiting for its frames (the request body phase: from a poll answered `pending` to the
    /// next frame or end).
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        timer: Option<BodyTimer>,
    }
}

impl<B> RequestBody<B> {
    /// The body inside.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let poll = this.inner.poll_frame(cx);
        if let Some(t) = this.timer {
            t.poll(poll.is_pending());
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
