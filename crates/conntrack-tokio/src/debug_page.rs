//! The debug page as an axum router (feature `axum`): HTML by default, JSON with
//! `?format=json` or `Accept: application/json`, the plain-text table with `?format=text`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use conntrack_core::Tracker;
//! use conntrack_tokio::debug_router;
//!
//! let tracker = Tracker::new();
//! let app = axum::Router::new().nest("/debug/conntrack", debug_router(&tracker));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6060").await?;
//! axum::serve(listener, app).await
//! # }
//! # let _ = run;
//! ```

use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use conntrack_core::render::{self, HtmlOptions, Snapshot};
use conntrack_core::Tracker;

fn wants(uri: &Uri, headers: &HeaderMap) -> &'static str {
    let query = uri.query().unwrap_or("");
    for pair in query.split('&') {
        match pair {
            "format=json" => return "json",
            "format=text" => return "text",
            "format=html" => return "html",
            _ => {}
        }
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/json") {
        "json"
    } else {
        "html"
    }
}

/// A router serving `tracker`'s debug page at its root; nest it wherever you like.
pub fn debug_router(tracker: &Tracker) -> Router {
    let tracker = tracker.clone();
    Router::new().route(
        "/",
        get(move |uri: Uri, headers: HeaderMap| {
            let tracker = tracker.clone();
            async move {
                let snapshot = Snapshot::of(&tracker);
                let (content_type, body) = match wants(&uri, &headers) {
                    "json" => ("application/json", render::json(&snapshot)),
                    "text" => (
                        "text/plain; charset=utf-8",
                        render::text_table(&snapshot.connections)
                            + "\n"
                            + &render::text_stats(&snapshot.stats),
                    ),
                    _ => (
                        "text/html; charset=utf-8",
                        render::html(&snapshot, &HtmlOptions::default()),
                    ),
                };
                let response: Response =
                    ([(header::CONTENT_TYPE, content_type)], body).into_response();
                response
            }
        }),
    )
}
