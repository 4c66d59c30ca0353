//! The records a tracker hands out: ids, roles, addresses, timings, TLS details and the
//! per-connection snapshot [`ConnectionInfo`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A process-unique connection id.
///
/// Ids are handed out from one process-wide counter, so they are unique across every
/// [`Tracker`](crate::Tracker) in the process, never reused, and increase in registration
/// order: sorting by id sorts oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(transparent))]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The id as a plain number.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Which side of the connection this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
pub enum Role {
    /// The connection was dialed by this process (outbound).
    Client,
    /// The connection was accepted by this process (inbound).
    Server,
}

impl Role {
    /// `"client"` or `"server"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A connection endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Addr {
    /// An IP socket address (TCP).
    Inet(SocketAddr),
    /// A Unix domain socket; `None` for an unnamed socket (the usual client side).
    Unix(Option<Arc<Path>>),
    /// Not known, or not a kind this crate names.
    #[default]
    Unknown,
}

impl Addr {
    /// The IP socket address, if this is one.
    #[must_use]
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            _ => None,
        }
    }

    /// A Unix socket address from a path.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Addr::Unix(Some(Arc::from(path.into())))
    }

    /// The port of an IP socket address.
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|a| a.port())
    }

    /// The IP address of an IP socket address.
    #[must_use]
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.socket_addr().map(|a| a.ip())
    }

    /// The path of a named Unix socket.
    #[must_use]
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Addr::Unix(Some(p)) => Some(p),
            _ => None,
        }
    }

    /// For a listener bound to `self`: the local address of every connection it accepts, when
    /// that is known without asking the socket (a Unix path, or an IP address other than the
    /// unspecified "any" address). Listeners use it to save a `getsockname` per accept.
    #[must_use]
    pub fn fixed_local(&self) -> Option<Addr> {
        match self {
            Addr::Inet(a) if !a.ip().is_unspecified() && a.port() != 0 => Some(self.clone()),
            Addr::Unix(Some(_)) => Some(self.clone()),
            _ => None,
        }
    }

    /// The OpenTelemetry `network.transport` value: `"tcp"`, `"unix"` or `"unknown"`.
    #[must_use]
    pub const fn transport(&self) -> &'static str {
        match self {
            Addr::Inet(_) => "tcp",
            Addr::Unix(_) => "unix",
            Addr::Unknown => "unknown",
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        Addr::Inet(a)
    }
}

impl From<std::net::SocketAddrV4> for Addr {
    fn from(a: std::net::SocketAddrV4) -> Self {
        Addr::Inet(a.into())
    }
}

impl From<std::net::SocketAddrV6> for Addr {
    fn from(a: std::net::SocketAddrV6) -> Self {
        Addr::Inet(a.into())
    }
}

/// A Unix socket address (tokio's and the other runtimes' Unix addresses convert into std's):
/// named by its path, or unnamed.
#[cfg(unix)]
impl From<&std::os::unix::net::SocketAddr> for Addr {
    fn from(a: &std::os::unix::net::SocketAddr) -> Self {
        Addr::Unix(a.as_pathname().map(Arc::from))
    }
}

#[cfg(unix)]
impl From<std::os::unix::net::SocketAddr> for Addr {
    fn from(a: std::os::unix::net::SocketAddr) -> Self {
        Addr::from(&a)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => fmt::Display::fmt(a, f),
            Addr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            Addr::Unix(None) => f.pad("unix:(unnamed)"),
            Addr::Unknown => f.pad("-"),
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Addr::Unknown => s.serialize_none(),
            other => s.collect_str(other),
        }
    }
}

/// How long each phase of establishing a connection took, where it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Timings {
    /// Name resolution (dialed connections that resolved a name).
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub dns: Option<Duration>,
    /// The TCP (or Unix) connect of the attempt that won.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub connect: Option<Duration>,
    /// The TLS handshake, when one was made through a tracing wrapper.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub tls_handshake: Option<Duration>,
}

impl Timings {
    /// Timings with every phase unknown.
    #[must_use]
    pub const fn new() -> Self {
        Timings {
            dns: None,
            connect: None,
            tls_handshake: None,
        }
    }

    /// Sets the DNS duration.
    #[must_use]
    pub const fn with_dns(mut self, d: Duration) -> Self {
        self.dns = Some(d);
        self
    }

    /// Sets the connect duration.
    #[must_use]
    pub const fn with_connect(mut self, d: Duration) -> Self {
        self.connect = Some(d);
        self
    }

    /// Sets the TLS handshake duration.
    #[must_use]
    pub const fn with_tls_handshake(mut self, d: Duration) -> Self {
        self.tls_handshake = Some(d);
        self
    }
}

/// A summary of the peer's certificate chain. Never key material.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PeerCertificates {
    /// How many certificates the peer presented.
    pub count: usize,
    /// The leaf certificate's subject, if it was cheap to read.
    pub leaf_subject: Option<String>,
    /// The leaf certificate's expiry, if it was cheap to read. (JSON: unix seconds as a
    /// number, like every other time.)
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_system_time")
    )]
    pub leaf_not_after: Option<SystemTime>,
}

impl PeerCertificates {
    /// A summary with only the count known.
    #[must_use]
    pub fn new(count: usize) -> Self {
        PeerCertificates {
            count,
            leaf_subject: None,
            leaf_not_after: None,
        }
    }

    /// Sets the leaf subject.
    #[must_use]
    pub fn with_leaf_subject(mut self, subject: impl Into<String>) -> Self {
        self.leaf_subject = Some(subject.into());
        self
    }

    /// Sets the leaf expiry.
    #[must_use]
    pub fn with_leaf_not_after(mut self, t: SystemTime) -> Self {
        self.leaf_not_after = Some(t);
        self
    }
}

/// What was negotiated by a TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct TlsInfo {
    /// `"1.2"` or `"1.3"` (or the library's own name for an older version).
    pub protocol_version: String,
    /// The IANA cipher-suite name, e.g. `"TLS_AES_128_GCM_SHA256"`.
    pub cipher_suite: String,
    /// The negotiated ALPN protocol, as raw bytes (`b"h2"`).
    pub alpn: Option<Vec<u8>>,
    /// The server name (SNI) sent by the client.
    pub server_name: Option<String>,
    /// Whether the session was resumed rather than fully negotiated.
    pub resumed: bool,
    /// The peer's certificate chain, if it presented one.
    pub peer_certificates: Option<PeerCertificates>,
}

impl TlsInfo {
    /// A record with version and cipher suite; the rest is filled with the `with_` methods.
    pub fn new(protocol_version: impl Into<String>, cipher_suite: impl Into<String>) -> Self {
        TlsInfo {
            protocol_version: protocol_version.into(),
            cipher_suite: cipher_suite.into(),
            ..TlsInfo::default()
        }
    }

    /// Sets the ALPN protocol.
    #[must_use]
    pub fn with_alpn(mut self, alpn: impl Into<Vec<u8>>) -> Self {
        self.alpn = Some(alpn.into());
        self
    }

    /// Sets the server name.
    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Sets whether the session was resumed.
    #[must_use]
    pub fn with_resumed(mut self, resumed: bool) -> Self {
        self.resumed = resumed;
        self
    }

    /// Sets the peer certificate summary.
    #[must_use]
    pub fn with_peer_certificates(mut self, certs: PeerCertificates) -> Self {
        self.peer_certificates = Some(certs);
        self
    }

    /// The ALPN protocol as text, lossily decoded.
    #[must_use]
    pub fn alpn_str(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.alpn.as_deref().map(String::from_utf8_lossy)
    }
}

/// A server exchange in progress ([`ConnectionInfo::exchange`]).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ServerExchangeProgress {
    /// The request method.
    pub method: Arc<str>,
    /// The route template that matched, when known.
    pub route: Option<Arc<str>>,
    /// The phase it is in.
    pub phase: ServerPhase,
    /// The response status, once the response head has been produced.
    pub status: Option<u16>,
    /// Since its head was parsed (the exchange's begin).
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub elapsed: Duration,
}

/// The phase of a server exchange in progress (the phases of
/// [`ServerExchangeEvent`](crate::ServerExchangeEvent) that happen while it is in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ServerPhase {
    /// The handler waits for a frame of the request body (timed bodies only).
    RequestBody,
    /// The handler is producing the response head.
    Handler,
    /// The response is being written.
    ResponseWrite,
}

/// A snapshot of one live connection.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// The category given by the listener or dialer config; `""` when unset.
    pub category: Arc<str>,
    /// Whether this process accepted (server) or dialed (client) the connection.
    pub role: Role,
    /// This side's address.
    pub local_addr: Addr,
    /// The peer's address.
    pub remote_addr: Addr,
    /// What was dialed, as given to the dialer (e.g. `"example.com:443"`).
    pub target: Option<Arc<str>>,
    /// Wall-clock time the connection was registered. For display only: it is the wall clock
    /// as it reads when this record is built minus [`established_for`](Self::established_for),
    /// so it follows a step of the system clock made after registration (NTP at boot,
    /// `date -s`) and is never later than the snapshot that lists it; two records of one
    /// connection built at different times may differ by as much as the wall clock was stepped
    /// in between. (The system clock is read at most once a second; records built within that
    /// second add the monotonic time since the reading.)
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::system_time")
    )]
    pub established_at: SystemTime,
    /// How long the connection has existed, on the monotonic clock.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub established_for: Duration,
    /// Bytes read from the connection so far.
    pub read_bytes: u64,
    /// Bytes written to the connection so far.
    pub write_bytes: u64,
    /// Time since the last read or write (or since registration), millisecond resolution.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::record::ser::secs"))]
    pub idle_for: Duration,
    /// How long DNS, connect and the TLS handshake took.
    pub timings: Timings,
    /// What TLS negotiated, once a handshake finished: shared with the connection's entry
    /// and immutable (an `Arc`, so that a record stays small and a snapshot of many TLS
    /// connections copies no certificate summaries).
    pub tls: Option<Arc<TlsInfo>>,
    /// Exchanges (HTTP requests, RPCs, ...) begun on the connection, as marked by
    /// [`Connection::begin_exchange`](crate::Connection::begin_exchange).
    pub requests: u64,
    /// Exchanges begun and not yet ended.
    pub in_flight: u32,
    /// New, active or idle, derived from `requests` and `in_flight` (Go: `http.ConnState`);
    /// upgraded once a protocol layer marked it so
    /// ([`Connection::mark_upgraded`](crate::Connection::mark_upgraded)).
    pub state: ConnState,
    /// Time since the last exchange ended, while none is in flight; `None` before the first
    /// exchange ended and while one is in flight.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::opt_secs")
    )]
    pub exchange_idle_for: Option<Duration>,
    /// The server exchange in progress on this connection, while a hook wants server
    /// exchanges' phases ([`ConnectionRef::server_exchange`](crate::ConnectionRef::server_exchange));
    /// on HTTP/2, the oldest of its streams in progress.
    pub exchange: Option<ServerExchangeProgress>,
    /// The kernel's TCP statistics (round-trip time, retransmits, congestion window, bytes
    /// acknowledged), read when this record was built; for a closed connection, read at close
    /// if the config asked for it ([`tcp_info_at_close`](crate::ListenerConfig::tcp_info_at_close)),
    /// else the last ones read. `None` unless the integration registered the socket
    /// ([`Connection::watch_socket`](crate::Connection::watch_socket)), for non-TCP
    /// sockets, and on platforms other than Linux and Android. Shared (`Arc`) like `tls`, so
    /// that a record stays small.
    pub tcp: Option<Arc<crate::TcpStats>>,
}

/// A connection's exchange state, derived from its request counts (Go: `http.ConnState`), or
/// [`Upgraded`](ConnState::Upgraded) once its protocol was switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum ConnState {
    /// No exchange has begun on the connection yet.
    New,
    /// At least one exchange is in flight.
    Active,
    /// Exchanges have been made, none is in flight.
    Idle,
    /// The connection left its exchange protocol: after a `101 Switching Protocols` (a
    /// WebSocket) or a `2xx` answer to `CONNECT` (a tunnel), as marked by
    /// [`Connection::mark_upgraded`](crate::Connection::mark_upgraded). Busy for a shutdown
    /// (it gets the grace period, then is aborted at the deadline); judged by its I/O for the
    /// idle timeout.
    Upgraded,
}

impl ConnState {
    /// The state of a connection with `requests` begun and `in_flight` not yet ended (never
    /// [`Upgraded`](ConnState::Upgraded): that is a mark, not a count).
    #[must_use]
    pub const fn of(requests: u64, in_flight: u32) -> Self {
        if in_flight > 0 {
            ConnState::Active
        } else if requests == 0 {
            ConnState::New
        } else {
            ConnState::Idle
        }
    }

    /// `"new"`, `"active"`, `"idle"` or `"upgraded"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnState::New => "new",
            ConnState::Active => "active",
            ConnState::Idle => "idle",
            ConnState::Upgraded => "upgraded",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a connection closed: in [`CloseEvent`](crate::CloseEvent), the history
/// ([`ClosedConnection::reason`]), the debug views and the metrics.
///
/// The tracker decides it once, at close: a reason set by the tracker itself (an abort, a
/// policy, a limit, a shutdown, a failed TLS handshake) wins; otherwise the last I/O error
/// decides (a reset or broken pipe is [`Reset`](CloseReason::Reset), anything else
/// [`Error`](CloseReason::Error)); otherwise a read that returned end of stream means the peer
/// closed first; otherwise this side closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed (dropped) the connection, with no error and before the peer did.
    ClosedLocally,
    /// The peer closed first: a read returned end of stream.
    PeerClosed,
    /// The connection was reset or broken (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset,
    /// Another I/O error (the error is in the event and the history).
    Error,
    /// Closed by the idle timeout of its listener or dialer config.
    IdleTimeout,
    /// Closed by the maximum age of its listener or dialer config.
    MaxAge,
    /// Accepted and closed at once: a connection limit was reached, or the tracker was
    /// shutting down.
    Rejected,
    /// Aborted by [`Tracker::abort`](crate::Tracker::abort) or
    /// [`Connection::abort`](crate::Connection::abort).
    Aborted,
    /// Closed by [`Tracker::shutdown`](crate::Tracker::shutdown) while idle (no exchange in
    /// flight).
    Shutdown,
    /// Still open at the deadline of [`Tracker::shutdown`](crate::Tracker::shutdown) and
    /// aborted.
    ShutdownDeadline,
    /// The TLS handshake failed.
    TlsFailure,
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 11] = [
        CloseReason::ClosedLocally,
        CloseReason::PeerClosed,
        CloseReason::Reset,
        CloseReason::Error,
        CloseReason::IdleTimeout,
        CloseReason::MaxAge,
        CloseReason::Rejected,
        CloseReason::Aborted,
        CloseReason::Shutdown,
        CloseReason::ShutdownDeadline,
        CloseReason::TlsFailure,
    ];

    /// A short snake-case name: `"closed_locally"`, `"peer_closed"`, `"reset"`, `"error"`,
    /// `"idle_timeout"`, `"max_age"`, `"rejected"`, `"aborted"`, `"shutdown"`,
    /// `"shutdown_deadline"`, `"tls_failure"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClosedLocally => "closed_locally",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Reset => "reset",
            CloseReason::Error => "error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxAge => "max_age",
            CloseReason::Rejected => "rejected",
            CloseReason::Aborted => "aborted",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ShutdownDeadline => "shutdown_deadline",
            CloseReason::TlsFailure => "tls_failure",
        }
    }

    /// The OpenTelemetry `error.type` of a close the tracker decided, using the values of the
    /// Kestrel conventions (`ConnectionEndReason`) where one exists: `keep_alive_timeout`,
    /// `max_connection_age` (gRPC's name), `max_concurrent_connections_exceeded`,
    /// `aborted_by_app`, `app_shutdown_timeout`, `tls_handshake_failed`. `None` for a clean
    /// close (locally, by the peer, or idle at shutdown) and for I/O errors, whose `error.type`
    /// comes from the error itself.
    #[must_use]
    pub const fn error_type(self) -> Option<&'static str> {
        match self {
            CloseReason::IdleTimeout => Some("keep_alive_timeout"),
            CloseReason::MaxAge => Some("max_connection_age"),
            CloseReason::Rejected => Some("max_concurrent_connections_exceeded"),
            CloseReason::Aborted => Some("aborted_by_app"),
            CloseReason::ShutdownDeadline => Some("app_shutdown_timeout"),
            CloseReason::TlsFailure => Some("tls_handshake_failed"),
            _ => None,
        }
    }

    pub(crate) const fn code(self) -> u8 {
        self as u8 + 1
    }

    pub(crate) fn from_code(code: u8) -> Option<CloseReason> {
        CloseReason::ALL
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A connection that has gone, kept in the tracker's bounded history.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClosedConnection {
    /// The final record: bytes and age as they were at close.
    pub info: ConnectionInfo,
    /// Wall-clock time of the close, on the clock of `info.established_at` (it is
    /// `established_at + established_for`). For display only: like `established_at`, it is
    /// the wall clock read when the record was built (by
    /// [`recently_closed`](crate::Tracker::recently_closed)) minus the time since the close
    /// on the monotonic clock.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::record::ser::system_time")
    )]
    pub closed_at: SystemTime,
    /// The last I/O error seen on the connection, as text.
    pub error: Option<String>,
    /// Why it closed.
    pub reason: CloseReason,
}
