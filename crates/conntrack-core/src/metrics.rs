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
//!
//! ¹ only when it applies: `tls.protocol.version` once a TLS handshake finished,
//! `error.type` when the connection closed with an I/O error or the step failed.
//! `conntrack.phase` is `accept`, `dial`, `tls_handshake` or `close`. `error.type` is the
//! [`io::ErrorKind`] in snake case (`connection_refused`, `timed_out`, ...), or
//! `os_error_<errno>` for an OS error without a stable kind (EMFILE is `os_error_24`).
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

use crate::event::{
    AcceptEvent, CloseEvent, ConnectDoneEvent, DialEvent, DnsDoneEvent, TlsHandshakeDoneEvent,
};
use crate::hook::Hook;
use crate::info::Role;
use crate::otel::{error_type, transport};
use crate::tracker::Tracker;

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

/// Histogram buckets (seconds) for the short phases: DNS, connect, TLS handshake.
pub const PHASE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets (seconds) for whole connection lifetimes: 1 ms to 1 hour.
pub const CONNECTION_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// Registers help text and units for every metric with the installed recorder. Call once,
/// after installing it.
pub fn describe() {
    describe_gauge!(ACTIVE_CONNECTIONS, Unit::Count, "Connections open now.");
    describe_counter!(CONNECTIONS_OPENED, Unit::Count, "Connections opened.");
    describe_counter!(CONNECTIONS_CLOSED, Unit::Count, "Connections closed.");
    describe_counter!(
        CONNECTIONS_FAILED,
        Unit::Count,
        "Accepts and dials that failed to make a connection."
    );
    describe_counter!(
        TLS_HANDSHAKES_FAILED,
        Unit::Count,
        "TLS handshakes that failed."
    );
    describe_counter!(
        IO,
        Unit::Bytes,
        "Bytes read and written on tracked connections."
    );
    describe_counter!(
        HOOK_PANICS,
        Unit::Count,
        "Panics caught in conntrack hooks."
    );
    describe_histogram!(
        CONNECTION_DURATION,
        Unit::Seconds,
        "How long connections lived."
    );
    describe_histogram!(
        TLS_HANDSHAKE_DURATION,
        Unit::Seconds,
        "TLS handshake duration."
    );
    describe_histogram!(DNS_LOOKUP_DURATION, Unit::Seconds, "DNS lookup duration.");
    describe_histogram!(CONNECT_DURATION, Unit::Seconds, "Connect attempt duration.");
    describe_counter!(ERRORS, Unit::Count, "Failures by phase and error type.");
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
    closes: Arc<CloseHistograms>,
}

/// One kept `conntrack.connection.duration` handle and the labels it was made with (besides
/// the category, its key).
struct CloseHistogram {
    role: Role,
    transport: Option<&'static str>,
    tls_version: Option<Box<str>>,
    histogram: Histogram,
}

/// The kept handles, by category, and the address of the recorder they came from.
#[derive(Default)]
struct CloseHistograms(RwLock<(usize, ByCategory)>);

type ByCategory = HashMap<Arc<str>, Vec<CloseHistogram>>;

impl fmt::Debug for CloseHistograms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.0.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("CloseHistograms")
            .field("categories", &g.1.len())
            .finish()
    }
}

/// Tells recorders apart: the address of the current one.
fn recorder_id() -> usize {
    ::metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize)
}

impl CloseHistograms {
    /// Records `value` in the kept handle matching the labels, if there is one.
    fn record(
        &self,
        recorder: usize,
        category: &str,
        role: Role,
        transport: Option<&'static str>,
        tls_version: Option<&str>,
        value: f64,
    ) -> bool {
        let g = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if g.0 != recorder {
            return false;
        }
        let found = g.1.get(category).and_then(|v| {
            v.iter().find(|h| {
                h.role == role
                    && h.transport == transport
                    && h.tls_version.as_deref() == tls_version
            })
        });
        match found {
            Some(h) => {
                h.histogram.record(value);
                true
            }
            None => false,
        }
    }

    fn keep(&self, recorder: usize, category: &Arc<str>, handle: CloseHistogram) {
        let mut g = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if g.0 != recorder {
            g.1.clear();
            g.0 = recorder;
        }
        let v = g.1.entry(Arc::clone(category)).or_default();
        if !v.iter().any(|h| {
            h.role == handle.role
                && h.transport == handle.transport
                && h.tls_version == handle.tls_version
        }) {
            v.push(handle);
        }
    }
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

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Hook for MetricsHook {
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
            l.push(error_label(e));
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

    fn on_tls_handshake_done(&self, ev: &TlsHandshakeDoneEvent<'_>) {
        let c = ev.connection;
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
        let transport = transport(&c.remote_addr).or_else(|| transport(&c.local_addr));
        let tls_version = c.tls.as_ref().map(|t| t.protocol_version.as_str());
        let value = secs(c.established_for);
        let mut l = vec![category_label(&c.category), role_label(c.role)];
        if let (None, Some(t)) = (ev.error, ev.reason.error_type()) {
            // Closed by the tracker (policy, abort, shutdown deadline): the reason is the
            // `error.type`, Kestrel's value where it has one.
            if let Some(t) = transport {
                l.push(Label::from_static_parts("network.transport", t));
            }
            l.push(Label::from_static_parts("error.type", t));
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
        let recorder = recorder_id();
        if self
            .closes
            .record(recorder, &c.category, c.role, transport, tls_version, value)
        {
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
        self.closes.keep(
            recorder,
            &c.category,
            CloseHistogram {
                role: c.role,
                transport,
                tls_version: tls_version.map(Box::from),
                histogram,
            },
        );
    }
}

/// Sets the tracker's totals ([`Tracker::stats`]) on the `metrics` facade: the
/// `conntrack.active_connections` gauge and the count counters (see the
/// [module docs](self)).
///
/// The recorder is pushed to, so call [`collect`](MetricsCollector::collect) before each
/// scrape or every few seconds; each call is one `stats()` read (a few microseconds per
/// category).
#[derive(Debug, Clone)]
pub struct MetricsCollector {
    tracker: Tracker,
    extra: Vec<Label>,
}

impl MetricsCollector {
    /// A collector over `tracker`'s totals.
    #[must_use]
    pub fn new(tracker: &Tracker) -> Self {
        MetricsCollector {
            tracker: tracker.clone(),
            extra: Vec::new(),
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
            let dir = |d: &'static str| Some(Label::from_static_parts("network.io.direction", d));
            counter!(IO, base(dir("receive"))).absolute(c.read_bytes);
            counter!(IO, base(dir("transmit"))).absolute(c.write_bytes);
        }
        counter!(HOOK_PANICS, self.extra.clone()).absolute(stats.hook_panics);
    }
}
