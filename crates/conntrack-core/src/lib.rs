//! Keep track of a program's live network connections and observe their life through hooks.
//!
//! `conntrack-core` is the runtime-independent heart of the conntrack crates. A [`Tracker`]
//! holds every live connection; an integration (one of the adapter crates, or your own code)
//! [`register`](Tracker::register)s each connection and records its reads and writes on the
//! returned [`Connection`] handle. Anyone can then ask the tracker what is connected right
//! now ([`Tracker::connections`]), for totals that outlive connections ([`Tracker::stats`]),
//! for what just closed ([`Tracker::recently_closed`]), or wait until everything has closed
//! ([`Tracker::drained`]). [`Hook`]s see every phase: accept, dial, DNS, each connect attempt,
//! TLS handshake, read, write and close.
//!
//! Most programs use an adapter: `conntrack-tokio`, `conntrack-async-std` (async-std and smol),
//! `conntrack-std` (blocking). Depending on this crate alone is enough to track anything else.
//!
//! # A custom integration
//!
//! ```
//! use conntrack_core::{Connection, Registration, Tracker};
//! use std::io::{self, Read};
//!
//! /// A stream whose reads are counted.
//! struct Counted<R> { inner: R, conn: Connection }
//!
//! impl<R: Read> Read for Counted<R> {
//!     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
//!         self.conn.read_result(self.inner.read(buf))
//!     }
//! }
//!
//! let tracker = Tracker::new();
//! let reg = Registration::server("127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap(),
//!                                "127.0.0.1:50123".parse::<std::net::SocketAddr>().unwrap())
//!     .category("api");
//! let mut stream = Counted { inner: &b"hello"[..], conn: tracker.register(reg) };
//! io::copy(&mut stream, &mut io::sink()).unwrap();
//!
//! let infos = tracker.connections();
//! assert_eq!((infos[0].category.as_ref(), infos[0].read_bytes), ("api", 5));
//! drop(stream); // the entry goes with the last handle
//! assert!(tracker.is_empty());
//! ```
//!
//! # Hook order
//!
//! For every event, hooks run in this order: the per-call [`trace`] scopes (innermost first),
//! then the listener's or dialer's config ([`ListenerConfig`], [`DialerConfig`]), then the
//! tracker's own hooks ([`TrackerBuilder::hook`], [`Tracker::add_hook`]).
//!
//! # Feature flags
//!
//! - `serde`: `Serialize` for [`ConnectionInfo`], [`ClosedConnection`], [`Stats`] and their
//!   parts.
//! - `metrics`: [`metrics::MetricsHook`] and [`metrics::MetricsCollector`], export to the
//!   `metrics` facade with OpenTelemetry-style names.
//! - `tracing`: [`tracing::TracingHook`], a `tracing` span per connection and events for each
//!   phase, with OpenTelemetry attribute names.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

// The crate's modules, one folder per concern, layered: a module imports only from its own
// folder and the folders above it in this list (`docs/architecture.md` has the code map;
// `cargo xtask ci` checks the order).
// 1. records and events: plain data
mod record;
// 2. hooks and trace scopes
mod hooks;
// 3. tracking state
mod track;
// 4. acting and dialing
mod act;
// 5. emitters
mod emit;

// The public modules keep the paths they have always had.
pub use act::{blocking, dialer, dns};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use emit::metrics;
pub use emit::render;
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub use emit::tracing;
pub use hooks::trace;
pub use track::activity;

pub use act::admit::AdmitWaiting;
pub use act::control::{ShutdownReport, ShutdownSignal};
pub use act::dial::{ConnectAttempt, Dial};
pub use act::request::{RequestHooks, RequestTimings, RequestTrace};
// Shown in the docs as re-exports, where the items are documented in their public module.
#[doc(no_inline)]
pub use activity::{ActiveSample, Phases, RequestTiming, ServerExchangeTiming, ServerPhases};
pub use hooks::hook::{Callbacks, Hook, Hooks, NoopHook};
pub use hooks::recording::{Recorded, RecordedError, RecordingHook, Until};
pub use record::event::{
    AcceptEvent, CloseEvent, ConnectDoneEvent, ConnectStartEvent, DialEvent, DnsDoneEvent,
    DnsStartEvent, GetConnEvent, Got100ContinueEvent, Got1xxResponseEvent, GotConnEvent,
    GotFirstResponseByteEvent, PutIdleConnEvent, ReadEvent, RequestInfo, ServerExchangeEvent,
    TlsHandshakeDoneEvent, TlsHandshakeStartEvent, Wait100ContinueEvent, WriteEvent,
    WroteHeaderFieldEvent, WroteHeadersEvent, WroteRequestEvent,
};
pub use record::info::{
    Addr, CloseReason, ClosedConnection, ConnState, ConnectionId, ConnectionInfo, PeerCertificates,
    Role, ServerExchangeProgress, ServerPhase, Timings, TlsInfo,
};
pub use record::tcp_info::TcpStats;
#[doc(no_inline)]
pub use render::Snapshot;
pub use track::config::{DialerConfig, ListenerConfig, DEFAULT_FALLBACK_DELAY};
pub use track::connection::{
    BodyTimer, CloserGuard, Connection, ConnectionRef, ExchangeStart, Registration, ServerExchange,
    SocketGuard, TcpInfoGuard,
};
pub use track::limit::{AcceptReady, LimitMode};
pub use track::stats::{CategoryStats, Stats};
pub use track::tracker::{Drained, HookHandle, Tracker, TrackerBuilder, DEFAULT_HISTORY};
