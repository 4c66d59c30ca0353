//! Export to the [`metrics`](https://docs.rs/metrics) facade, with names modelled on
//! OpenTelemetry's semantic conventions (Kestrel's connection metrics, DNS lookups).
//!
//! Two parts, meant to be used together, that never write the same metric:
//!
//! - [`MetricsCollector`] reads [`Tracker::stats`] and sets the counts: the
//!   `conntrack.active_connections` gauge and the `opened` / `closed` / `failed` /
//!   `tls_handshakes.failed` / `conntrack.io` counters. These are the tracker's own exact
//!   totals (bytes include those of connections still open), so call
//!   [`collect`](MetricsCollector::collect) before each scrape, or every few seconds.
//! - [`MetricsHook`], installed on the tracker, records what only an event can tell: the
//!   duration histograms (`conntrack.connection.duration`, `conntrack.tls_handshake.duration`,
//!   `dns.lookup.duration`, `conntrack.connect.duration`) and `conntrack.errors` by
//!   `error.type`.
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `conntrack.active_connections` | gauge | | `category`, `role` |
//! | `conntrack.connections.opened` | counter | | `category`, `role` |
//! | `conntrack.connections.closed` | counter | | `category`, `role` |
//! | `conntrack.connections.failed` | counter | | `category`, `role` |
//! | `conntrack.tls_handshakes.failed` | counter | | `category`, `role` |
//! | `conntrack.io` | counter | bytes | `category`, `role`, `network.io.direction` (`receive`, `transmit`) |
//! | `conntrack.hook.panics` | counter | | |
//! | `conntrack.connection.duration` | histogram | seconds | `category`, `role`, `network.transport`, `tls.protocol.version`¹, `error.type`¹ |
//! | `conntrack.tls_handshake.duration` | histogram | seconds | `category`, `role`, `tls.protocol.version` or `error.type` |
//! | `dns.lookup.duration` | histogram | seconds | `category`, `error.type`¹ |
//! | `conntrack.connect.duration` | histogram | seconds | `category`, `network.transport`, `error.type`¹ |
//! | `conntrack.errors` | counter | | `category`, `role`, `conntrack.phase`, `error.type` |
//! | `conntrack.tcp.rtt` | histogram | seconds | `category`, `role` (the kernel's smoothed RTT at close; Linux) |
//! | `http.client.open_connections` | gauge | | `category`, `http.connection.state` (`active`, `idle`), `server.address`, `server.port`¹, `network.protocol.version`¹ |
//! | `http.client.connection.duration` | histogram | seconds | `category`, `server.address`, `server.port`¹, `network.protocol.version`¹ |
//! | `kestrel.active_connections` | gauge | | `category`, `network.transport`, `network.type`¹, `server.address`¹, `server.port`¹ |
//! | `kestrel.connection.duration` | histogram | seconds | the same, `network.protocol.name`¹, `network.protocol.version`¹, `tls.protocol.version`¹, `error.type`¹ |
//! | `kestrel.active_tls_handshakes` | gauge | | `category`, `network.transport`, `network.type`¹, `server.address`¹, `server.port`¹ |
//! | `kestrel.tls_handshake.duration` | histogram | seconds | the same, `tls.protocol.version` or `error.type` |
//! | `http.server.request.duration` | histogram | seconds | `category`, `http.request.method`, `http.response.status_code`¹, `http.route`¹, `network.protocol.version`, `error.type`¹ |
//! | `http.server.active_requests` | gauge | | `category` (from [`MetricsCollector`]) |
//! | `conntrack.server.phase.duration` | histogram | seconds | `category`, `conntrack.server.phase`, `network.protocol.version` |
//!
//! The server request metrics come from [`on_server_exchange`](Hook::on_server_exchange)
//! (requests served through the tokio adapter's `ExchangeLayer`), recorded only by a hook made
//! with [`MetricsHook::server_requests(true)`](MetricsHook::server_requests): it then says
//! [`wants_server_exchanges`](Hook::wants_server_exchanges) (and still no client request
//! events), which turns the exchanges' timing on (a few microseconds a request); by default
//! the hook asks for nothing per request. `http.server.request.duration`
//! runs from the request's first byte to its response's last byte flushed (the phases but
//! `waiting`); `error.type` is the status code for a 5xx answer and `aborted` for an exchange
//! cut short (the handler failed, the client went away). `conntrack.server.phase.duration`
//! records each phase measured (`waiting`, `request_head`, `request_body`, `handler`,
//! `response_write`; see `docs/http-trace.md`). `http.server.active_requests` counts the
//! exchanges in flight on server connections, from the live records (the method of every
//! exchange is not kept, so it carries no `http.request.method`).
//!
//! The `conntrack.*` metrics are the complete set, by category and role. The
//! OpenTelemetry-named ones are views of the same data under the names the semantic
//! conventions give them: `http.client.*` for dialed connections that carried at least one
//! exchange (an HTTP request, see [`Connection::begin_exchange`](crate::Connection::begin_exchange)),
//! `kestrel.*` for accepted connections (any protocol; Kestrel is the convention's name for a
//! server's connections), with `server.address`/`server.port` the dialed target or the
//! listening address. [`NAMES`] lists all of them; it is what [`describe`] registers and what
//! the table in `docs/observability.md` is checked against.
//!
//! ¹ only when it applies: `tls.protocol.version` once a TLS handshake finished,
//! `error.type` when the connection closed with an I/O error or the step failed.
//! `conntrack.phase` is `accept`, `dial`, `tls_handshake` or `close`. `error.type` is the
//! [`io::ErrorKind`] in snake case (`connection_refused`, `timed_out`, ...), or
//! `os_error_<errno>` for an OS error without a stable kind (EMFILE is `os_error_24`). The
//! OpenTelemetry-named metrics (`dns.lookup.duration`, `http.client.*`, `kestrel.*`) use the
//! conventions' well-known values where they have one: `timeout` for a timed-out step and
//! `host_not_found` for a DNS name with no address.
//! A close the tracker decided (idle timeout, maximum age, abort, shutdown deadline) has
//! [`CloseReason::error_type`](crate::CloseReason::error_type) as its `error.type`; a
//! connection refused by a limit counts in `conntrack.errors` (phase `accept`,
//! `max_concurrent_connections_exceeded`).
//!
//! Call [`describe`] once after installing a recorder to give every metric its help text and
//! unit. With metrics-exporter-prometheus and
//! `PrometheusBuilder::with_recommended_naming(true)` the names become
//! `conntrack_active_connections`, `conntrack_connections_opened_total`,
//! `conntrack_io_bytes_total`, `conntrack_connection_duration_seconds_bucket`, ... (dots become
//! underscores, counters get `_total`, units a suffix; label keys such as `error.type` become
//! `error_type`); the exporter renders histograms as summaries unless it is given buckets,
//! for which [`PHASE_BUCKETS`] and [`CONNECTION_BUCKETS`] are ready.
//!
//! Import this module under another name (`use conntrack_core::metrics as conntrack_metrics;`)
//! or import its items only: a plain `use conntrack_core::metrics;` shadows the `metrics` crate
//! in that file, and the service's own `metrics::counter!(..)` then fails with a misleading
//! "could not find `counter` in `metrics`".
//!
//! ```
//! use conntrack_core::metrics::{describe, MetricsCollector, MetricsHook};
//! use conntrack_core::Tracker;
//!
//! // After installing a recorder (e.g. metrics-exporter-prometheus):
//! describe();
//! let tracker = Tracker::builder().hook(MetricsHook::new()).build();
//! let collector = MetricsCollector::new(&tracker);
//! // ... before each scrape, or from a periodic task:
//! collector.collect();
//! ```
//!
//! With several trackers in one process, tell them apart with [`MetricsHook::label`] and
//! [`MetricsCollector::label`]: two collectors writing the same counter would overwrite each
//! other.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, Histogram, Label, Unit,
};

use crate::emit::otel::{
    addr_parts, error_type, http_version, network_type, otel_error_type, split_target, transport,
};
use crate::hooks::hook::Hook;
use crate::record::event::{
    AcceptEvent, CloseEvent, ConnectDoneEvent, DialEvent, DnsDoneEvent, ServerExchangeEvent,
    TlsHandshakeDoneEvent, TlsHandshakeStartEvent,
};
use crate::record::info::{ConnState, ConnectionInfo, Role};
use crate::track::tracker::Tracker;

/// `conntrack.active_connections`: connections open now (gauge).
pub const ACTIVE_CONNECTIONS: &str = "conntrack.active_connections";
/// `conntrack.connections.opened`: connections registered (counter).
pub const CONNECTIONS_OPENED: &str = "conntrack.connections.opened";
/// `conntrack.connections.closed`: connections gone (counter).
pub const CONNECTIONS_CLOSED: &str = "conntrack.connections.closed";
/// `conntrack.connections.failed`: accepts and dials that made no connection (counter).
pub const CONNECTIONS_FAILED: &str = "conntrack.connections.failed";
/// `conntrack.tls_handshakes.failed`: TLS handshakes that failed (counter).
pub const TLS_HANDSHAKES_FAILED: &str = "conntrack.tls_handshakes.failed";
/// `conntrack.io`: bytes read (`network.io.direction="receive"`) and written (`"transmit"`)
/// by open and closed connections (counter, bytes).
pub const IO: &str = "conntrack.io";
/// `conntrack.hook.panics`: panics caught in hooks (counter).
pub const HOOK_PANICS: &str = "conntrack.hook.panics";
/// `http.server.request.duration`: served HTTP requests, from the request's first byte to
/// the response's last byte flushed (histogram, seconds).
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
/// `http.server.active_requests`: server exchanges in flight (gauge).
pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http.server.active_requests";
/// `conntrack.server.phase.duration`: each phase of served requests (histogram, seconds).
pub const SERVER_PHASE_DURATION: &str = "conntrack.server.phase.duration";
/// `conntrack.connection.duration`: how long connections lived (histogram, seconds).
pub const CONNECTION_DURATION: &str = "conntrack.connection.duration";
/// `conntrack.tls_handshake.duration`: TLS handshakes (histogram, seconds).
pub const TLS_HANDSHAKE_DURATION: &str = "conntrack.tls_handshake.duration";
/// `dns.lookup.duration`: name resolutions made by dialers (histogram, seconds).
pub const DNS_LOOKUP_DURATION: &str = "dns.lookup.duration";
/// `conntrack.connect.duration`: each connect attempt (histogram, seconds).
pub const CONNECT_DURATION: &str = "conntrack.connect.duration";
/// `conntrack.errors`: failures by phase and `error.type` (counter).
pub const ERRORS: &str = "conntrack.errors";

/// `conntrack.tcp.rtt`: the kernel's smoothed round-trip time of connections at close
/// (histogram, seconds; Linux only).
pub const TCP_RTT: &str = "conntrack.tcp.rtt";
/// `http.client.open_connections`: dialed connections that carried an exchange, by
/// `http.connection.state` (gauge; OpenTelemetry HTTP metrics).
pub const HTTP_CLIENT_OPEN_CONNECTIONS: &str = "http.client.open_connections";
/// `http.client.connection.duration`: how long those connections lived (histogram, seconds).
pub const HTTP_CLIENT_CONNECTION_DURATION: &str = "http.client.connection.duration";
/// `kestrel.active_connections`: accepted connections open now (gauge; OpenTelemetry Kestrel
/// metrics).
pub const KESTREL_ACTIVE_CONNECTIONS: &str = "kestrel.active_connections";
/// `kestrel.connection.duration`: how long accepted connections lived (histogram, seconds).
pub const KESTREL_CONNECTION_DURATION: &str = "kestrel.connection.duration";
/// `kestrel.active_tls_handshakes`: TLS handshakes in progress on accepted connections (gauge).
pub const KESTREL_ACTIVE_TLS_HANDSHAKES: &str = "kestrel.active_tls_handshakes";
/// `kestrel.tls_handshake.duration`: TLS handshakes on accepted connections (histogram,
/// seconds).
pub const KESTREL_TLS_HANDSHAKE_DURATION: &str = "kestrel.tls_handshake.duration";
/// `kestrel.rejected_connections`: connections a listener refused at its connection limit or
/// during a shutdown (counter; OpenTelemetry Kestrel metrics).
pub const KESTREL_REJECTED_CONNECTIONS: &str = "kestrel.rejected_connections";

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A value set to the current count (OpenTelemetry: an up-down counter).
    Gauge,
    /// A monotonic total.
    Counter,
    /// A distribution of recorded values.
    Histogram,
}

/// One metric this module emits, with what the docs say of it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct MetricName {
    /// The name given to the `metrics` facade.
    pub name: &'static str,
    /// The instrument.
    pub kind: Kind,
    /// `Unit::Count`, `Unit::Bytes` or `Unit::Seconds`.
    pub unit: Unit,
    /// The help text.
    pub help: &'static str,
    /// Every label key it may carry.
    pub labels: &'static [&'static str],
    /// The convention the name follows.
    pub convention: &'static str,
}

const fn m(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    help: &'static str,
    labels: &'static [&'static str],
    convention: &'static str,
) -> MetricName {
    MetricName {
        name,
        kind,
        unit,
        help,
        labels,
        convention,
    }
}

const CR: &[&str] = &["category", "role"];
const KESTREL: &[&str] = &[
    "category",
    "network.transport",
    "network.type",
    "server.address",
    "server.port",
];
const OWN: &str = "conntrack (modelled on Kestrel's connection metrics)";

/// Every metric this module emits: the one list that [`describe`] registers and the table in
/// `docs/observability.md` follows (a test checks that each name and label is there).
pub const NAMES: &[MetricName] = &[
    m(
        ACTIVE_CONNECTIONS,
        Kind::Gauge,
        Unit::Count,
        "Connections open now.",
        CR,
        OWN,
    ),
    m(
        CONNECTIONS_OPENED,
        Kind::Counter,
        Unit::Count,
        "Connections opened.",
        CR,
        OWN,
    ),
    m(
        CONNECTIONS_CLOSED,
        Kind::Counter,
        Unit::Count,
        "Connections closed.",
        CR,
        OWN,
    ),
    m(
        CONNECTIONS_FAILED,
        Kind::Counter,
        Unit::Count,
        "Accepts and dials that failed to make a connection.",
        CR,
        OWN,
    ),
    m(
        TLS_HANDSHAKES_FAILED,
        Kind::Counter,
        Unit::Count,
        "TLS handshakes that failed.",
        CR,
        OWN,
    ),
    m(
        IO,
        Kind::Counter,
        Unit::Bytes,
        "Bytes read and written on tracked connections.",
        &["category", "role", "network.io.direction"],
        "conntrack; `network.io.direction` as in OpenTelemetry's `system.network.io`",
    ),
    m(
        HOOK_PANICS,
        Kind::Counter,
        Unit::Count,
        "Panics caught in conntrack hooks.",
        &[],
        OWN,
    ),
    m(
        CONNECTION_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "How long connections lived.",
        &[
            "category",
            "role",
            "network.transport",
            "tls.protocol.version",
            "error.type",
        ],
        OWN,
    ),
    m(
        TLS_HANDSHAKE_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "TLS handshake duration.",
        &["category", "role", "tls.protocol.version", "error.type"],
        OWN,
    ),
    m(
        DNS_LOOKUP_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "DNS lookup duration.",
        &["category", "error.type", "dns.question.name"],
        "OpenTelemetry DNS metrics (`dns.question.name` opt-in)",
    ),
    m(
        CONNECT_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Connect attempt duration.",
        &["category", "network.transport", "error.type"],
        OWN,
    ),
    m(
        ERRORS,
        Kind::Counter,
        Unit::Count,
        "Failures by phase and error type.",
        &["category", "role", "conntrack.phase", "error.type"],
        OWN,
    ),
    m(
        TCP_RTT,
        Kind::Histogram,
        Unit::Seconds,
        "Smoothed TCP round-trip time of connections at close (Linux TCP_INFO).",
        CR,
        "conntrack (the kernel's `tcpi_rtt`)",
    ),
    m(
        HTTP_CLIENT_OPEN_CONNECTIONS,
        Kind::Gauge,
        Unit::Count,
        "Outbound HTTP connections open now, by state.",
        &[
            "category",
            "http.connection.state",
            "server.address",
            "server.port",
            "network.protocol.version",
        ],
        "OpenTelemetry HTTP client metrics",
    ),
    m(
        HTTP_CLIENT_CONNECTION_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "How long outbound HTTP connections lived.",
        &[
            "category",
            "server.address",
            "server.port",
            "network.protocol.version",
        ],
        "OpenTelemetry HTTP client metrics",
    ),
    m(
        KESTREL_ACTIVE_CONNECTIONS,
        Kind::Gauge,
        Unit::Count,
        "Accepted connections open now.",
        KESTREL,
        "OpenTelemetry Kestrel metrics",
    ),
    m(
        KESTREL_CONNECTION_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "How long accepted connections lived.",
        &[
            "category",
            "network.transport",
            "network.type",
            "server.address",
            "server.port",
            "network.protocol.name",
            "network.protocol.version",
            "tls.protocol.version",
            "error.type",
        ],
        "OpenTelemetry Kestrel metrics",
    ),
    m(
        KESTREL_REJECTED_CONNECTIONS,
        Kind::Counter,
        Unit::Count,
        "Connections refused at a connection limit or during a shutdown.",
        &["category"],
        "OpenTelemetry Kestrel metrics",
    ),
    m(
        KESTREL_ACTIVE_TLS_HANDSHAKES,
        Kind::Gauge,
        Unit::Count,
        "TLS handshakes in progress on accepted connections.",
        KESTREL,
        "OpenTelemetry Kestrel metrics",
    ),
    m(
        KESTREL_TLS_HANDSHAKE_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "TLS handshake duration on accepted connections.",
        &[
            "category",
            "network.transport",
            "network.type",
            "server.address",
            "server.port",
            "tls.protocol.version",
            "error.type",
        ],
        "OpenTelemetry Kestrel metrics",
    ),
    m(
        HTTP_SERVER_REQUEST_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Duration of HTTP server requests.",
        &[
            "category",
            "http.request.method",
            "http.response.status_code",
            "http.route",
            "network.protocol.version",
            "error.type",
        ],
        "OpenTelemetry HTTP server metrics",
    ),
    m(
        HTTP_SERVER_ACTIVE_REQUESTS,
        Kind::Gauge,
        Unit::Count,
        "HTTP server requests in flight.",
        &["category"],
        "OpenTelemetry HTTP server metrics",
    ),
    m(
        SERVER_PHASE_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Each phase of HTTP server requests (waiting, request_head, request_body, handler, response_write).",
        &["category", "conntrack.server.phase", "network.protocol.version"],
        "conntrack (server request phases)",
    ),
];

/// Histogram buckets (seconds) for the short phases: DNS, connect, TLS handshake.
pub const PHASE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets (seconds) for whole connection lifetimes: 1 ms to 1 hour.
pub const CONNECTION_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// Registers help text and units for every metric in [`NAMES`] with the installed recorder.
/// Call once, after installing it.
pub fn describe() {
    for n in NAMES {
        match n.kind {
            Kind::Gauge => describe_gauge!(n.name, n.unit, n.help),
            Kind::Counter => describe_counter!(n.name, n.unit, n.help),
            Kind::Histogram => describe_histogram!(n.name, n.unit, n.help),
        }
    }
}

fn role_label(role: Role) -> Label {
    Label::from_static_parts("role", role.as_str())
}

fn category_label(category: &str) -> Label {
    // Categories are few and usually static; the copy is made only while recording.
    Label::new("category", category.to_owned())
}

fn error_label(e: &io::Error) -> Label {
    Label::new("error.type", error_type(e))
}

fn otel_error_label(e: &io::Error) -> Label {
    Label::new("error.type", otel_error_type(e, false))
}

/// The labels of the `kestrel.*` metrics for an accepted connection: its category, transport
/// and network type, and the listening address (its local address) as `server.*`.
fn kestrel_labels(c: &ConnectionInfo) -> Vec<Label> {
    let mut l = vec![category_label(&c.category)];
    l.push(Label::from_static_parts(
        "network.transport",
        c.local_addr.transport(),
    ));
    if let Some(t) = network_type(&c.local_addr) {
        l.push(Label::from_static_parts("network.type", t));
    }
    let (address, port) = addr_parts(&c.local_addr);
    if let Some(a) = address {
        l.push(Label::new("server.address", a));
    }
    if let Some(p) = port {
        l.push(Label::new("server.port", p.to_string()));
    }
    l
}

/// The labels of the `http.client.*` metrics for a dialed connection: its category, the
/// dialed host and port (the remote address when no target was given), and the HTTP version
/// its ALPN named.
fn http_client_labels(c: &ConnectionInfo) -> Vec<Label> {
    let mut l = vec![category_label(&c.category)];
    let (address, port) = match c.target.as_deref().map(split_target) {
        Some((h, p)) => (h.map(str::to_owned), p),
        None => addr_parts(&c.remote_addr),
    };
    if let Some(a) = address {
        l.push(Label::new("server.address", a));
    }
    if let Some(p) = port {
        l.push(Label::new("server.port", p.to_string()));
    }
    if let Some(v) = http_version(c.tls.as_ref().and_then(|t| t.alpn.as_deref())) {
        l.push(Label::from_static_parts("network.protocol.version", v));
    }
    l
}

fn tls_version_label(v: &str) -> Label {
    match v {
        "1.3" => Label::from_static_parts("tls.protocol.version", "1.3"),
        "1.2" => Label::from_static_parts("tls.protocol.version", "1.2"),
        other => Label::new("tls.protocol.version", other.to_owned()),
    }
}

/// A [`Hook`] that records durations and errors to the `metrics` facade.
///
/// See the [module docs](self) for the metrics and labels. Costs nothing on reads and writes
/// (it does not ask for per-I/O events). The `conntrack.connection.duration` histogram of each
/// (category, role, transport, TLS version) is looked up in the recorder once and its handle
/// kept (shared by clones of the hook), so a close that ends without an error records with no
/// label set built and no recorder lookup. The kept handles belong to the recorder that made
/// them: when another recorder becomes the current one (a global one installed after the
/// first close, or a thread-local one), they are dropped and looked up again. Recorders are
/// told apart by address, so a test that drops a thread-local recorder and makes another in
/// its place should make a new hook with it.
#[derive(Debug, Clone, Default)]
pub struct MetricsHook {
    extra: Arc<[Label]>,
    dns_question_name: bool,
    /// Whether it records the server request metrics (and so asks for server exchanges).
    server_requests: bool,
    /// Kept histogram handles (shared by clones of the hook).
    kept: Arc<Kept>,
}

/// What tells `kestrel.connection.duration` series of one category apart, when no error
/// label is involved.
struct KestrelKey {
    local: crate::record::info::Addr,
    http: Option<&'static str>,
    tls: Option<&'static str>,
}

/// What tells `http.client.connection.duration` series of one category apart.
struct HttpClientKey {
    target: Option<Arc<str>>,
    remote: crate::record::info::Addr,
    http: Option<&'static str>,
}

/// The histogram handles a close records in, kept by category for the recorder they came
/// from: one read lock and one category lookup at a close find all of them.
#[derive(Default)]
struct Kept(RwLock<(usize, KeptByCategory)>);

type KeptByCategory = HashMap<Arc<str>, CategoryHandles, FnvBuild>;

/// One category's kept handles, each with the labels it was made with (besides the category).
#[derive(Default)]
struct CategoryHandles {
    /// `conntrack.connection.duration`.
    closes: Vec<CloseHistogram>,
    /// `kestrel.connection.duration`.
    kestrel: Vec<(KestrelKey, Histogram)>,
    /// `http.client.connection.duration`.
    http_client: Vec<(HttpClientKey, Histogram)>,
    /// `conntrack.tcp.rtt`, by role.
    rtt: Vec<(Role, Histogram)>,
    /// `http.server.request.duration` of exchanges with no route, by what else labels it.
    server_requests: Vec<(ServerKey, Histogram)>,
    /// `http.server.request.duration` by route (a template: few), then by what else labels
    /// it.
    server_routes: HashMap<Box<str>, Vec<(ServerKey, Histogram)>, FnvBuild>,
    /// `conntrack.server.phase.duration`, by protocol version, one handle per phase (in the
    /// order of [`SERVER_PHASES`]), made when the phase is first recorded.
    server_phases: Vec<(&'static str, [Option<Histogram>; 5])>,
}

/// What tells `http.server.request.duration` series of one category and route apart.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ServerKey {
    method: &'static str,
    version: &'static str,
    status: Option<u16>,
    completed: bool,
}

/// The phases of `conntrack.server.phase.duration`, in order.
const SERVER_PHASES: [&str; 5] = [
    "waiting",
    "request_head",
    "request_body",
    "handler",
    "response_write",
];

/// FNV-1a for the kept-handle maps: their keys are the program's own category names (not
/// input from the network), short, and looked up at every close, where SipHash's resistance
/// to chosen keys buys nothing and costs most of the lookup.
#[derive(Default, Clone, Copy)]
struct FnvBuild;

struct Fnv(u64);

impl std::hash::BuildHasher for FnvBuild {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.0.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Kept")
            .field("categories", &g.1.len())
            .finish()
    }
}

impl Kept {
    /// Keeps what `add` puts in the handles of `category` (after checking that it is not
    /// there yet); handles of another recorder are dropped first.
    fn keep(&self, recorder: usize, category: &Arc<str>, add: impl FnOnce(&mut CategoryHandles)) {
        let mut g = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if g.0 != recorder {
            g.1.clear();
            g.0 = recorder;
        }
        add(g.1.entry(Arc::clone(category)).or_default());
    }
}

/// `"1.2"` and `"1.3"` as static strings (the TLS versions a kept handle can be keyed by).
fn static_tls(v: &str) -> Option<&'static str> {
    match v {
        "1.3" => Some("1.3"),
        "1.2" => Some("1.2"),
        _ => None,
    }
}

/// One kept `conntrack.connection.duration` handle and the labels it was made with (besides
/// the category, its key).
struct CloseHistogram {
    role: Role,
    transport: Option<&'static str>,
    tls_version: Option<Box<str>>,
    histogram: Histogram,
}

/// Tells recorders apart: the address of the current one.
fn recorder_id() -> usize {
    ::metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize)
}

impl MetricsHook {
    /// A hook with no extra labels.
    #[must_use]
    pub fn new() -> Self {
        MetricsHook::default()
    }

    /// Adds a label to everything this hook records (e.g. to tell trackers apart).
    #[must_use]
    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        let mut v = self.extra.to_vec();
        v.push(Label::new(key, value.into()));
        self.extra = v.into();
        self
    }

    /// Labels `dns.lookup.duration` with `dns.question.name`, the name looked up. Off by
    /// default: the convention requires it, but its cardinality is that of the names a
    /// program dials, which a crawler or a multi-tenant proxy does not bound (each name
    /// becomes a set of histogram series kept for the life of the recorder). Turn it on when
    /// the names dialed are a known, small set.
    #[must_use]
    pub fn dns_question_name(mut self, on: bool) -> Self {
        self.dns_question_name = on;
        self
    }

    /// Records the server request metrics (`http.server.request.duration`,
    /// `conntrack.server.phase.duration`) from `ExchangeLayer`'s exchanges. Off by default:
    /// turning it on makes the hook ask for server exchanges
    /// ([`wants_server_exchanges`](Hook::wants_server_exchanges)), so every served request is
    /// timed phase by phase and recorded, a few microseconds a request (`docs/benchmarks.md`),
    /// where the connection metrics cost nothing per request. Pay for it where you read it.
    #[must_use]
    pub fn server_requests(mut self, on: bool) -> Self {
        self.server_requests = on;
        self
    }

    /// `http.server.request.duration` of a server exchange whose handle is not kept yet:
    /// made with its labels, recorded, and kept.
    #[cold]
    fn server_request_slow(
        &self,
        ev: &ServerExchangeEvent<'_>,
        key: ServerKey,
        duration: f64,
        recorder: usize,
    ) {
        let mut l = vec![
            category_label(ev.category),
            Label::from_static_parts("http.request.method", key.method),
            Label::from_static_parts("network.protocol.version", key.version),
        ];
        if let Some(s) = ev.status {
            l.push(Label::new("http.response.status_code", s.to_string()));
        }
        if let Some(r) = ev.route {
            l.push(Label::new("http.route", r.to_owned()));
        }
        if !ev.completed {
            l.push(Label::from_static_parts("error.type", "aborted"));
        } else if let Some(s) = ev.status.filter(|s| *s >= 500) {
            l.push(Label::new("error.type", s.to_string()));
        }
        let histogram = ::metrics::histogram!(HTTP_SERVER_REQUEST_DURATION, self.labels(l));
        histogram.record(duration);
        self.kept.keep(recorder, &Arc::from(ev.category), |h| {
            let v = match ev.route {
                Some(r) => h.server_routes.entry(Box::from(r)).or_default(),
                None => &mut h.server_requests,
            };
            if !v.iter().any(|(k, _)| *k == key) {
                v.push((key, histogram));
            }
        });
    }

    fn labels(&self, base: impl IntoIterator<Item = Label>) -> Vec<Label> {
        let mut v: Vec<Label> = base.into_iter().collect();
        v.extend(self.extra.iter().cloned());
        v
    }

    fn error(&self, category: &str, role: Role, phase: &'static str, e: &io::Error) {
        counter!(
            ERRORS,
            self.labels([
                category_label(category),
                role_label(role),
                Label::from_static_parts("conntrack.phase", phase),
                error_label(e),
            ])
        )
        .increment(1);
    }
}

impl MetricsHook {
    /// The OpenTelemetry-named duration of a close that no kept handle took:
    /// `kestrel.connection.duration` for an accepted connection, `http.client.connection.duration`
    /// for a dialed one that carried exchanges. The handle is kept unless an error label (or
    /// an unusual TLS version) is involved.
    fn otel_close_slow(
        &self,
        c: &ConnectionInfo,
        error: Option<&io::Error>,
        reason: Option<&'static str>,
        recorder: usize,
        value: f64,
        http: Option<&'static str>,
    ) {
        match c.role {
            Role::Server => {
                let mut l = kestrel_labels(c);
                if let Some(v) = http {
                    l.push(Label::from_static_parts("network.protocol.name", "http"));
                    l.push(Label::from_static_parts("network.protocol.version", v));
                }
                if let Some(tls) = &c.tls {
                    l.push(tls_version_label(&tls.protocol_version));
                }
                let tls = c.tls.as_ref().map(|t| static_tls(&t.protocol_version));
                match (error.is_none() && reason.is_none(), tls) {
                    // The common case: a handle kept per listening address and versions.
                    (true, None | Some(Some(_))) => {
                        let histogram =
                            ::metrics::histogram!(KESTREL_CONNECTION_DURATION, self.labels(l));
                        histogram.record(value);
                        let tls = tls.flatten();
                        self.kept.keep(recorder, &c.category, |h| {
                            if !h
                                .kestrel
                                .iter()
                                .any(|(k, _)| k.is(&c.local_addr, http, tls))
                            {
                                let key = KestrelKey {
                                    local: c.local_addr.clone(),
                                    http,
                                    tls,
                                };
                                h.kestrel.push((key, histogram));
                            }
                        });
                    }
                    _ => {
                        // The tracker's reason wins over the I/O error, as on
                        // `conntrack.connection.duration`.
                        match (reason, error) {
                            (Some(t), _) => l.push(Label::from_static_parts("error.type", t)),
                            (None, Some(e)) => l.push(otel_error_label(e)),
                            (None, None) => {}
                        }
                        ::metrics::histogram!(KESTREL_CONNECTION_DURATION, self.labels(l))
                            .record(value);
                    }
                }
            }
            Role::Client if c.requests > 0 => {
                let histogram = ::metrics::histogram!(
                    HTTP_CLIENT_CONNECTION_DURATION,
                    self.labels(http_client_labels(c))
                );
                histogram.record(value);
                self.kept.keep(recorder, &c.category, |h| {
                    if !h.http_client.iter().any(|(k, _)| k.is(c, http)) {
                        let key = HttpClientKey {
                            target: c.target.clone(),
                            remote: c.remote_addr.clone(),
                            http,
                        };
                        h.http_client.push((key, histogram));
                    }
                });
            }
            Role::Client => {}
        }
    }

    /// `conntrack.connection.duration` of a close that no kept handle took: with the
    /// `error.type` of an error or of the tracker's reason (looked up each time, the rare
    /// case), or without one (the handle is then kept).
    fn close_slow(
        &self,
        ev: &CloseEvent<'_>,
        recorder: usize,
        value: f64,
        transport: Option<&'static str>,
        tls_version: Option<&str>,
    ) {
        let c = ev.connection;
        let mut l = vec![category_label(&c.category), role_label(c.role)];
        if let Some(t) = ev.reason.error_type() {
            // Closed by the tracker (policy, abort, shutdown deadline, a failed TLS handshake):
            // the reason is the `error.type`, Kestrel's value where it has one, and wins over
            // the I/O error it caused (which `conntrack.errors` still counts).
            if let Some(t) = transport {
                l.push(Label::from_static_parts("network.transport", t));
            }
            if let Some(v) = tls_version {
                l.push(tls_version_label(v));
            }
            l.push(Label::from_static_parts("error.type", t));
            if let Some(e) = ev.error {
                self.error(&c.category, c.role, "close", e);
            }
            ::metrics::histogram!(CONNECTION_DURATION, self.labels(l)).record(value);
            return;
        }
        if let Some(e) = ev.error {
            // Errors are the rare case: labels built and looked up each time.
            if let Some(t) = transport {
                l.push(Label::from_static_parts("network.transport", t));
            }
            if let Some(v) = tls_version {
                l.push(tls_version_label(v));
            }
            l.push(error_label(e));
            self.error(&c.category, c.role, "close", e);
            ::metrics::histogram!(CONNECTION_DURATION, self.labels(l)).record(value);
            return;
        }
        if let Some(t) = transport {
            l.push(Label::from_static_parts("network.transport", t));
        }
        if let Some(v) = tls_version {
            l.push(tls_version_label(v));
        }
        let histogram = ::metrics::histogram!(CONNECTION_DURATION, self.labels(l));
        histogram.record(value);
        self.kept.keep(recorder, &c.category, |h| {
            if !h
                .closes
                .iter()
                .any(|k| k.is(c.role, transport, tls_version))
            {
                h.closes.push(CloseHistogram {
                    role: c.role,
                    transport,
                    tls_version: tls_version.map(Box::from),
                    histogram,
                });
            }
        });
    }
}

impl KestrelKey {
    fn is(
        &self,
        local: &crate::record::info::Addr,
        http: Option<&'static str>,
        tls: Option<&'static str>,
    ) -> bool {
        self.local == *local && self.http == http && self.tls == tls
    }
}

impl HttpClientKey {
    fn is(&self, c: &ConnectionInfo, http: Option<&'static str>) -> bool {
        self.target == c.target && self.remote == c.remote_addr && self.http == http
    }
}

impl CloseHistogram {
    fn is(&self, role: Role, transport: Option<&'static str>, tls_version: Option<&str>) -> bool {
        self.role == role
            && self.transport == transport
            && self.tls_version.as_deref() == tls_version
    }
}

/// OpenTelemetry's `http.request.method`: a known method, else `_OTHER`.
fn otel_method(m: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.iter().find(|k| **k == m).copied().unwrap_or("_OTHER")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Hook for MetricsHook {
    // Its metrics come from connection events and served exchanges: no client request events.
    fn wants_request_events(&self) -> bool {
        false
    }

    fn wants_server_exchanges(&self) -> bool {
        self.server_requests
    }

    fn on_server_exchange(&self, ev: &ServerExchangeEvent<'_>) {
        let version = match ev.version {
            "1.0" => "1.0",
            "2" => "2",
            "3" => "3",
            _ => "1.1",
        };
        let key = ServerKey {
            method: otel_method(ev.method),
            version,
            status: ev.status,
            completed: ev.completed,
        };
        let duration = secs(ev.total.saturating_sub(ev.waiting.unwrap_or_default()));
        let phases = [
            ev.waiting,
            Some(ev.request_head),
            ev.request_body,
            Some(ev.handler),
            Some(ev.response_write),
        ];
        let recorder = recorder_id();
        // The common case: one read lock and one category lookup find the handles.
        let (mut request_done, mut phase_done) = (false, [false; 5]);
        {
            let g = self.kept.0.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = (g.0 == recorder).then(|| g.1.get(ev.category)).flatten() {
                let by_route = match ev.route {
                    Some(r) => h.server_routes.get(r),
                    None => Some(&h.server_requests),
                };
                let kept = by_route.and_then(|v| v.iter().find(|(k, _)| *k == key));
                if let Some((_, histogram)) = kept {
                    histogram.record(duration);
                    request_done = true;
                }
                if let Some((_, handles)) = h.server_phases.iter().find(|(v, _)| *v == version) {
                    for (i, (d, handle)) in phases.iter().zip(handles).enumerate() {
                        if let (Some(d), Some(handle)) = (d, handle) {
                            handle.record(secs(*d));
                            phase_done[i] = true;
                        }
                    }
                }
            }
        }
        if !request_done {
            self.server_request_slow(ev, key, duration, recorder);
        }
        for (i, d) in phases.iter().enumerate() {
            if let (Some(d), false) = (d, phase_done[i]) {
                let l = [
                    category_label(ev.category),
                    Label::from_static_parts("conntrack.server.phase", SERVER_PHASES[i]),
                    Label::from_static_parts("network.protocol.version", version),
                ];
                let histogram = ::metrics::histogram!(SERVER_PHASE_DURATION, self.labels(l));
                histogram.record(secs(*d));
                self.kept.keep(recorder, &Arc::from(ev.category), |h| {
                    let at = match h.server_phases.iter().position(|(v, _)| *v == version) {
                        Some(at) => at,
                        None => {
                            h.server_phases.push((version, Default::default()));
                            h.server_phases.len() - 1
                        }
                    };
                    h.server_phases[at].1[i].get_or_insert(histogram);
                });
            }
        }
    }

    fn on_accept(&self, ev: &AcceptEvent<'_>) {
        if ev.rejected {
            // A refused connection (limit or shutdown): `conntrack.errors` with phase
            // `accept` and Kestrel's `error.type` for it.
            counter!(
                ERRORS,
                self.labels([
                    category_label(ev.category),
                    role_label(Role::Server),
                    Label::from_static_parts("conntrack.phase", "accept"),
                    Label::from_static_parts(
                        "error.type",
                        crate::CloseReason::Rejected
                            .error_type()
                            .unwrap_or("rejected"),
                    ),
                ])
            )
            .increment(1);
            return;
        }
        if let Some(e) = ev.error {
            self.error(ev.category, Role::Server, "accept", e);
        }
    }

    fn on_dial(&self, ev: &DialEvent<'_>) {
        if let Some(e) = ev.error {
            self.error(ev.category, Role::Client, "dial", e);
        }
    }

    fn on_dns_done(&self, ev: &DnsDoneEvent<'_>) {
        let mut l = vec![category_label(ev.category)];
        if let Some(e) = ev.error {
            l.push(Label::new("error.type", otel_error_type(e, true)));
        }
        if self.dns_question_name {
            l.push(Label::new("dns.question.name", ev.host.to_owned()));
        }
        ::metrics::histogram!(DNS_LOOKUP_DURATION, self.labels(l)).record(secs(ev.duration));
    }

    fn on_connect_done(&self, ev: &ConnectDoneEvent<'_>) {
        let mut l = vec![category_label(ev.category)];
        if let Some(t) = transport(ev.addr) {
            l.push(Label::from_static_parts("network.transport", t));
        }
        if let Some(e) = ev.error {
            l.push(error_label(e));
        }
        ::metrics::histogram!(CONNECT_DURATION, self.labels(l)).record(secs(ev.duration));
    }

    fn on_tls_handshake_start(&self, ev: &TlsHandshakeStartEvent<'_>) {
        let c = ev.connection;
        if c.role == Role::Server {
            ::metrics::gauge!(
                KESTREL_ACTIVE_TLS_HANDSHAKES,
                self.labels(kestrel_labels(c))
            )
            .increment(1.0);
        }
    }

    fn on_tls_handshake_done(&self, ev: &TlsHandshakeDoneEvent<'_>) {
        let c = ev.connection;
        if c.role == Role::Server {
            let l = self.labels(kestrel_labels(c));
            ::metrics::gauge!(KESTREL_ACTIVE_TLS_HANDSHAKES, l.clone()).decrement(1.0);
            let mut l = l;
            if let Some(tls) = ev.tls {
                l.push(tls_version_label(&tls.protocol_version));
            }
            if let Some(e) = ev.error {
                l.push(otel_error_label(e));
            }
            ::metrics::histogram!(KESTREL_TLS_HANDSHAKE_DURATION, l).record(secs(ev.duration));
        }
        let mut l = vec![category_label(&c.category), role_label(c.role)];
        if let Some(tls) = ev.tls {
            l.push(tls_version_label(&tls.protocol_version));
        }
        if let Some(e) = ev.error {
            l.push(error_label(e));
            self.error(&c.category, c.role, "tls_handshake", e);
        }
        ::metrics::histogram!(TLS_HANDSHAKE_DURATION, self.labels(l)).record(secs(ev.duration));
    }

    fn on_close(&self, ev: &CloseEvent<'_>) {
        let c = ev.connection;
        let recorder = recorder_id();
        let value = secs(c.established_for);
        let transport = transport(&c.remote_addr).or_else(|| transport(&c.local_addr));
        let tls_version = c.tls.as_ref().map(|t| t.protocol_version.as_str());
        let http = http_version(c.tls.as_ref().and_then(|t| t.alpn.as_deref()));
        // What a kept handle can take: the OpenTelemetry duration (Kestrel's unless an error or
        // an unusual TLS version labels it; the HTTP client's for a dialed connection that
        // carried exchanges), ours unless the close has an error or a reason, and the RTT.
        let kestrel_tls = c.tls.as_ref().map(|t| static_tls(&t.protocol_version));
        let plain = ev.error.is_none() && ev.reason.error_type().is_none();
        let otel_kept = match c.role {
            Role::Server => plain && !matches!(kestrel_tls, Some(None)),
            Role::Client => c.requests > 0,
        };
        let (mut otel_done, mut close_done, mut rtt_done) = (false, false, c.tcp.is_none());
        {
            // The common case: one read lock and one category lookup find every handle.
            let g = self.kept.0.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = (g.0 == recorder).then(|| g.1.get(&*c.category)).flatten() {
                if otel_kept {
                    let kept = match c.role {
                        Role::Server => {
                            let tls = kestrel_tls.flatten();
                            h.kestrel
                                .iter()
                                .find(|(k, _)| k.is(&c.local_addr, http, tls))
                                .map(|(_, h)| h)
                        }
                        Role::Client => h
                            .http_client
                            .iter()
                            .find(|(k, _)| k.is(c, http))
                            .map(|(_, h)| h),
                    };
                    if let Some(histogram) = kept {
                        histogram.record(value);
                        otel_done = true;
                    }
                }
                if plain {
                    if let Some(k) = h
                        .closes
                        .iter()
                        .find(|k| k.is(c.role, transport, tls_version))
                    {
                        k.histogram.record(value);
                        close_done = true;
                    }
                }
                if let Some(tcp) = &c.tcp {
                    if let Some((_, histogram)) = h.rtt.iter().find(|(r, _)| *r == c.role) {
                        histogram.record(secs(tcp.rtt));
                        rtt_done = true;
                    }
                }
            }
        }
        if !otel_done {
            self.otel_close_slow(c, ev.error, ev.reason.error_type(), recorder, value, http);
        }
        if !rtt_done {
            if let Some(tcp) = &c.tcp {
                let histogram = ::metrics::histogram!(
                    TCP_RTT,
                    self.labels([category_label(&c.category), role_label(c.role)])
                );
                histogram.record(secs(tcp.rtt));
                self.kept.keep(recorder, &c.category, |h| {
                    if !h.rtt.iter().any(|(r, _)| *r == c.role) {
                        h.rtt.push((c.role, histogram));
                    }
                });
            }
        }
        if !close_done {
            self.close_slow(ev, recorder, value, transport, tls_version);
        }
    }
}

/// Gauge series (name and labels) and their values.
type Series = HashMap<(&'static str, Vec<Label>), f64>;

/// Sets the tracker's totals ([`Tracker::stats`]) on the `metrics` facade: the
/// `conntrack.active_connections` gauge and the count counters (see the
/// [module docs](self)).
///
/// The recorder is pushed to, so call [`collect`](MetricsCollector::collect) before each
/// scrape or every few seconds; each call is one `stats()` read (a few microseconds per
/// category).
///
/// The per-connection gauges (`http.client.open_connections` by state and target,
/// `kestrel.active_connections` by listening address) come from one walk over the live
/// connections ([`Tracker::connections`]), so `collect` costs about as much as a snapshot: a
/// few milliseconds for 10,000 connections. A label set seen by an earlier `collect` and
/// gone since is set to 0, so a gauge never keeps the count of connections that closed.
#[derive(Debug, Clone)]
pub struct MetricsCollector {
    tracker: Tracker,
    extra: Vec<Label>,
    /// The per-connection gauge series set by the last `collect`.
    seen: Arc<std::sync::Mutex<Series>>,
}

impl MetricsCollector {
    /// A collector over `tracker`'s totals.
    #[must_use]
    pub fn new(tracker: &Tracker) -> Self {
        MetricsCollector {
            tracker: tracker.clone(),
            extra: Vec::new(),
            seen: Arc::default(),
        }
    }

    /// Adds a label to everything this collector sets (e.g. to tell trackers apart).
    #[must_use]
    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.extra.push(Label::new(key, value.into()));
        self
    }

    /// Reads the tracker's totals and sets them on the installed recorder.
    pub fn collect(&self) {
        let stats = self.tracker.stats();
        for c in &stats.categories {
            let base = |more: Option<Label>| {
                let mut v = vec![category_label(&c.category), role_label(c.role)];
                v.extend(more);
                v.extend(self.extra.iter().cloned());
                v
            };
            #[allow(clippy::cast_precision_loss)]
            ::metrics::gauge!(ACTIVE_CONNECTIONS, base(None)).set(c.active as f64);
            counter!(CONNECTIONS_OPENED, base(None)).absolute(c.opened);
            counter!(CONNECTIONS_CLOSED, base(None)).absolute(c.closed);
            counter!(CONNECTIONS_FAILED, base(None)).absolute(c.failed);
            counter!(TLS_HANDSHAKES_FAILED, base(None)).absolute(c.tls_handshake_failed);
            if c.role == Role::Server {
                let mut l = vec![category_label(&c.category)];
                l.extend(self.extra.iter().cloned());
                counter!(KESTREL_REJECTED_CONNECTIONS, l).absolute(c.rejected);
            }
            let dir = |d: &'static str| Some(Label::from_static_parts("network.io.direction", d));
            counter!(IO, base(dir("receive"))).absolute(c.read_bytes);
            counter!(IO, base(dir("transmit"))).absolute(c.write_bytes);
        }
        counter!(HOOK_PANICS, self.extra.clone()).absolute(stats.hook_panics);
        self.collect_open();
    }

    /// `http.client.open_connections`, `kestrel.active_connections` and
    /// `http.server.active_requests`, from the live connections.
    #[allow(clippy::cast_precision_loss)]
    fn collect_open(&self) {
        let mut now = Series::new();
        // (No TCP statistics are read from the sockets: these gauges do not use them.)
        for c in self.tracker.connections_without_tcp() {
            if c.role == Role::Server && c.requests > 0 {
                let mut l = vec![category_label(&c.category)];
                l.extend(self.extra.iter().cloned());
                *now.entry((HTTP_SERVER_ACTIVE_REQUESTS, l)).or_default() += f64::from(c.in_flight);
            }
            let (name, mut l) = match c.role {
                Role::Server => (KESTREL_ACTIVE_CONNECTIONS, kestrel_labels(&c)),
                Role::Client if c.requests > 0 => {
                    let mut l = http_client_labels(&c);
                    let state = if c.state == ConnState::Active {
                        "active"
                    } else {
                        "idle"
                    };
                    l.push(Label::from_static_parts("http.connection.state", state));
                    (HTTP_CLIENT_OPEN_CONNECTIONS, l)
                }
                Role::Client => continue,
            };
            l.extend(self.extra.iter().cloned());
            *now.entry((name, l)).or_default() += 1.0;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for key in seen.keys() {
            if !now.contains_key(key) {
                ::metrics::gauge!(key.0, key.1.clone()).set(0.0);
            }
        }
        for ((name, labels), n) in &now {
            ::metrics::gauge!(*name, labels.clone()).set(*n);
        }
        *seen = now;
    }
}
