//! The event structs handed to [`Hook`](crate::Hook) methods.
//!
//! Every struct is `#[non_exhaustive]` and borrowed: a hook that wants to keep something copies
//! it out. Failure is always an `error: Option<&io::Error>`, the error exactly as the socket
//! call returned it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::record::info::{Addr, CloseReason, ConnectionId, ConnectionInfo, Role, TlsInfo};

/// A connection was accepted, or an accept failed.
///
/// Go conntrack: `OnAccept`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AcceptEvent<'a> {
    /// The listener's category.
    pub category: &'a str,
    /// The listener's address, when known.
    pub local_addr: &'a Addr,
    /// The new connection; `None` when the accept failed.
    pub connection: Option<&'a ConnectionInfo>,
    /// The accept error; `None` on success. For a rejected connection, why it was refused.
    pub error: Option<&'a io::Error>,
    /// The connection was accepted and closed at once: a connection limit was reached or the
    /// tracker is shutting down (counted in
    /// [`CategoryStats::rejected`](crate::CategoryStats::rejected), not in `failed`).
    pub rejected: bool,
}

/// A dial finished, with a connection or an error.
///
/// Go conntrack: `OnDial`; httptrace: `GotConn` (on success).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct DialEvent<'a> {
    /// The dialer's category.
    pub category: &'a str,
    /// What was dialed (`"host:port"`, an address, a socket path).
    pub target: &'a str,
    /// The new connection; `None` when the dial failed.
    pub connection: Option<&'a ConnectionInfo>,
    /// The dial error; `None` on success.
    pub error: Option<&'a io::Error>,
    /// The whole dial: resolution and every connect attempt.
    pub duration: Duration,
}

/// Name resolution is about to start.
///
/// httptrace: `DNSStart`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct DnsStartEvent<'a> {
    /// The dialer's category.
    pub category: &'a str,
    /// The host name being resolved.
    pub host: &'a str,
}

/// Name resolution finished.
///
/// httptrace: `DNSDone`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct DnsDoneEvent<'a> {
    /// The dialer's category.
    pub category: &'a str,
    /// The host name that was resolved.
    pub host: &'a str,
    /// The resolved addresses; empty on failure.
    pub addrs: &'a [SocketAddr],
    /// The resolution error; `None` on success.
    pub error: Option<&'a io::Error>,
    /// How long resolution took.
    pub duration: Duration,
    /// Whether this dial shared a lookup already in flight for the same host and port instead
    /// of making its own (Go: `DNSDoneInfo.Coalesced`; a lookup is keyed by both, since a
    /// resolver is asked for `host:port`).
    pub coalesced: bool,
}

/// One connect attempt is starting.
///
/// httptrace: `ConnectStart`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConnectStartEvent<'a> {
    /// The dialer's category.
    pub category: &'a str,
    /// The address being connected to.
    pub addr: &'a Addr,
}

/// One connect attempt finished.
///
/// httptrace: `ConnectDone`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConnectDoneEvent<'a> {
    /// The dialer's category.
    pub category: &'a str,
    /// The address that was connected to.
    pub addr: &'a Addr,
    /// The connect error; `None` on success.
    pub error: Option<&'a io::Error>,
    /// How long this attempt took.
    pub duration: Duration,
}

/// A TLS handshake is starting on a tracked connection.
///
/// httptrace: `TLSHandshakeStart`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TlsHandshakeStartEvent<'a> {
    /// The connection the handshake runs on.
    pub connection: &'a ConnectionInfo,
    /// The server name the client asks for (client side only).
    pub server_name: Option<&'a str>,
}

/// A TLS handshake finished.
///
/// httptrace: `TLSHandshakeDone`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TlsHandshakeDoneEvent<'a> {
    /// The connection the handshake ran on (with `tls` set on success).
    pub connection: &'a ConnectionInfo,
    /// What was negotiated; `None` on failure.
    pub tls: Option<&'a TlsInfo>,
    /// The handshake error; `None` on success.
    pub error: Option<&'a io::Error>,
    /// How long the handshake took.
    pub duration: Duration,
}

/// A read finished on a tracked connection (only for hooks that want per-I/O events).
///
/// Go conntrack: `OnRead`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ReadEvent<'a> {
    /// The connection's id ([`Tracker::get`](crate::Tracker::get) gives the rest).
    pub id: ConnectionId,
    /// The connection's category.
    pub category: &'a str,
    /// The connection's role.
    pub role: Role,
    /// Bytes read (0 at end of stream or on error).
    pub n: usize,
    /// The read error; `None` on success.
    pub error: Option<&'a io::Error>,
}

/// A write finished on a tracked connection (only for hooks that want per-I/O events).
///
/// Go conntrack: `OnWrite`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WriteEvent<'a> {
    /// The connection's id.
    pub id: ConnectionId,
    /// The connection's category.
    pub category: &'a str,
    /// The connection's role.
    pub role: Role,
    /// Bytes written (0 on error).
    pub n: usize,
    /// The write error; `None` on success.
    pub error: Option<&'a io::Error>,
}

/// A connection left the tracker. Fires exactly once per connection.
///
/// Go conntrack: `OnClose`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CloseEvent<'a> {
    /// The final record: bytes, age and idle time as they were at close.
    pub connection: &'a ConnectionInfo,
    /// The last I/O error seen on the connection, if any.
    pub error: Option<&'a io::Error>,
    /// Why it closed.
    pub reason: CloseReason,
}

/// The HTTP request an HTTP event is about (method and URI as sent), shared by every event of
/// one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// A process-unique number for this request (in the order requests began).
    pub id: u64,
    /// The method, e.g. `"GET"`.
    pub method: Arc<str>,
    /// The URI, e.g. `"https://example.com/path"`.
    pub uri: Arc<str>,
}

/// A request is about to get a connection for `host_port`, pooled or new. Fires even when an
/// idle pooled connection exists.
///
/// httptrace: `GetConn`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct GetConnEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
    /// The `host:port` the request goes to.
    pub host_port: &'a str,
}

/// A request got its connection.
///
/// httptrace: `GotConn` (`GotConnInfo`).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct GotConnEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
    /// The connection the request goes over.
    pub connection: &'a ConnectionInfo,
    /// Whether the connection had carried an exchange before (a pooled connection).
    pub reused: bool,
    /// Whether the connection was idle (no exchange in flight) when the request got it.
    pub was_idle: bool,
    /// How long it had been idle since its last exchange ended; zero unless `was_idle`.
    pub idle_time: Duration,
}

/// A connection went back to the idle pool after a request, or could not (`error`).
///
/// httptrace: `PutIdleConn`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PutIdleConnEvent<'a> {
    /// The request that used the connection.
    pub request: &'a RequestInfo,
    /// The connection.
    pub id: ConnectionId,
    /// Why the connection did not go back to the pool; `None` when it did.
    pub error: Option<&'a io::Error>,
}

/// The first byte of the response arrived.
///
/// httptrace: `GotFirstResponseByte`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct GotFirstResponseByteEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
    /// Time from the start of the request.
    pub elapsed: Duration,
}

/// The server answered `100 Continue` to a request sent with `Expect: 100-continue`.
///
/// httptrace: `Got100Continue`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Got100ContinueEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
}

/// An informational (1xx) response arrived before the final one: 100, 103 Early Hints, ...
///
/// httptrace: `Got1xxResponse`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Got1xxResponseEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
    /// The status code (100..=199).
    pub status: u16,
    /// The response's header fields, as name/value bytes.
    pub headers: &'a [(&'a [u8], &'a [u8])],
}

/// One request header field was written.
///
/// httptrace: `WroteHeaderField`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WroteHeaderFieldEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
    /// The field name.
    pub name: &'a [u8],
    /// The field value.
    pub value: &'a [u8],
}

/// The request's header block was written.
///
/// httptrace: `WroteHeaders`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WroteHeadersEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
}

/// The headers of a request with `Expect: 100-continue` were written; the body waits for the
/// server's `100 Continue` (or a timeout).
///
/// httptrace: `Wait100Continue`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Wait100ContinueEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
}

/// The whole request (headers and body) was written, or writing it failed.
///
/// httptrace: `WroteRequest`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WroteRequestEvent<'a> {
    /// The request.
    pub request: &'a RequestInfo,
    /// The error that stopped the request from being written; `None` on success.
    pub error: Option<&'a io::Error>,
}

/// One server exchange (an HTTP request or RPC served on a tracked connection), phase by
/// phase, fired when it ended: when its response had been written and flushed, or when it
/// was cut short (see `docs/http-trace.md`, "Server requests").
///
/// The phases follow one another on the monotonic clock and add up to
/// [`total`](ServerExchangeEvent::total): `waiting + request_head + request_body + handler +
/// response_write` (a missing phase counting zero). The first byte of a request is taken when the connection's first read
/// after the previous exchange (or the accept) completed; on HTTP/2, whose streams share the
/// connection's reads, a stream has no waiting phase (`None`) and its head phase is zero: it
/// starts when its HEADERS frame reached the server.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ServerExchangeEvent<'a> {
    /// The connection the request arrived on.
    pub id: ConnectionId,
    /// Its category.
    pub category: &'a str,
    /// The request method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The route template that matched (axum's `MatchedPath`), when known.
    pub route: Option<&'a str>,
    /// The protocol version: `"1.0"`, `"1.1"` or `"2"` (OpenTelemetry's
    /// `network.protocol.version`).
    pub version: &'a str,
    /// The response status; `None` when no response was produced (the handler failed or was
    /// dropped).
    pub status: Option<u16>,
    /// The gRPC status (the `grpc-status` trailer, or header of a trailers-only response),
    /// when there was one.
    pub grpc_status: Option<i32>,
    /// The response was produced and written whole. `false` when the handler failed, the
    /// response was dropped before its end (the client went away) or its body failed.
    pub completed: bool,
    /// From the end of the previous exchange on the connection (or its accept) to the first
    /// byte of this request. `None` on HTTP/2.
    pub waiting: Option<Duration>,
    /// From the request's first byte to its head parsed (the request reaching the exchange
    /// layer).
    pub request_head: Duration,
    /// The time the handler spent waiting for the request body's frames before its response
    /// head (a body read while the response is written is in `response_write`); `None` when the
    /// body was not timed (the tokio adapter's `ExchangeLayer` without `timed_body()`), the
    /// handler phase then includes it.
    pub request_body: Option<Duration>,
    /// From the head parsed to the response head produced, less `request_body`. When no
    /// response was produced, up to the exchange's end.
    pub handler: Duration,
    /// From the response head produced to its last byte written and flushed (the exchange's
    /// end).
    pub response_write: Duration,
    /// From the start of `waiting` (HTTP/2: of `request_head`) to the exchange's end.
    pub total: Duration,
    /// Bytes the connection read during the exchange, from the start of `waiting` (on HTTP/2,
    /// of all the connection's streams and frames, from the head).
    pub bytes_read: u64,
    /// Bytes the connection wrote during the exchange (the same span).
    pub bytes_written: u64,
}
