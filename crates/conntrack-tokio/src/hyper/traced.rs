//! [`TracedClient`]: httptrace's `ClientTrace` for hyper-util's legacy client.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ::hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use conntrack_core::trace::Captured;
use conntrack_core::{ConnectionId, ConnectionRef, Hook, RequestHooks, RequestTrace, Tracker};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection, Connect};
use hyper_util::client::legacy::{Client, Error as ClientError};
use tokio::time::Sleep;

use super::{host_port, io_error_for_hooks, target_of, uri_text};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a request sent with `Expect: 100-continue` waits for the server's `100 Continue`
/// before sending its body anyway (Go's `Transport.ExpectContinueTimeout` is set to the same
/// in its `DefaultTransport`).
pub const DEFAULT_EXPECT_CONTINUE_TIMEOUT: Duration = Duration::from_secs(1);

/// hyper-util's legacy [`Client`] with every request traced, in the manner of Go's
/// `httptrace.ClientTrace`: `on_get_conn`, `on_got_conn` (`reused`, `was_idle`, `idle_time`),
/// `on_wrote_header_field`, `on_wrote_headers`, `on_wait_100_continue`, `on_wrote_request`,
/// `on_got_100_continue`, `on_got_1xx_response`, `on_got_first_response_byte`,
/// `on_put_idle_conn`, and the DNS, connect and TLS events of a connection dialed for the
/// request. See `docs/http-trace.md` for what fires when, on HTTP/1 and HTTP/2.
///
/// The events go to the hooks of the [`trace`](conntrack_core::trace) scope the request's
/// future is polled in (`client.get(uri).traced(hook)`), then to the client's own
/// [`hook`](TracedClient::hook), then to the tracker's. A request's hooks see only its own
/// events, and only until it ends (its response body is read to the end or dropped): a
/// connection it dialed goes on to serve other requests without calling them.
///
/// The client's connector must be tracked: its connections must carry their
/// [`ConnectionId`] as a hyper-util extra, as [`Dialer`](crate::Dialer),
/// [`TrackedConnector`](super::TrackedConnector) and the HTTPS connector do. The client is built
/// for [`RequestBody<B>`]: the wrapper that reports the end of the request body and holds an
/// `Expect: 100-continue` body back; responses come with a [`ResponseBody`], which reports the
/// end of the exchange.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use conntrack_core::{trace::TraceExt, Callbacks, DialerConfig, Tracker};
/// use conntrack_tokio::{hyper::TracedClient, Dialer};
/// use http_body_util::{BodyExt, Empty};
/// use hyper::body::Bytes;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// let tracker = Tracker::new();
/// let dialer = Dialer::new(&tracker, DialerConfig::new());
/// let client = TracedClient::<_, Empty<Bytes>>::new(
///     &tracker,
///     Client::builder(TokioExecutor::new()).build(dialer),
/// );
/// let hook = Callbacks::new()
///     .on_got_conn(|ev| println!("got conn: reused={} idle={:?}", ev.reused, ev.idle_time))
///     .on_got_first_response_byte(|ev| println!("first byte after {:?}", ev.elapsed));
/// let res = client.get("http://127.0.0.1:3000/".parse()?).traced(hook).await?;
/// let body = res.into_body().collect().await?.to_bytes();
/// # drop(body);
/// # Ok(())
/// # }
/// # let _ = run;
/// ```
pub struct TracedClient<C, B> {
    // Shared: a client is typically cloned for every request (an axum handler's state), so
    // a clone is one reference count.
    inner: Arc<ClientInner<C, B>>,
}

struct ClientInner<C, B> {
    tracker: Tracker,
    client: Client<C, RequestBody<B>>,
    /// The client's own hook, prepared once for every request.
    hook: Option<RequestHooks>,
    expect_continue_timeout: Duration,
    http2_only: bool,
    /// The shared captures (see [`Captures`]).
    captures: Captures,
    /// A request has learned its connection from the hand-off extra: the connector gives it,
    /// and watched requests need no capture of their own.
    hand_off: Arc<AtomicBool>,
}

impl<C: Clone, B> Clone for ClientInner<C, B> {
    fn clone(&self) -> Self {
        ClientInner {
            tracker: self.tracker.clone(),
            client: self.client.clone(),
            hook: self.hook.clone(),
            expect_continue_timeout: self.expect_continue_timeout,
            http2_only: self.http2_only,
            captures: Captures::default(),
            hand_off: Arc::new(AtomicBool::new(self.hand_off.load(Ordering::Relaxed))),
        }
    }
}

impl<C, B> Clone for TracedClient<C, B> {
    fn clone(&self) -> Self {
        TracedClient {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C, B> fmt::Debug for TracedClient<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedClient")
            .field("hook", &self.inner.hook.is_some())
            .field(
                "expect_continue_timeout",
                &self.inner.expect_continue_timeout,
            )
            .field("http2_only", &self.inner.http2_only)
            .finish_non_exhaustive()
    }
}

impl<C: Clone, B> TracedClient<C, B> {
    /// The settings, to change (copied first if the client was cloned).
    fn settings(&mut self) -> &mut ClientInner<C, B> {
        Arc::make_mut(&mut self.inner)
    }

    /// Adds the client's own hook: it sees the events of every request made through this
    /// client (after the request's scope hooks), and the connection events of the connections
    /// dialed for them while those requests last.
    #[must_use]
    pub fn hook(mut self, hook: impl Hook) -> Self {
        let hook: Arc<dyn Hook> = Arc::new(hook);
        self.settings().hook = Some(RequestHooks::new([hook]));
        self
    }

    /// How long a request with `Expect: 100-continue` waits for `100 Continue` before sending
    /// its body anyway ([`DEFAULT_EXPECT_CONTINUE_TIMEOUT`] by default).
    #[must_use]
    pub fn expect_continue_timeout(mut self, timeout: Duration) -> Self {
        self.settings().expect_continue_timeout = timeout;
        self
    }

    /// Traces every request as HTTP/2: set it when the client is built with hyper-util's
    /// `http2_only(true)` (HTTP/2 with prior knowledge, "h2c", where no ALPN tells the
    /// connection's protocol). Without it such requests are traced as HTTP/1 until their
    /// response shows otherwise: an `Expect: 100-continue` body waits for the continue timeout
    /// and the write and first-byte events come from the connection's I/O, which HTTP/2's own
    /// frames blur. A request whose version is set to `HTTP/2` is traced as HTTP/2 either way,
    /// as is a connection whose TLS handshake negotiated `h2`.
    #[must_use]
    pub fn http2_only(mut self, enabled: bool) -> Self {
        self.settings().http2_only = enabled;
        self
    }
}

impl<C, B> TracedClient<C, B> {
    /// Traces the requests of `client` on `tracker` (the tracker its connector reports to).
    ///
    /// The client sends [`RequestBody<B>`] (the wrapper that reports the request body's end):
    /// build it in the call, `TracedClient::new(&tracker, Client::builder(exec).build(dialer))`,
    /// and inference gives it that type (name `B` with `TracedClient::<_, B>::new` if nothing
    /// else does); a client already typed `Client<C, B>` cannot be given. Responses come back
    /// as `Response<`[`ResponseBody`]`>`, a hyper body that reports the end of the exchange.
    pub fn new(tracker: &Tracker, client: Client<C, RequestBody<B>>) -> Self {
        TracedClient {
            inner: Arc::new(ClientInner {
                tracker: tracker.clone(),
                client,
                hook: None,
                expect_continue_timeout: DEFAULT_EXPECT_CONTINUE_TIMEOUT,
                http2_only: false,
                captures: Captures::default(),
                hand_off: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// The wrapped client.
    pub fn client(&self) -> &Client<C, RequestBody<B>> {
        &self.inner.client
    }

    /// The tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.inner.tracker
    }
}

impl<C, B> TracedClient<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `req`, tracing it. The trace begins at the future's first poll, inside the
    /// caller's [`trace`](conntrack_core::trace) scope.
    ///
    /// # Errors
    ///
    /// The future resolves to the client's error, unchanged.
    pub fn request(&self, req: Request<B>) -> ResponseFuture<C, B> {
        ResponseFuture {
            state: State::Start(Start {
                client: Arc::clone(&self.inner),
                req,
            }),
        }
    }

    /// Sends a `GET` for `uri` with an empty body (`B::default()`), tracing it.
    pub fn get(&self, uri: Uri) -> ResponseFuture<C, B>
    where
        B: Default,
    {
        let mut req = Request::new(B::default());
        *req.uri_mut() = uri;
        self.request(req)
    }
}

struct Start<C, B> {
    client: Arc<ClientInner<C, B>>,
    req: Request<B>,
}

struct Sending {
    fut: hyper_util::client::legacy::ResponseFuture,
    /// The request's dial scope, current while `fut` is polled; `None` when it is empty (a
    /// request with no hooks, sent outside any scope): no scope to enter on each poll.
    scope: Option<Captured>,
    tracker: Tracker,
    trace: RequestTrace,
    /// Whether the request's phases are watched: some hook wants its events, it waits for
    /// `100 Continue`, or the tracker keeps recent requests' phases. If not, the request only counts as an exchange on its connection, from
    /// the moment hyper-util hands the connection to it (so that it is in flight, busy for an
    /// idle timeout and a shutdown, while it waits for its answer) to the end of its response
    /// body.
    watched: Option<Watched>,
    close_requested: bool,
    /// A `CONNECT` request: a 2xx answer turns the connection into a tunnel.
    connect: bool,
    /// A `HEAD` request: its response has no body, whatever its head says.
    head: bool,
}

struct Watched {
    slot: Arc<Slot>,
    /// The request's own capture, until the client has seen its connector's hand-off extra
    /// (`None` from then on: the request takes a clone of a shared capture, [`Captures`],
    /// which is never read back).
    own: Option<OwnCapture>,
}

/// A watched request's own capture of hyper-util's hand-off.
struct OwnCapture {
    /// hyper-util sets it (cloning the connection's extras, which is what the hand-off extra
    /// notices) when it hands the connection to the request; read back for a connector
    /// without the hand-off extra.
    capture: CaptureConnection,
    /// The client's "hand-off seen" flag, set when this request learns its connection from
    /// the hand-off extra.
    learn: Arc<AtomicBool>,
}

/// Where a request learns its connection.
/// One allocation for all a watched request shares: its body, its 1xx callback, its response
/// future and the hand-off hold it.
struct Slot {
    tracker: Tracker,
    trace: RequestTrace,
    shared: Shared,
    conn: Mutex<Option<ConnectionId>>,
    /// The connection came from the hand-off extra.
    by_hand_off: AtomicBool,
}

impl Slot {
    /// The request got connection `id` (again if hyper-util retries it on another one).
    /// The request got connection `id`, known by its id only (looked up).
    fn got_id(&self, id: ConnectionId, h2: bool) {
        if let Some(conn) = self.tracker.lookup(id) {
            self.got(&conn, h2);
        }
    }

    /// The request got `conn` (again if hyper-util retries it on another one).
    fn got(&self, conn: &ConnectionRef, h2: bool) {
        let h2 = h2 || self.shared.h2.load(Ordering::Acquire);
        let id = conn.id();
        {
            let mut current = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            if *current == Some(id) {
                return;
            }
            *current = Some(id);
        }
        if conn.is_closed() {
            return;
        }
        self.trace.got_conn(conn.clone(), !h2);
        if h2 {
            // HTTP/2: the stream's HEADERS frame goes out as soon as the request is handed to
            // the connection; the body's end is reported by the body wrapper.
            self.shared.h2.store(true, Ordering::Release);
            self.trace.wrote_headers();
            if self.shared.body_done.load(Ordering::Acquire) {
                self.trace.wrote_request(None);
            }
        }
    }
}

/// The request whose hyper-util future a thread is polling.
#[derive(Clone)]
enum Current {
    /// A watched request: its slot learns the connection (and installs the I/O watch).
    Watched(Arc<Slot>),
    /// A request no hook watches: the connection only counts it as an exchange from the
    /// moment it is handed over (so it is in flight while it waits for its answer).
    Light(RequestTrace),
}

impl Current {
    fn got(&self, conn: &ConnectionRef, h2: bool) {
        match self {
            Current::Watched(slot) => {
                slot.by_hand_off.store(true, Ordering::Relaxed);
                slot.got(conn, h2);
            }
            Current::Light(trace) => {
                if conn.is_closed() || trace.connection().is_some_and(|c| c.id() == conn.id()) {
                    return;
                }
                trace.got_conn(conn.clone(), false);
            }
        }
    }
}

thread_local! {
    /// The request whose hyper-util future this thread is polling.
    static SENDING: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Puts the previous request back on drop.
struct Restore(Option<Current>);

impl Drop for Restore {
    fn drop(&mut self) {
        let prev = self.0.take();
        SENDING.with(|s| *s.borrow_mut() = prev);
    }
}

/// A hyper-util "extra" that tracked connections carry next to their [`ConnectionId`]. hyper-util
/// clones a connection's extras when it hands the connection to a request (for
/// `capture_connection`), just before the request goes to the connection: the clone tells the
/// [`TracedClient`] request being polled on this thread which connection it got, so the
/// connection's I/O is watched before the request's first byte is written.
#[derive(Debug)]
pub(crate) struct HandOff {
    /// The connection itself (not keeping it in the tracker): no lookup at the hand-off.
    conn: ConnectionRef,
    h2: bool,
}

impl HandOff {
    pub(crate) fn new(conn: ConnectionRef, h2: bool) -> Self {
        HandOff { conn, h2 }
    }
}

impl Clone for HandOff {
    fn clone(&self) -> Self {
        let current = SENDING.with(|s| s.borrow().clone());
        if let Some(current) = current {
            current.got(&self.conn, self.h2);
        }
        HandOff {
            conn: self.conn.clone(),
            h2: self.h2,
        }
    }
}

/// What the request body, the 1xx callback and the response future share.
#[derive(Default)]
struct Shared {
    h2: AtomicBool,
    body_done: AtomicBool,
    got_continue: AtomicBool,
    /// The request expects `100 Continue` (its body is held back until then).
    expects: AtomicBool,
    /// A final answer came while the body was still held back: the body is not sent.
    answered: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    /// Whether `100 Continue` came; if not, the 1xx callback wakes `cx`'s task when it does.
    fn poll_continue(&self, cx: &Context<'_>) -> bool {
        if self.got_continue.load(Ordering::Acquire) {
            return true;
        }
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        self.got_continue.load(Ordering::Acquire)
    }

    /// A final response arrived: a body still held back for `100 Continue` is not sent, as
    /// in Go (the server has answered without it). Returns whether that was the case.
    fn final_arrived(&self) -> bool {
        if !self.expects.load(Ordering::Acquire)
            || self.got_continue.load(Ordering::Acquire)
            || self.body_done.load(Ordering::Acquire)
        {
            return false;
        }
        self.answered.store(true, Ordering::Release);
        self.wake();
        true
    }

    fn continue_arrived(&self) {
        self.got_continue.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The future of [`TracedClient::request`]: the response, with its body wrapped so that the
/// end of the exchange is reported.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<C, B> {
    state: State<C, B>,
}

/// Where a [`ResponseFuture`] is. The request waits unboxed for the first poll: a box would
/// cost an allocation per request to save moving the future once or twice.
enum State<C, B> {
    Start(Start<C, B>),
    Sending(Sending),
    Done,
}

// Nothing in it is pinned structurally: the inner future is polled through `Pin::new`, and
// the client and request are only moved out.
impl<C, B> Unpin for ResponseFuture<C, B> {}

impl<C, B> fmt::Debug for ResponseFuture<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field(
                "trace",
                &match &self.state {
                    State::Sending(s) => Some(&s.trace),
                    _ => None,
                },
            )
            .finish_non_exhaustive()
    }
}

impl<C, B> Future for ResponseFuture<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody>, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if matches!(this.state, State::Start(_)) {
            let State::Start(start) = std::mem::replace(&mut this.state, State::Done) else {
                unreachable!("checked above");
            };
            this.state = State::Sending(start.begin());
        }
        let State::Sending(sending) = &mut this.state else {
            panic!("ResponseFuture polled after completion");
        };
        let current = match &sending.watched {
            Some(w) => Current::Watched(Arc::clone(&w.slot)),
            None => Current::Light(sending.trace.clone()),
        };
        let res = {
            let prev = SENDING.with(|s| s.borrow_mut().replace(current));
            let _restore = Restore(prev);
            match &sending.scope {
                Some(scope) => scope.run(|| Pin::new(&mut sending.fut).poll(cx)),
                None => Pin::new(&mut sending.fut).poll(cx),
            }
        };
        sending.check_conn();
        let res = match res {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(res) => res,
        };
        let State::Sending(sending) = std::mem::replace(&mut this.state, State::Done) else {
            unreachable!("checked above");
        };
        Poll::Ready(sending.done(res))
    }
}

impl<C, B> Start<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn begin(self) -> Sending {
        let Start { client, req } = self;
        let ClientInner {
            tracker,
            hook,
            expect_continue_timeout,
            http2_only,
            ..
        } = &*client;
        let (tracker, expect_continue_timeout, http2_only) =
            (tracker.clone(), *expect_continue_timeout, *http2_only);
        let method = req.method().as_str();
        let trace = with_uri_text(req.uri(), |uri| match hook {
            Some(h) => tracker.request_with_hooks(method, uri, h),
            None => tracker.request(method, uri),
        });
        let hooks = trace.has_hooks();
        let (parts, body) = req.into_parts();
        // One scan of the authority for `on_get_conn` and the `Host` field.
        let target = if hooks { host_port(&parts.uri) } else { None };
        if hooks {
            match target {
                Some((text, _, _)) => trace.get_conn(text),
                None => {
                    let target =
                        target_of(&parts.uri).unwrap_or_else(|_| trace.info().uri.to_string());
                    trace.get_conn(&target);
                }
            }
        }
        let expect = parts
            .headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
            && !body.is_end_stream();
        // Whether the connection closes after this exchange matters only to `put_idle_conn`.
        let close_requested = hooks && wants_close(parts.version, &parts.headers);
        let connect = parts.method == http::Method::CONNECT;
        let head = parts.method == http::Method::HEAD;
        if hooks {
            trace.set_header_fields(header_fields(&parts.uri, target, &parts.headers));
        }
        // Shared by the body, the 1xx callback and this future; not needed (not made) when
        // the request is not watched.
        // HTTP/2 known from the start (no ALPN needed): no I/O watch, no held body.
        let h2 = http2_only || parts.version == Version::HTTP_2;
        // Watched for its phases too when the tracker keeps recent requests' phases.
        let slot = (hooks || expect || trace.records_phases()).then(|| {
            let shared = Shared::default();
            shared.expects.store(expect, Ordering::Relaxed);
            shared.h2.store(h2, Ordering::Relaxed);
            Arc::new(Slot {
                tracker: tracker.clone(),
                trace: trace.clone(),
                shared,
                conn: Mutex::new(None),
                by_hand_off: AtomicBool::new(false),
            })
        });
        let body = RequestBody::new(
            body,
            trace.clone(),
            slot.clone(),
            expect.then_some(expect_continue_timeout),
        );
        let mut req = Request::from_parts(parts, body);
        // A capture per watched request until the client has seen that its connector gives
        // the hand-off extra (ours all do; a custom connector giving only the `ConnectionId`
        // is read back through the capture after each poll). Put in first: a request's
        // extensions are usually empty here, and a shared capture's map then becomes theirs
        // rather than being merged into one the 1xx callback below would make.
        let own = match &slot {
            Some(_) if !client.hand_off.load(Ordering::Relaxed) => Some(OwnCapture {
                capture: capture_connection(&mut req),
                learn: Arc::clone(&client.hand_off),
            }),
            // hyper-util clones the connection's extras (the hand-off extra among them) into
            // a capture when it hands the connection to the request: that is how an
            // unwatched request learns its connection, and begins its exchange, before its
            // answer.
            _ => {
                client.captures.put(req.extensions_mut());
                None
            }
        };
        if let Some(slot) = &slot {
            let slot = Arc::clone(slot);
            ::hyper::ext::on_informational(&mut req, move |res| {
                let status = res.status().as_u16();
                let headers: Vec<(&[u8], &[u8])> = res
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
                    .collect();
                slot.trace.got_1xx_response(status, &headers);
                if status == 100 {
                    slot.shared.continue_arrived();
                }
            });
        }
        let watched = slot.map(|slot| Watched { slot, own });
        let scope = Some(trace.dial_scope()).filter(|s| !s.is_empty());
        let fut = client.client.request(req);
        Sending {
            fut,
            scope,
            tracker,
            trace,
            watched,
            close_requested,
            connect,
            head,
        }
    }
}

/// How many captures an unwatched request's hand-off is spread over ([`Captures`]).
const CAPTURE_SHARDS: usize = 8;

/// hyper-util's capture for requests that need hyper-util to clone their connection's extras
/// at the hand-off but never read the capture back (unwatched requests, and watched ones once
/// the client has seen its connector's hand-off extra): a few captures made
/// once per client, each request taking a clone of its thread's. A capture is a `watch`
/// channel, two allocations to make and free per request; clones share one. What hyper-util
/// stores in it (the last connection handed over, which it does not keep in the tracker) is
/// never read, and goes with the client. One per thread slot, so that threads sending at once
/// do not contend for one channel's lock.
struct Captures([OnceLock<http::Extensions>; CAPTURE_SHARDS]);

impl Default for Captures {
    fn default() -> Self {
        Captures(std::array::from_fn(|_| OnceLock::new()))
    }
}

impl Captures {
    /// Puts a capture in `ext`.
    fn put(&self, ext: &mut http::Extensions) {
        thread_local! {
            static SLOT: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % CAPTURE_SHARDS
            };
        }
        let capture = self.0[SLOT.with(|s| *s)].get_or_init(|| {
            let mut req = Request::new(());
            drop(capture_connection(&mut req));
            std::mem::take(req.extensions_mut())
        });
        ext.extend(capture.clone());
    }
}

impl Sending {
    /// Reports the connection once hyper-util has handed it to the request, for a connector
    /// whose connections carry a [`ConnectionId`] but not the hand-off extra (the connection
    /// is then known only after the request was sent, and its first write may be missed: the
    /// response reports it).
    fn check_conn(&mut self) {
        let Some(w) = &self.watched else {
            return;
        };
        if w.slot
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            // Known already (a retry on another connection is reported by the hand-off).
            if let Some(own) = &w.own {
                if w.slot.by_hand_off.load(Ordering::Relaxed) {
                    own.learn.store(true, Ordering::Relaxed);
                }
            }
            return;
        }
        let Some(OwnCapture { capture, .. }) = &w.own else {
            return;
        };
        let (id, h2) = {
            let meta = capture.connection_metadata();
            let Some(connected) = meta.as_ref() else {
                return;
            };
            let mut ext = http::Extensions::new();
            connected.get_extras(&mut ext);
            let Some(id) = ext.get::<ConnectionId>().copied() else {
                return;
            };
            (id, connected.is_negotiated_h2())
        };
        w.slot.got_id(id, h2);
    }

    /// Marks the request's connection upgraded (see [`ConnectionRef::mark_upgraded`]).
    fn mark_upgraded(&self) {
        if let Some(conn) = self.trace.connection() {
            conn.mark_upgraded();
        }
    }

    fn done(
        mut self,
        res: Result<Response<Incoming>, ClientError>,
    ) -> Result<Response<ResponseBody>, ClientError> {
        self.check_conn();
        match res {
            Ok(mut res) => {
                // The request's trace, for its phase timings (`RequestTrace::timings`), in
                // place of the hand-off extra hyper-util copied there (of no use to anyone in
                // a response): the map then need not grow.
                res.extensions_mut().remove::<HandOff>();
                res.extensions_mut().insert(self.trace.clone());
                // The connection leaves HTTP (a WebSocket, a tunnel): `upgraded` from now on, so
                // a shutdown counts it busy, as on the server side (`ExchangeLayer`).
                let upgraded = res.status() == http::StatusCode::SWITCHING_PROTOCOLS
                    || (self.connect && res.status().is_success());
                let Some(watched) = &self.watched else {
                    // Unwatched: the exchange began when the connection was handed over; for a
                    // connector without the hand-off extra, it is counted on the connection the
                    // response names.
                    if self.trace.connection().is_none() {
                        if let Some(conn) =
                            super::connection_id(&res).and_then(|id| self.tracker.lookup(id))
                        {
                            self.trace.got_conn(conn, false);
                        }
                    }
                    if upgraded {
                        self.mark_upgraded();
                    }
                    let trace = self.trace.clone();
                    return Ok(res.map(|inner| ResponseBody::new(inner, trace, false, None)));
                };
                if upgraded {
                    self.mark_upgraded();
                }
                let shared = &watched.slot.shared;
                // Answered before `100 Continue`: the held body is dropped unsent.
                let unsent = shared.final_arrived();
                let has_conn = self.trace.connection().is_some();
                if has_conn {
                    // The I/O watch reports these at the first response byte; this covers a
                    // connection whose watch was installed late, and HTTP/2 (the response's
                    // headers are its first byte).
                    self.trace.wrote_headers();
                    if unsent || shared.body_done.load(Ordering::Acquire) {
                        // Go reports the request written without its body in that case too.
                        self.trace.wrote_request(None);
                    }
                    self.trace.got_first_response_byte();
                }
                let h1 = res.version() <= Version::HTTP_11 && !shared.h2.load(Ordering::Acquire);
                // Why the connection will not go back to the pool after this exchange, if so.
                let not_reused = if unsent {
                    Some(
                        "the request body was not sent (the server answered before 100 \
                         Continue): the connection closes",
                    )
                } else if upgraded {
                    Some("the connection was upgraded (it no longer carries HTTP requests)")
                } else if self.close_requested || wants_close(res.version(), res.headers()) {
                    Some("the connection closes after this response (Connection: close)")
                } else if h1 && body_until_close(self.head, res.status(), res.headers()) {
                    Some(
                        "the response body ends where the connection closes (no Content-Length, \
                         not chunked)",
                    )
                } else {
                    None
                };
                let trace = self.trace.clone();
                Ok(res.map(|inner| ResponseBody::new(inner, trace, h1 && has_conn, not_reused)))
            }
            Err(e) => {
                if self.trace.connection().is_some() {
                    let err = io_error_for_hooks(&e);
                    self.trace.wrote_request(Some(&err));
                    let h2 = self
                        .watched
                        .as_ref()
                        .is_some_and(|w| w.slot.shared.h2.load(Ordering::Acquire));
                    if !h2 {
                        self.trace.put_idle_conn(Some(&err));
                    }
                }
                self.trace.finish();
                Err(e)
            }
        }
    }
}

impl<C, B> Drop for ResponseFuture<C, B> {
    fn drop(&mut self) {
        if let State::Sending(sending) = &self.state {
            sending.trace.finish();
        }
    }
}

/// Calls `f` with the URI as text, written into a buffer this thread reuses: the trace's copy
/// of it is then the only allocation. The URI's user info (`user:password@`) is left out: the
/// text goes to hooks, logs, the debug page and the ring of recent requests.
fn with_uri_text<R>(uri: &Uri, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
    }
    TEXT.with(|text| {
        let Ok(mut s) = text.try_borrow_mut() else {
            let mut s = String::new();
            uri_text(uri, &mut s);
            return f(&s);
        };
        s.clear();
        uri_text(uri, &mut s);
        let r = f(&s);
        if s.capacity() > 4096 {
            *s = String::new();
        }
        r
    })
}

/// Whether a message's `Connection` header (or HTTP/1.0 without keep-alive) closes the
/// connection after this exchange.
fn wants_close(version: Version, headers: &HeaderMap) -> bool {
    let mut keep_alive = false;
    for v in headers.get_all(CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                return true;
            }
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    version == Version::HTTP_10 && !keep_alive
}

/// An HTTP/1 response whose body runs until the server closes the connection: it has a body
/// (not an answer to `HEAD`, not 1xx, 204 or 304) and neither a `Content-Length` nor a chunked
/// `Transfer-Encoding` delimits it (RFC 9112, section 6.3).
fn body_until_close(head_request: bool, status: http::StatusCode, headers: &HeaderMap) -> bool {
    if head_request
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
    {
        return false;
    }
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .is_some_and(|v| {
            v.to_str().is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            })
        });
    !chunked && !headers.contains_key(CONTENT_LENGTH)
}

/// The request's header fields as they go out: `Host` first (hyper-util adds it on HTTP/1 when
/// the request has none), then the request's own.
fn header_fields(
    uri: &Uri,
    target: Option<(&str, &str, u16)>,
    headers: &HeaderMap,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = Vec::with_capacity(headers.len() + 1);
    if !headers.contains_key(HOST) {
        // As hyper-util writes it: the host (never the URI's user info) and the port unless
        // it is the scheme's default.
        let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
        if let Some((text, host, port)) = target {
            let default = if secure { 443 } else { 80 };
            let field = if port == default { host } else { text };
            fields.push((b"host".to_vec(), field.as_bytes().to_vec()));
        } else if let Some(host) = uri.host() {
            let host = match uri.port_u16() {
                Some(443) if secure => host.to_owned(),
                Some(80) if !secure => host.to_owned(),
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            };
            fields.push((b"host".to_vec(), host.into_bytes()));
        }
    }
    for (name, value) in headers {
        fields.push((name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    fields
}

/// The request body of a [`TracedClient`]'s requests: the body given to
/// [`request`](TracedClient::request), reporting its end (`on_wrote_request` follows once it is
/// written) and, for `Expect: 100-continue` on HTTP/1, firing `on_wait_100_continue` and
/// holding the body back until the server's `100 Continue` or the client's
/// [`expect_continue_timeout`](TracedClient::expect_continue_timeout).
pub struct RequestBody<B> {
    inner: B,
    trace: RequestTrace,
    /// Shared with the response future and the 1xx callback; none when the request is not
    /// watched (nothing would read it).
    slot: Option<Arc<Slot>>,
    /// Boxed: hyper-util moves the request (and so this body) several times per request.
    expect: Option<Box<Expect>>,
    done: bool,
    /// Ended unsent: the server answered before `100 Continue`.
    unsent: bool,
}

struct Expect {
    timeout: Duration,
    started: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B: fmt::Debug> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("inner", &self.inner)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B: Body> RequestBody<B> {
    fn new(
        inner: B,
        trace: RequestTrace,
        slot: Option<Arc<Slot>>,
        expect: Option<Duration>,
    ) -> Self {
        let mut body = RequestBody {
            inner,
            trace,
            slot,
            expect: expect.map(|timeout| {
                Box::new(Expect {
                    timeout,
                    started: false,
                    sleep: None,
                })
            }),
            done: false,
            unsent: false,
        };
        if body.expect.is_none() && body.inner.is_end_stream() {
            body.end();
        }
        body
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }

    fn end(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.trace.body_done();
        if let Some(slot) = &self.slot {
            let shared = &slot.shared;
            shared.body_done.store(true, Ordering::Release);
            // On HTTP/2 the body's end is the request written, once it has its stream (before
            // that, getting the connection reports it).
            if shared.h2.load(Ordering::Acquire) && self.trace.connection().is_some() {
                self.trace.wrote_request(None);
            }
        }
    }

    /// Waits for `100 Continue` (or the timeout) before the first frame.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(expect), Some(slot)) = (self.expect.as_mut(), self.slot.as_ref()) else {
            return Poll::Ready(());
        };
        let shared = &slot.shared;
        if shared.h2.load(Ordering::Acquire) {
            // hyper reports no 1xx on HTTP/2: there is no `100 Continue` to wait for.
            self.expect = None;
            return Poll::Ready(());
        }
        if !expect.started {
            expect.started = true;
            // Asked for the body: the headers are in the connection's hands.
            self.trace.wrote_headers();
            self.trace.wait_100_continue();
        }
        if shared.answered.load(Ordering::Acquire) {
            self.expect = None;
            self.unsent = true;
            return Poll::Ready(());
        }
        if !shared.poll_continue(cx) {
            let timeout = expect.timeout;
            let sleep = expect
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.expect = None;
        Poll::Ready(())
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.poll_continue(cx).is_pending() {
            return Poll::Pending;
        }
        if this.unsent {
            // Ends short of a declared length, so hyper closes the connection rather than
            // reuse it with the request half-sent.
            return Poll::Ready(None);
        }
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) => this.end(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.end(),
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.unsent || (self.expect.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body from a [`TracedClient`]: hyper's body, reporting the end of the exchange.
///
/// On HTTP/1, when the body ends the connection goes back to the pool (`on_put_idle_conn`
/// without error), unless a `Connection: close` (or HTTP/1.0) says it will close, or the body
/// failed, or it is dropped before its end (`on_put_idle_conn` with the reason). The request's
/// trace then ends: the connection's exchange is over and the request's hooks are called no
/// more.
pub struct ResponseBody {
    inner: Incoming,
    end: Option<End>,
}

struct End {
    trace: RequestTrace,
    h1: bool,
    /// Why the connection does not go back to the pool, if it does not.
    not_reused: Option<&'static str>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("ended", &self.end.is_none())
            .finish()
    }
}

impl ResponseBody {
    fn new(
        inner: Incoming,
        trace: RequestTrace,
        h1: bool,
        not_reused: Option<&'static str>,
    ) -> Self {
        let mut body = ResponseBody {
            inner,
            end: Some(End {
                trace,
                h1,
                not_reused,
            }),
        };
        if body.inner.is_end_stream() {
            body.finish(None);
        }
        body
    }

    /// The request's trace (until the body ends).
    pub fn trace(&self) -> Option<&RequestTrace> {
        self.end.as_ref().map(|e| &e.trace)
    }

    fn finish(&mut self, error: Option<&io::Error>) {
        let Some(end) = self.end.take() else { return };
        if end.h1 {
            match error {
                Some(e) => end.trace.put_idle_conn(Some(e)),
                None => match end.not_reused {
                    None => end.trace.put_idle_conn(None),
                    Some(why) => end.trace.put_idle_conn(Some(&io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        why,
                    ))),
                },
            }
        }
        end.trace.finish();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ::hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ::hyper::Error>>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) => this.finish(None),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(None),
            Poll::Ready(Some(Err(e))) => {
                let err = io_error_for_hooks(e);
                this.finish(Some(&err));
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.end.is_some() {
            self.finish(Some(&io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the response body was dropped before its end",
            )));
        }
    }
}
