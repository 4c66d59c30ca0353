//! The debug page as an axum router (feature `axum`); see [`DebugPage`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use conntrack_core::render::{self, HtmlOptions, Order, Page, Snapshot};
use conntrack_core::{Addr, Tracker};

use crate::debug_events::{event_total, EventStream, EventsConfig, Refused};
use crate::TrackedConnectInfo;

/// The debug page as an axum router (feature `axum`): HTML by default, JSON with
/// `?format=json` or an `Accept` header preferring `application/json` (by q-value), the
/// plain-text table with `?format=text`, and a stream of server-sent events at `events`.
///
/// The simplest way to serve it is on a listener of its own, bound to `127.0.0.1`:
/// [`debug::serve`](crate::debug::serve) or [`debug::Server`](crate::debug::Server). This
/// router is for mounting the page inside an application of yours.
///
/// # Who may read it
///
/// The page shows peer addresses, internal dial targets and error texts. So by default it
/// answers only requests that come straight from this machine: from a loopback peer (or over
/// a Unix socket), and carrying none of the headers a proxy or a CDN adds (`Forwarded`, any
/// `X-Forwarded-*`, `X-Real-IP`, `Via`, `True-Client-IP`, `CF-Connecting-IP`, `X-Client-IP`,
/// `Fastly-Client-IP`, `X-Cluster-Client-IP`, ... see [`PROXY_HEADERS`]). Anything else gets
/// `403 Forbidden` with a one-line reason, and so does a request whose peer is unknown.
///
/// **A proxy on the same host that adds no header (nginx's plain `proxy_pass`) makes every
/// request it relays look local**: the page is then as public as the proxy. To expose the page
/// deliberately, set a [`bearer_token`](DebugPage::bearer_token): every request must then carry
/// `Authorization: Bearer <token>` (compared in constant time), from loopback or not, proxied
/// or not; without it, or with another, `401 Unauthorized`. [`allow_any_peer`](DebugPage::allow_any_peer)
/// turns the checks off, for a port that something else already protects.
///
/// The peer address comes from axum's connect info, so serve the app with
/// `into_make_service_with_connect_info::<TrackedConnectInfo>()` (on a tracked [`Listener`])
/// or `::<SocketAddr>()` (on tokio's).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use conntrack_core::{ListenerConfig, Tracker};
/// use conntrack_tokio::{debug_router, Listener, TrackedConnectInfo};
///
/// let tracker = Tracker::new();
/// let inner = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http"));
/// let app = axum::Router::new().nest("/debug/conntrack", debug_router(&tracker));
/// axum::serve(listener, app.into_make_service_with_connect_info::<TrackedConnectInfo>()).await
/// # }
/// # let _ = run;
/// ```
///
/// # What it shows
///
/// The page lists at most [`Page::DEFAULT_LIMIT`] live connections (and as many closed
/// ones), newest first, and says "Showing N of M" when it leaves some out; the summary and
/// the JSON `total_connections` cover all of them. `?limit=N` shows more (or fewer), up to
/// [`max_limit`](DebugPage::max_limit) (10,000 unless configured): a larger ask gets the cap,
/// and the page says so. `?sort=newest|oldest|bytes|idle` picks which. The snapshot is taken
/// and rendered on tokio's blocking pool (`spawn_blocking`), so a page of a large tracker does
/// not hold up the async workers. Responses carry `Cache-Control: no-store` and `Vary: Accept`.
///
/// With a tracker that keeps recent requests (`Tracker::builder().recent_requests(32)`), the
/// page draws a waterfall of the last traced client requests and one of the last requests
/// served through [`ExchangeLayer`](crate::exchange::ExchangeLayer) (each phase of each:
/// waiting, request head, request body, handler, response write); the JSON has them under
/// `requests` and `server_exchanges`, and the text format ends with a table of the served
/// ones.
///
/// # Live
///
/// `GET <page>/events` is a `text/event-stream` of what happens (`opened`, `closed`, `failed`,
/// `request`, `server_exchange`, a `summary` every second, `dropped`; the format is in
/// `docs/observability.md`).
/// The HTML page follows it with a small script: rows appear and leave as connections open
/// and close, and the page re-reads itself every [`HtmlOptions::refresh_secs`] to refresh the
/// totals and pictures. Without scripts it is plain HTML that reloads itself at that period.
///
/// Each subscriber has a bounded queue ([`event_queue`](DebugPage::event_queue), 1,024
/// events): when it is full the event is dropped and counted, and the stream says so with a
/// `dropped` event; a slow subscriber never slows a connection. Each subscriber installs a
/// tracker hook for connection events only (no per-I/O events) and removes it when it leaves:
/// with nobody subscribed, nothing is installed and nothing runs.
///
/// [`Listener`]: crate::Listener
///
/// ```
/// use conntrack_core::Tracker;
/// use conntrack_tokio::DebugPage;
///
/// let tracker = Tracker::new();
/// let router: axum::Router = DebugPage::new(&tracker)
///     .default_limit(200)
///     .bearer_token("s3cret-from-your-config")
///     .router();
/// # drop(router);
/// ```
#[derive(Clone)]
pub struct DebugPage {
    tracker: Tracker,
    any_peer: bool,
    token: Option<Arc<[u8]>>,
    page: Page,
    max_limit: usize,
    html: HtmlOptions,
    events: EventsConfig,
}

impl std::fmt::Debug for DebugPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugPage")
            .field("tracker", &self.tracker)
            .field("any_peer", &self.any_peer)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("page", &self.page)
            .field("max_limit", &self.max_limit)
            .field("html", &self.html)
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}

/// The request headers that mark a request as relayed by a proxy or a CDN (lowercase). The
/// debug page refuses a request carrying any of them, or any header whose name starts with
/// `x-forwarded-`, unless it has the page's bearer token.
pub const PROXY_HEADERS: &[&str] = &[
    "forwarded",
    "via",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "x-client-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "x-envoy-external-address",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-appengine-user-ip",
    "x-proxyuser-ip",
    "x-forwarded",
    "forwarded-for",
];

impl DebugPage {
    /// The default [`max_limit`](DebugPage::max_limit).
    pub const DEFAULT_MAX_LIMIT: usize = 10_000;

    /// The page of `tracker`: direct loopback requests only, [`Page::DEFAULT_LIMIT`]
    /// connections newest first (at most [`DEFAULT_MAX_LIMIT`](DebugPage::DEFAULT_MAX_LIMIT)
    /// on request), the default HTML options.
    pub fn new(tracker: &Tracker) -> Self {
        DebugPage {
            tracker: tracker.clone(),
            any_peer: false,
            token: None,
            page: Page::new(),
            max_limit: Self::DEFAULT_MAX_LIMIT,
            html: HtmlOptions::default(),
            events: EventsConfig::default(),
        }
    }

    /// Answers every peer, proxied or not, not only direct loopback ones: for a port that is
    /// internal already, or that an authenticating layer in front of the router protects. A
    /// [`bearer_token`](DebugPage::bearer_token), if set, is still required.
    #[must_use]
    pub fn allow_any_peer(mut self) -> Self {
        self.any_peer = true;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every request, and answers any peer that
    /// has it (proxied or not): the way to expose the page deliberately, for instance behind a
    /// proxy that authenticates users and adds the header. The token is compared in constant
    /// time. A request without it, with another, or with more than one `Authorization` field
    /// gets `401 Unauthorized`.
    ///
    /// Browsers do not send such a header by themselves: a person reads a protected page
    /// through a proxy (or an extension) that adds it.
    ///
    /// # Panics
    ///
    /// If `token` is empty.
    #[must_use]
    pub fn bearer_token(mut self, token: impl AsRef<[u8]>) -> Self {
        let token = token.as_ref();
        assert!(!token.is_empty(), "an empty bearer token");
        self.token = Some(Arc::from(token));
        self
    }

    /// How many connections a page shows unless `?limit=` says otherwise (at most
    /// [`max_limit`](DebugPage::max_limit)).
    #[must_use]
    pub fn default_limit(mut self, limit: usize) -> Self {
        self.page = self.page.limit(limit);
        self
    }

    /// The most connections (live, and closed) a page shows, whatever `?limit=` asks: a
    /// larger ask is answered with this many, and the page says so. Default
    /// [`DEFAULT_MAX_LIMIT`](DebugPage::DEFAULT_MAX_LIMIT) (about 3.3 MB of HTML).
    #[must_use]
    pub fn max_limit(mut self, max: usize) -> Self {
        self.max_limit = max;
        self
    }

    /// The HTML page's title and refresh period (the live page's re-read period; without
    /// scripts, its reload period).
    #[must_use]
    pub fn html_options(mut self, options: HtmlOptions) -> Self {
        self.html = options;
        self
    }

    /// How many events a subscriber's queue holds before new ones are dropped (and counted).
    /// Default 1,024.
    #[must_use]
    pub fn event_queue(mut self, events: usize) -> Self {
        self.events.queue = events.max(1);
        self
    }

    /// How many event subscribers may be connected at once; one more gets `503 Service
    /// Unavailable`. Default 16.
    #[must_use]
    pub fn max_subscribers(mut self, n: usize) -> Self {
        self.events.max_subscribers = n;
        self
    }

    /// The period of the events stream's `summary` event. Default one second.
    #[must_use]
    pub fn summary_every(mut self, period: Duration) -> Self {
        self.events.summary_every = period;
        self
    }

    /// Ends every events stream of this page (and of its clones), now and from now on: a new
    /// subscriber gets `503`, and the live page falls back to re-reading itself. Call it when
    /// the server the router runs in begins a graceful shutdown: an events stream never ends by
    /// itself, so a graceful shutdown would otherwise wait for its subscriber to hang up.
    /// [`debug::BoundServer::run_until`](crate::debug::BoundServer::run_until) does it for you.
    ///
    /// ```no_run
    /// # async fn run(listener: tokio::net::TcpListener, shutdown: tokio::sync::oneshot::Receiver<()>) -> std::io::Result<()> {
    /// use conntrack_core::Tracker;
    /// use conntrack_tokio::DebugPage;
    ///
    /// let tracker = Tracker::new();
    /// let page = DebugPage::new(&tracker);
    /// let app = axum::Router::new().nest("/debug/conntrack", page.clone().router());
    /// axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
    ///     .with_graceful_shutdown(async move {
    ///         let _ = shutdown.await;
    ///         page.close_events();
    ///     })
    ///     .await
    /// # }
    /// # let _ = run;
    /// ```
    pub fn close_events(&self) {
        self.events.closing.send_replace(true);
    }

    /// How many event subscribers are connected now (over this page and its clones).
    #[must_use]
    pub fn subscribers(&self) -> usize {
        self.events
            .subscribers
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The router, serving the page at its root and the events at `events`; nest it wherever
    /// you like.
    pub fn router(self) -> Router {
        let events = self.clone();
        Router::new()
            .route(
                "/",
                get(move |req: Request<axum::body::Body>| {
                    let page = self.clone();
                    async move { with_headers(page.respond(req).await) }
                }),
            )
            .route(
                "/events",
                get(move |req: Request<axum::body::Body>| {
                    let page = events.clone();
                    async move { with_headers(page.events(req).await) }
                }),
            )
    }

    /// `Err` with the response to give when the request may not see the page.
    #[allow(clippy::result_large_err)]
    fn admit<B>(&self, req: &Request<B>) -> Result<(), Response> {
        if let Some(token) = &self.token {
            return if bearer_matches(req.headers(), token) {
                Ok(())
            } else {
                Err((
                    StatusCode::UNAUTHORIZED,
                    [
                        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                        (header::WWW_AUTHENTICATE, "Bearer realm=\"conntrack\""),
                    ],
                    "unauthorized: the debug page needs its bearer token (Authorization: Bearer ...)\n",
                )
                    .into_response())
            };
        }
        if self.any_peer {
            return Ok(());
        }
        local_peer(req).map_err(|reason| {
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{reason}\n"),
            )
                .into_response()
        })
    }

    async fn events(self, req: Request<axum::body::Body>) -> Response {
        if let Err(refused) = self.admit(&req) {
            return refused;
        }
        let html = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|p| p == "html=1");
        drop(req);
        // The totals before the subscription begins, to count what it misses (a walk of the
        // tracker: not on an async worker).
        let tracker = self.tracker.clone();
        let Ok(base) = tokio::task::spawn_blocking(move || event_total(&tracker.stats())).await
        else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        match EventStream::subscribe(&self.tracker, &self.events, html, base) {
            Ok(stream) => Sse::new(stream).into_response(),
            Err(Refused::Closed) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the debug page's events are closed: the server is shutting down\n",
            )
                .into_response(),
            Err(Refused::TooMany) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "too many event subscribers (see DebugPage::max_subscribers)\n",
            )
                .into_response(),
        }
    }

    async fn respond(self, req: Request<axum::body::Body>) -> Response {
        if let Err(refused) = self.admit(&req) {
            return refused;
        }
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let format = query.format.unwrap_or_else(|| negotiate(req.headers()));
        let mut page = self.page;
        if let Some(limit) = query.limit {
            page = page.limit(limit);
        }
        let mut note = None;
        if page.limit > self.max_limit {
            if query.limit.is_some() {
                note = Some((page.limit, self.max_limit));
            }
            page = page.limit(self.max_limit);
        }
        if let Some(order) = query.order {
            page = page.order(order);
        }
        let (tracker, mut html) = (self.tracker, self.html);
        let note_text = note.map(|(asked, cap)| {
            format!(
                "Asked for {asked} connections; a page shows at most {cap} (DebugPage::max_limit)."
            )
        });
        html.note = note_text.clone();
        // The page follows the events stream beside it; `limit` tells its script how many rows
        // to keep.
        html.events = Some(format!("events?html=1&limit={}", page.limit));
        // Walking and rendering a large tracker takes milliseconds: not on an async worker.
        let rendered = tokio::task::spawn_blocking(move || {
            let snapshot = Snapshot::page(&tracker, &page);
            match format {
                Format::Json => {
                    let json = render::json(&snapshot);
                    match note {
                        // One more top-level key, first: the snapshot is an object.
                        Some((asked, cap)) => format!(
                            "{{\"limit_capped\":{{\"asked\":{asked},\"limit\":{cap}}},{}",
                            &json[1..]
                        ),
                        None => json,
                    }
                }
                Format::Text => {
                    let mut text = render::text_table(&snapshot.connections)
                        + "\n"
                        + &render::text_stats(&snapshot.stats);
                    // The served requests the tracker keeps (`recent_requests`), if any.
                    let served = render::text_server_exchanges(&snapshot.server_exchanges);
                    if !served.is_empty() {
                        text = text + "\n" + &served;
                    }
                    if let Some(note) = note_text {
                        text = text + "\n" + &note + "\n";
                    }
                    text
                }
                Format::Html => render::html(&snapshot, &html),
            }
        })
        .await;
        match rendered {
            Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering the debug page failed: {e}\n"),
            )
                .into_response(),
        }
    }
}

/// A router serving `tracker`'s debug page at its root (and its events at `events`), to direct
/// loopback requests only; nest it wherever you like. See [`DebugPage`] for the options and
/// for how to serve it.
pub fn debug_router(tracker: &Tracker) -> Router {
    DebugPage::new(tracker).router()
}

fn with_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    res
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, token: &[u8]) -> bool {
    // Exactly one `Authorization` field: a request carrying several (one of them perhaps
    // added on its way) is refused, whatever they hold.
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let v = value.as_bytes();
    // The scheme is case-insensitive (RFC 9110 §11.1); one or more spaces follow it.
    v.len() > 7
        && v[..6].eq_ignore_ascii_case(b"bearer")
        && v[6] == b' '
        && constant_time_eq(v[7..].trim_ascii(), token)
}

/// `a == b`, in a time that depends on their lengths only, not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether a header says the request was relayed by a proxy or a CDN.
fn is_proxy_header(name: &str) -> bool {
    // Header names are lowercase in `http`'s `HeaderName`.
    name.starts_with("x-forwarded-") || PROXY_HEADERS.contains(&name)
}

/// `Ok` when the request comes straight from this machine, else why not.
fn local_peer<B>(req: &Request<B>) -> Result<(), String> {
    if let Some(name) = req.headers().keys().find(|k| is_proxy_header(k.as_str())) {
        return Err(format!(
            "forbidden: the debug page answers only direct loopback requests, and this one came through a proxy ({name}); see DebugPage::bearer_token"
        ));
    }
    let ext = req.extensions();
    let local = if let Some(ConnectInfo(c)) = ext.get::<ConnectInfo<TrackedConnectInfo>>() {
        match &c.remote_addr {
            Addr::Inet(sa) => Some(is_loopback(sa.ip())),
            Addr::Unix(_) => Some(true),
            _ => None,
        }
    } else {
        ext.get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(sa)| is_loopback(sa.ip()))
    };
    match local {
        Some(true) => Ok(()),
        Some(false) => Err("forbidden: the debug page answers only loopback peers (see DebugPage::bearer_token)".into()),
        None => Err("forbidden: the peer address is unknown; serve the app with into_make_service_with_connect_info, or see DebugPage::bearer_token".into()),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // `::ffff:127.0.0.1` is loopback too.
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Json,
    Text,
}

impl Format {
    const ALL: [Format; 3] = [Format::Html, Format::Json, Format::Text];

    fn name(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Json => "json",
            Format::Text => "text",
        }
    }

    fn media_type(self) -> (&'static str, &'static str) {
        match self {
            Format::Html => ("text", "html"),
            Format::Json => ("application", "json"),
            Format::Text => ("text", "plain"),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
            Format::Text => "text/plain; charset=utf-8",
        }
    }
}

/// The query parameters the page reads; unknown ones and bad values are ignored.
#[derive(Debug, Default)]
struct Query {
    format: Option<Format>,
    limit: Option<usize>,
    order: Option<Order>,
}

impl Query {
    fn parse(query: &str) -> Self {
        let mut q = Query::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "format" => {
                    if let Some(f) = Format::ALL
                        .into_iter()
                        .find(|f| f.name().eq_ignore_ascii_case(value))
                    {
                        q.format = Some(f);
                    }
                }
                "limit" => q.limit = value.parse().ok().or(q.limit),
                "sort" => q.order = Order::parse(value).or(q.order),
                _ => {}
            }
        }
        q
    }
}

/// The format the `Accept` header prefers, by q-value (RFC 9110 §12.5.1): each format's
/// quality comes from the most specific media range that matches it (`application/json`
/// over `application/*` over `*/*`); the highest quality above zero wins, HTML on a tie or
/// when nothing is acceptable (as with no header at all).
fn negotiate(headers: &HeaderMap) -> Format {
    let ranges: Vec<(&str, &str, f32)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(media_range)
        .collect();
    if ranges.is_empty() {
        return Format::Html;
    }
    let quality = |f: Format| {
        let (ty, sub) = f.media_type();
        let mut best: Option<(u8, f32)> = None;
        for &(rt, rs, q) in &ranges {
            let specificity = if rt.eq_ignore_ascii_case(ty) && rs.eq_ignore_ascii_case(sub) {
                3
            } else if rt.eq_ignore_ascii_case(ty) && rs == "*" {
                2
            } else if rt == "*" && rs == "*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let mut chosen = Format::Html;
    let mut chosen_q = quality(Format::Html);
    for f in [Format::Json, Format::Text] {
        let q = quality(f);
        if q > chosen_q {
            chosen = f;
            chosen_q = q;
        }
    }
    chosen
}

/// `type/subtype;q=0.5;...` as (type, subtype, q); `None` when malformed.
fn media_range(s: &str) -> Option<(&str, &str, f32)> {
    let mut parts = s.split(';');
    let (ty, sub) = parts.next()?.trim().split_once('/')?;
    let mut q = 1.0;
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("q") {
                q = v
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))?;
            }
        }
    }
    Some((ty.trim(), sub.trim(), q))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Format {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        negotiate(&h)
    }

    #[test]
    fn accept_honours_q_values() {
        assert_eq!(negotiate(&HeaderMap::new()), Format::Html);
        assert_eq!(accept("application/json"), Format::Json);
        assert_eq!(accept("application/json;q=0"), Format::Html);
        assert_eq!(accept("application/json; q=0.0, */*"), Format::Html);
        assert_eq!(
            accept("text/html;q=0.5, application/json;q=0.9"),
            Format::Json
        );
        assert_eq!(accept("application/*"), Format::Json);
        assert_eq!(accept("text/plain"), Format::Text);
        assert_eq!(accept("*/*"), Format::Html);
        // A browser's.
        assert_eq!(
            accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Format::Html
        );
        // The most specific range decides: JSON is excluded although */* accepts anything.
        assert_eq!(accept("*/*;q=1, application/json;q=0"), Format::Html);
        assert_eq!(accept("garbage"), Format::Html);
    }

    #[test]
    fn query_is_case_insensitive_in_values() {
        assert_eq!(Query::parse("format=JSON").format, Some(Format::Json));
        assert_eq!(Query::parse("format=Text&x=1").format, Some(Format::Text));
        assert_eq!(Query::parse("format=xml").format, None);
        let q = Query::parse("limit=50&sort=Bytes");
        assert_eq!((q.limit, q.order), (Some(50), Some(Order::Bytes)));
        assert_eq!(Query::parse("limit=lots").limit, None);
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.8.9.10".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:192.0.2.1".parse().unwrap()));
    }
}
