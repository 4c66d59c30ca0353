//! Track live tokio connections.
//!
//! The tokio adapter of [`conntrack_core`]: wrap a listener in [`Listener`] and every accepted
//! connection is registered with a [`Tracker`](conntrack_core::Tracker) and counted as a
//! [`Tracked`] stream; make outbound connections with a [`Dialer`], which resolves names
//! itself, races addresses as Happy Eyeballs does and reports DNS, every connect attempt and
//! the dial to the hooks. All tracking logic lives in `conntrack-core`; this crate is glue.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use conntrack_core::{render, DialerConfig, ListenerConfig, Tracker};
//! use conntrack_tokio::{Dialer, Listener};
//!
//! let tracker = Tracker::new();
//! let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = inner.local_addr()?;
//! let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
//! let dialer = Dialer::new(&tracker, DialerConfig::new().category("client"));
//! let target = addr.to_string();
//! let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect(&target));
//! let (server, client) = (accepted?.0, dialed?);
//! print!("{}", render::text_table(&tracker.connections()));
//! drop((server, client)); // both entries leave the tracker
//! assert!(tracker.is_empty());
//! # Ok(())
//! # }
//! # let _ = run;
//! ```
//!
//! # Feature flags
//!
//! - `axum`: [`Listener`] implements `axum::serve::Listener`; `TrackedConnectInfo` is the
//!   connect info for `into_make_service_with_connect_info`; `debug::serve` serves the
//!   debug page (HTML, JSON, text, and a live events stream) on a listener of its own, bound
//!   to `127.0.0.1`; `debug_router` (or `DebugPage`) mounts it in your app, for direct
//!   loopback requests only unless it has a bearer token.
//! - `hyper`: [`Dialer`] is a hyper-util client connector (`tower::Service<Uri>`),
//!   `TrackedConnector` wraps hyper-util's `HttpConnector`, and responses carry the
//!   [`ConnectionId`](conntrack_core::ConnectionId) of their connection.
//! - `tonic`: `Tracked<T>` implements tonic's `Connected`; `Listener::incoming()` feeds
//!   `Server::serve_with_incoming`.
//! - `tls`: `tls::TlsAcceptor` and `tls::TlsConnector` (tokio-rustls) time and report each
//!   handshake on a [`Tracked`] stream and set its `tls` details; `Dialer::connect_tls` dials
//!   and handshakes in one call. No crypto provider is forced.
//! - `metrics`, `tracing`, `serde`: turn on the same features of `conntrack-core`
//!   (re-exported as [`conntrack_core`]): `conntrack_core::metrics` (a hook and a stats
//!   collector for the `metrics` facade), `conntrack_core::tracing` (a span per connection),
//!   `Serialize` for the records.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "axum")]
pub mod debug;
#[cfg(feature = "axum")]
mod debug_events;
#[cfg(feature = "axum")]
mod debug_page;
mod dialer;
#[cfg(feature = "server")]
pub mod exchange;
#[cfg(feature = "hyper")]
pub mod hyper;
mod listener;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tonic")]
mod tonic;

pub use conntrack_core;
pub use dialer::{dns, Dialer};
pub use listener::{Accept, Accepted, Listener};
pub use stream::Tracked;

#[cfg(feature = "axum")]
pub use crate::axum::TrackedConnectInfo;
#[cfg(feature = "axum")]
pub use crate::debug_page::{debug_router, DebugPage, PROXY_HEADERS};
#[cfg(feature = "hyper")]
pub use crate::hyper::TrackedConnector;
#[cfg(feature = "tonic")]
pub use crate::tonic::Incoming;
