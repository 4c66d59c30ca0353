//! A [`Hook`] that reports to [`tracing`](https://docs.rs/tracing): one span per connection and
//! an event for each phase, with OpenTelemetry attribute names.
//!
//! Everything is under the target `conntrack`.
//!
//! **The span** `conntrack.connection` (level DEBUG) opens when a connection is accepted or
//! dialed and closes when it leaves the tracker. Its parent is the span current at accept or
//! dial time (the accept loop's, or the request that dialed). Fields:
//!
//! | field | value |
//! |---|---|
//! | `conntrack.id` | the [`ConnectionId`] |
//! | `conntrack.category` | the listener's or dialer's category |
//! | `conntrack.role` | `server` (accepted) or `client` (dialed) |
//! | `network.transport` | `tcp` or `unix` |
//! | `network.type` | `ipv4` or `ipv6` (TCP only) |
//! | `network.peer.address`, `network.peer.port` | the peer (a Unix socket's path, no port) |
//! | `network.local.address`, `network.local.port` | this side |
//! | `server.address`, `server.port` | what a client dialed (`"example.com"`, `443`) |
//! | `tls.protocol.version`, `tls.cipher`, `tls.next_protocol`, `tls.resumed` | set when a TLS handshake finishes (`tls.next_protocol` is the ALPN, `tls.cipher` the IANA suite name) |
//! | `network.protocol.name`, `network.protocol.version` | `http` and `1.1` / `2` when the ALPN named an HTTP version |
//! | `conntrack.read_bytes`, `conntrack.write_bytes`, `error.type` | set at close (`error.type` only when the connection closed with an I/O error) |
//!
//! **The events** (message, level, fields besides the span's):
//!
//! | message | level | fields |
//! |---|---|---|
//! | `connection accepted` | DEBUG | (in the span) |
//! | `connection dialed` | DEBUG | `conntrack.duration` (whole dial, seconds), in the span |
//! | `accept failed` | DEBUG | `conntrack.category`, `network.local.address`, `error.type`, `error.message` |
//! | `dial failed` | DEBUG | `conntrack.category`, `server.address`, `conntrack.duration`, `error.type`, `error.message` |
//! | `dns lookup started` | TRACE | `conntrack.category`, `dns.question.name` |
//! | `dns lookup finished` | DEBUG | `conntrack.category`, `dns.question.name`, `dns.answers` (count), `conntrack.duration`, `error.type`¹, `error.message`¹ |
//! | `connect started` | TRACE | `conntrack.category`, `network.transport`, `network.peer.address`, `network.peer.port` |
//! | `connect finished` | DEBUG | the same, `conntrack.duration`, `error.type`¹, `error.message`¹ |
//! | `tls handshake started` | TRACE | `server.address`¹ (the SNI sent; it replaces the deprecated `tls.client.server_name`), in the span |
//! | `tls handshake finished` | DEBUG | `conntrack.duration`, `error.type`¹, `error.message`¹, in the span |
//! | `read`, `write` | TRACE | `conntrack.id`, `conntrack.bytes`, `error.type`¹; only with [`TracingHook::io_events`] |
//! | `connection closed` | DEBUG | `conntrack.read_bytes`, `conntrack.write_bytes`, `conntrack.duration` (the connection's age), `error.type`¹, `error.message`¹, in the span |
//!
//! ¹ only when it applies. `error.type` is the [`io::ErrorKind`](std::io::ErrorKind) in snake
//! case (`connection_refused`, ...), or `os_error_<errno>` for an OS error without a stable
//! kind. Durations are `f64` seconds.
//!
//! Every text field a user or peer controls (category, addresses, `server.address`, DNS name,
//! SNI, ALPN, TLS names, error messages) goes through [`render::escape_text`]: a Unix socket
//! path holding a newline or an ANSI escape cannot forge a log line or colour a terminal.
//!
//! ```
//! use conntrack_core::tracing::TracingHook;
//! use conntrack_core::Tracker;
//!
//! let tracker = Tracker::builder().hook(TracingHook::new()).build();
//! # drop(tracker);
//! ```
//!
//! When no subscriber wants the span (the level or target is filtered out), none is made or
//! kept; the hook's cost is then a few atomic loads per connection.
//!
//! A span lives exactly as long as its connection is tracked by the hook: it closes when the
//! connection does, or, if the hook is taken out of the tracker first (its
//! [`HookHandle`](crate::HookHandle) dropped while connections are live), when the hook is
//! dropped. The hook keeps one entry per open span and nothing after.
//!
//! The span is never entered by the hook. To put a connection's work inside it (so that, say,
//! the request spans of a server's per-connection task become its children), keep a clone of
//! the hook and instrument the task with [`TracingHook::span`]:
//!
//! ```
//! use conntrack_core::tracing::TracingHook;
//! use conntrack_core::Connection;
//!
//! fn serve(hook: &TracingHook, conn: &Connection) {
//!     let span = hook.span(conn.id()).unwrap_or_else(tracing::Span::none);
//!     let _inside = span.enter(); // for a future: `.instrument(span)`
//!     // ... the connection's work ...
//! }
//! # let _ = serve;
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ::tracing::field::{display as as_display, Empty};
use ::tracing::{debug_span, Span};

use crate::emit::otel::{error_type, http_version, network_type, split_target, transport};
use crate::emit::render::{self, escape_text};
use crate::hooks::hook::Hook;
use crate::record::event::{
    AcceptEvent, CloseEvent, ConnectDoneEvent, ConnectStartEvent, DialEvent, DnsDoneEvent,
    DnsStartEvent, ReadEvent, TlsHandshakeDoneEvent, TlsHandshakeStartEvent, WriteEvent,
};
use crate::record::info::{Addr, ConnectionId, ConnectionInfo};

/// Emits an event inside `$span` (an `Option<Span>`) when there is one, else in the current
/// context. Fields go in braces: the event macros cannot tell a dotted field name from the
/// message otherwise.
macro_rules! event_in {
    ($mac:ident, $span:expr, { $($fields:tt)* }, $($msg:tt)+) => {
        match $span {
            Some(ref s) => ::tracing::$mac!(target: "conntrack", parent: s, { $($fields)* }, $($msg)+),
            None => ::tracing::$mac!(target: "conntrack", { $($fields)* }, $($msg)+),
        }
    };
}

const SHARDS: usize = 16;

/// The open spans by connection, each with the [`TracingHook::instance`] that opened it.
type SpanMap = Mutex<HashMap<ConnectionId, (u64, Span)>>;

/// Numbers every `TracingHook` value, clones included.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// A [`Hook`] emitting a `tracing` span per connection and an event per phase; see the
/// [module docs](self) for the fields.
///
/// Clones share the spans (so a clone kept aside can look them up with
/// [`span`](TracingHook::span)), but each span belongs to the value that opened it: the one
/// installed in the tracker. When that value is dropped — its [`HookHandle`](crate::HookHandle)
/// removed or dropped while connections are still live, so their `on_close` will never reach
/// it — the spans it opened are closed then and there, and `span` no longer finds them.
pub struct TracingHook {
    spans: Arc<[SpanMap]>,
    io_events: bool,
    /// This value's number, marking the spans it opens.
    instance: u64,
    /// Whether this value opened any span (so that dropping a clone that never did, such as
    /// the one an application keeps for `span`, costs nothing).
    opened: AtomicBool,
}

impl Clone for TracingHook {
    fn clone(&self) -> Self {
        TracingHook {
            spans: Arc::clone(&self.spans),
            io_events: self.io_events,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            opened: AtomicBool::new(false),
        }
    }
}

impl Drop for TracingHook {
    fn drop(&mut self) {
        if !*self.opened.get_mut() {
            return;
        }
        // Spans are closed outside the lock: closing one calls into the subscriber.
        let mut orphans = Vec::new();
        for shard in self.spans.iter() {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, (owner, span)| {
                    if *owner == self.instance {
                        orphans.push(std::mem::replace(span, Span::none()));
                        false
                    } else {
                        true
                    }
                });
        }
        drop(orphans);
    }
}

impl std::fmt::Debug for TracingHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingHook")
            .field("io_events", &self.io_events)
            .finish_non_exhaustive()
    }
}

impl Default for TracingHook {
    fn default() -> Self {
        TracingHook::new()
    }
}

impl TracingHook {
    /// A hook without per-read/write events.
    #[must_use]
    pub fn new() -> Self {
        TracingHook {
            spans: (0..SHARDS).map(|_| Mutex::default()).collect(),
            io_events: false,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            opened: AtomicBool::new(false),
        }
    }

    /// Also emit a TRACE event for every read and write. Off by default: it puts the hook on
    /// the I/O path of every tracked connection.
    #[must_use]
    pub fn io_events(mut self, on: bool) -> Self {
        self.io_events = on;
        self
    }

    fn shard(&self, id: ConnectionId) -> &SpanMap {
        // Ids are sequential, so the low bits spread evenly.
        #[allow(clippy::cast_possible_truncation)]
        &self.spans[(id.as_u64() as usize) % SHARDS]
    }

    fn open(&self, c: &ConnectionInfo) -> Span {
        let peer = AddrParts::of(&c.remote_addr);
        let local = AddrParts::of(&c.local_addr);
        let (server_host, server_port) = c.target.as_deref().map_or((None, None), split_target);
        let span = debug_span!(
            target: "conntrack",
            "conntrack.connection",
            conntrack.id = c.id.as_u64(),
            conntrack.category = &*escape_text(&c.category),
            conntrack.role = c.role.as_str(),
            network.transport = transport(&c.remote_addr).or_else(|| transport(&c.local_addr)),
            network.type = network_type(&c.remote_addr).or_else(|| network_type(&c.local_addr)),
            network.peer.address = peer.address.as_ref().map(as_display),
            network.peer.port = peer.port,
            network.local.address = local.address.as_ref().map(as_display),
            network.local.port = local.port,
            server.address = server_host.map(escape_text).as_deref(),
            server.port = server_port,
            tls.protocol.version = Empty,
            tls.cipher = Empty,
            tls.next_protocol = Empty,
            tls.resumed = Empty,
            network.protocol.name = Empty,
            network.protocol.version = Empty,
            conntrack.read_bytes = Empty,
            conntrack.write_bytes = Empty,
            error.type = Empty,
        );
        if !span.is_disabled() {
            self.opened.store(true, Ordering::Relaxed);
            self.shard(c.id)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(c.id, (self.instance, span.clone()));
        }
        span
    }

    /// The span of a live connection, to run its work inside: e.g. a server's per-connection
    /// task `.instrument(span)`ed, so the request spans it makes become the connection's
    /// children. `None` once the connection closed, once the hook that opened the span was
    /// removed from the tracker, or when no subscriber wanted the span.
    #[must_use]
    pub fn span(&self, id: ConnectionId) -> Option<Span> {
        self.shard(id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map(|(_, span)| span.clone())
    }

    /// The TRACE event of one read or write (`what`), in the connection's span.
    fn io_event(&self, id: ConnectionId, n: usize, error: Option<&std::io::Error>, what: &str) {
        let span = self.span(id);
        let et = error.map(error_type);
        event_in!(trace, span, {
            conntrack.id = id.as_u64(),
            conntrack.bytes = n,
            error.type = et.as_deref(),
        }, "{what}");
    }

    fn take(&self, id: ConnectionId) -> Option<Span> {
        self.shard(id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .map(|(_, span)| span)
    }
}

/// An error's text as a field value, escaped: I/O error messages can carry peer-chosen text
/// (a TLS alert, a name that did not resolve).
fn message(e: Option<&std::io::Error>) -> Option<String> {
    e.map(|e| render::escape_text(&e.to_string()).into_owned())
}

/// An address as OpenTelemetry's `*.address` / `*.port` pair.
struct AddrParts {
    address: Option<String>,
    port: Option<u16>,
}

impl AddrParts {
    fn of(a: &Addr) -> Self {
        match a {
            Addr::Inet(sa) => AddrParts {
                address: Some(sa.ip().to_string()),
                port: Some(sa.port()),
            },
            Addr::Unix(Some(p)) => AddrParts {
                address: Some(escape_text(&p.display().to_string()).into_owned()),
                port: None,
            },
            Addr::Unix(None) | Addr::Unknown => AddrParts {
                address: None,
                port: None,
            },
        }
    }
}

impl Hook for TracingHook {
    // Its spans and events are of connections only.
    fn wants_request_events(&self) -> bool {
        false
    }

    fn on_accept(&self, ev: &AcceptEvent<'_>) {
        match (ev.connection, ev.error) {
            (Some(c), _) => {
                let span = Some(self.open(c));
                event_in!(debug, span, {}, "connection accepted");
            }
            (None, e) => {
                // A connection refused by a limit or a shutdown: the metrics' value, not the
                // refusal error's kind (which a reader would take for the peer's).
                let et = if ev.rejected {
                    Some(Cow::Borrowed("max_concurrent_connections_exceeded"))
                } else {
                    e.map(error_type)
                };
                let local = AddrParts::of(ev.local_addr);
                event_in!(debug, None::<Span>, {
                    conntrack.category = &*escape_text(ev.category),
                    network.local.address = local.address,
                    error.type = et.as_deref(),
                    error.message = message(e).as_deref(),
                }, "accept failed");
            }
        }
    }

    fn on_dial(&self, ev: &DialEvent<'_>) {
        let secs = ev.duration.as_secs_f64();
        match (ev.connection, ev.error) {
            (Some(c), _) => {
                let span = Some(self.open(c));
                event_in!(
                    debug,
                    span,
                    { conntrack.duration = secs },
                    "connection dialed"
                );
            }
            (None, e) => {
                let et = e.map(error_type);
                event_in!(debug, None::<Span>, {
                    conntrack.category = &*escape_text(ev.category),
                    server.address = &*escape_text(ev.target),
                    conntrack.duration = secs,
                    error.type = et.as_deref(),
                    error.message = message(e).as_deref(),
                }, "dial failed");
            }
        }
    }

    fn on_dns_start(&self, ev: &DnsStartEvent<'_>) {
        event_in!(trace, None::<Span>, {
            conntrack.category = &*escape_text(ev.category),
            dns.question.name = &*escape_text(ev.host),
        }, "dns lookup started");
    }

    fn on_dns_done(&self, ev: &DnsDoneEvent<'_>) {
        let et = ev.error.map(error_type);
        event_in!(debug, None::<Span>, {
            conntrack.category = &*escape_text(ev.category),
            dns.question.name = &*escape_text(ev.host),
            dns.answers = ev.addrs.len(),
            conntrack.duration = ev.duration.as_secs_f64(),
            error.type = et.as_deref(),
            error.message = message(ev.error).as_deref(),
        }, "dns lookup finished");
    }

    fn on_connect_start(&self, ev: &ConnectStartEvent<'_>) {
        let peer = AddrParts::of(ev.addr);
        event_in!(trace, None::<Span>, {
            conntrack.category = &*escape_text(ev.category),
            network.transport = transport(ev.addr),
            network.peer.address = peer.address,
            network.peer.port = peer.port,
        }, "connect started");
    }

    fn on_connect_done(&self, ev: &ConnectDoneEvent<'_>) {
        let peer = AddrParts::of(ev.addr);
        let et = ev.error.map(error_type);
        event_in!(debug, None::<Span>, {
            conntrack.category = &*escape_text(ev.category),
            network.transport = transport(ev.addr),
            network.peer.address = peer.address,
            network.peer.port = peer.port,
            conntrack.duration = ev.duration.as_secs_f64(),
            error.type = et.as_deref(),
            error.message = message(ev.error).as_deref(),
        }, "connect finished");
    }

    fn on_tls_handshake_start(&self, ev: &TlsHandshakeStartEvent<'_>) {
        let span = self.span(ev.connection.id);
        event_in!(trace, span, {
            server.address = ev.server_name.map(escape_text).as_deref(),
        }, "tls handshake started");
    }

    fn on_tls_handshake_done(&self, ev: &TlsHandshakeDoneEvent<'_>) {
        let span = self.span(ev.connection.id);
        if let (Some(s), Some(tls)) = (&span, ev.tls) {
            s.record("tls.protocol.version", &*escape_text(&tls.protocol_version));
            s.record("tls.cipher", &*escape_text(&tls.cipher_suite));
            if let Some(alpn) = tls.alpn_str() {
                s.record("tls.next_protocol", &*escape_text(&alpn));
            }
            if let Some(v) = http_version(tls.alpn.as_deref()) {
                s.record("network.protocol.name", "http");
                s.record("network.protocol.version", v);
            }
            s.record("tls.resumed", tls.resumed);
        }
        let et = ev.error.map(error_type);
        event_in!(debug, span, {
            conntrack.duration = ev.duration.as_secs_f64(),
            error.type = et.as_deref(),
            error.message = message(ev.error).as_deref(),
        }, "tls handshake finished");
    }

    fn on_read(&self, ev: &ReadEvent<'_>) {
        self.io_event(ev.id, ev.n, ev.error, "read");
    }

    fn on_write(&self, ev: &WriteEvent<'_>) {
        self.io_event(ev.id, ev.n, ev.error, "write");
    }

    fn on_close(&self, ev: &CloseEvent<'_>) {
        let c = ev.connection;
        let span = self.take(c.id);
        let et = ev.error.map(error_type);
        if let Some(s) = &span {
            s.record("conntrack.read_bytes", c.read_bytes);
            s.record("conntrack.write_bytes", c.write_bytes);
            if let Some(et) = &et {
                s.record("error.type", &**et);
            }
        }
        event_in!(debug, span, {
            conntrack.read_bytes = c.read_bytes,
            conntrack.write_bytes = c.write_bytes,
            conntrack.duration = c.established_for.as_secs_f64(),
            error.type = et.as_deref(),
            error.message = message(ev.error).as_deref(),
        }, "connection closed");
        // The span closes here, with its last clone.
    }

    fn wants_io_events(&self) -> bool {
        self.io_events
    }
}

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn targets_split_into_host_and_port() {
        assert_eq!(
            split_target("example.com:443"),
            (Some("example.com"), Some(443))
        );
        assert_eq!(split_target("127.0.0.1:80"), (Some("127.0.0.1"), Some(80)));
        assert_eq!(split_target("[::1]:8080"), (Some("::1"), Some(8080)));
        assert_eq!(split_target("/tmp/sock"), (Some("/tmp/sock"), None));
        assert_eq!(split_target("::1"), (Some("::1"), None));
    }
}
