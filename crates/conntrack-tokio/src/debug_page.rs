//! The debug page as an axum router (feature `axum`); see [`DebugPage`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use conntrack_core::render::{self, HtmlOptions, Order, Page, Snapshot};
use conntrack_core::{Addr, Tracker};

use crate::TrackedConnectInfo;

/// The debug page as an axum router (feature `axum`): HTML by default, JSON with
/// `?format=json` or an `Accept` header preferring `application/json` (by q-value), the
/// plain-text table with `?format=text`.
///
/// The page shows peer addresses, internal dial targets and error texts, with no
/// authentication. So by default it answers only requests from loopback peers (and Unix
/// sockets); any other peer, a request whose peer address is unknown, and a request relayed
/// by a proxy (one carrying `Forwarded` or `X-Forwarded-For`) get `403 Forbidden` with a
/// one-line reason. The peer address comes from axum's connect info, so serve the app with
/// `into_make_service_with_connect_info::<TrackedConnectInfo>()` (on a tracked [`Listener`])
/// or `::<SocketAddr>()` (on tokio's). Better still, serve the page on an internal port of its
/// own, apart from the public app, as below. [`DebugPage::allow_any_peer`] opts out of the
/// check, for a port that something else already protects.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use conntrack_core::{ListenerConfig, Tracker};
/// use conntrack_tokio::{debug_router, Listener, TrackedConnectInfo};
///
/// let tracker = Tracker::new();
/// // An internal port, on loopback, for the debug page alone.
/// let inner = tokio::net::TcpListener::bind("127.0.0.1:6060").await?;
/// let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("debug"));
/// let app = axum::Router::new().nest("/debug/conntrack", debug_router(&tracker));
/// axum::serve(listener, app.into_make_service_with_connect_info::<TrackedConnectInfo>()).await
/// # }
/// # let _ = run;
/// ```
///
/// The page lists at most [`Page::DEFAULT_LIMIT`] live connections (and as many closed
/// ones), newest first, and says "Showing N of M" when it leaves some out; the summary and
/// the JSON `total_connections` cover all of them. `?limit=N` shows more (or fewer) and
/// `?sort=newest|oldest|bytes|idle` picks which. The snapshot is taken and rendered on
/// tokio's blocking pool (`spawn_blocking`), so a page of a large tracker does not hold up
/// the async workers. Responses carry `Cache-Control: no-store` and `Vary: Accept`.
///
/// [`Listener`]: crate::Listener
///
/// `DebugPage` configures the router: which peers it answers and how much it shows.
/// [`debug_router`] is `DebugPage::new(tracker).router()`.
///
/// ```
/// use conntrack_core::Tracker;
/// use conntrack_tokio::DebugPage;
///
/// let tracker = Tracker::new();
/// let router: axum::Router = DebugPage::new(&tracker).default_limit(200).router();
/// # drop(router);
/// ```
#[derive(Debug, Clone)]
pub struct DebugPage {
    tracker: Tracker,
    any_peer: bool,
    page: Page,
    html: HtmlOptions,
}

impl DebugPage {
    /// The page of `tracker`: loopback peers only, [`Page::DEFAULT_LIMIT`] connections newest
    /// first, the default HTML options.
    pub fn new(tracker: &Tracker) -> Self {
        DebugPage {
            tracker: tracker.clone(),
            any_peer: false,
            page: Page::new(),
            html: HtmlOptions::default(),
        }
    }

    /// Answers every peer, not only loopback ones: for a port that is internal already, or
    /// that an authenticating layer in front of the router protects.
    #[must_use]
    pub fn allow_any_peer(mut self) -> Self {
        self.any_peer = true;
        self
    }

    /// How many connections a page shows unless `?limit=` says otherwise.
    #[must_use]
    pub fn default_limit(mut self, limit: usize) -> Self {
        self.page = self.page.limit(limit);
        self
    }

    /// The HTML page's title and refresh.
    #[must_use]
    pub fn html_options(mut self, options: HtmlOptions) -> Self {
        self.html = options;
        self
    }

    /// The router, serving the page at its root; nest it wherever you like.
    pub fn router(self) -> Router {
        Router::new().route(
            "/",
            get(move |req: Request<axum::body::Body>| {
                let page = self.clone();
                async move { with_headers(page.respond(req).await) }
            }),
        )
    }

    async fn respond(self, req: Request<axum::body::Body>) -> Response {
        if !self.any_peer {
            if let Err(reason) = local_peer(&req) {
                return (
                    StatusCode::FORBIDDEN,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("{reason}\n"),
                )
                    .into_response();
            }
        }
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let format = query.format.unwrap_or_else(|| negotiate(req.headers()));
        let mut page = self.page;
        if let Some(limit) = query.limit {
            page = page.limit(limit);
        }
        if let Some(order) = query.order {
            page = page.order(order);
        }
        let (tracker, html) = (self.tracker, self.html);
        // Walking and rendering a large tracker takes milliseconds: not on an async worker.
        let rendered = tokio::task::spawn_blocking(move || {
            let snapshot = Snapshot::page(&tracker, &page);
            match format {
                Format::Json => render::json(&snapshot),
                Format::Text => {
                    render::text_table(&snapshot.connections)
                        + "\n"
                        + &render::text_stats(&snapshot.stats)
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

/// A router serving `tracker`'s debug page at its root, to loopback peers only; nest it
/// wherever you like. See [`DebugPage`] for the options and for how
/// to serve it.
pub fn debug_router(tracker: &Tracker) -> Router {
    DebugPage::new(tracker).router()
}

fn with_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    res
}

/// `Ok` when the request comes straight from this machine, else why not.
fn local_peer<B>(req: &Request<B>) -> Result<(), &'static str> {
    let h = req.headers();
    if h.contains_key(header::FORWARDED) || h.contains_key("x-forwarded-for") {
        return Err("forbidden: the debug page answers only direct loopback peers, and this request came through a proxy");
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
        Some(false) => Err("forbidden: the debug page answers only loopback peers (see DebugPage::allow_any_peer)"),
        None => Err("forbidden: the peer address is unknown; serve the app with into_make_service_with_connect_info, or see DebugPage::allow_any_peer"),
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
