//! [`RecordingHook`]: a hook that keeps every event, for tests (ours and yours).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::hooks::hook::{for_each_event, Hook};
use crate::record::event::*;
use crate::record::info::{Addr, CloseReason, ConnectionId, ConnectionInfo, TlsInfo};

/// An owned copy of an I/O error: its kind and text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedError {
    /// The error's kind.
    pub kind: io::ErrorKind,
    /// The error's text.
    pub message: String,
}

impl RecordedError {
    fn from(e: Option<&io::Error>) -> Option<Self> {
        e.map(|e| RecordedError {
            kind: e.kind(),
            message: e.to_string(),
        })
    }
}

/// One event kept by a [`RecordingHook`].
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields mirror the event structs of the same names
pub enum Recorded {
    Accept {
        category: String,
        connection: Option<ConnectionInfo>,
        error: Option<RecordedError>,
        rejected: bool,
    },
    Dial {
        category: String,
        target: String,
        connection: Option<ConnectionInfo>,
        error: Option<RecordedError>,
        duration: Duration,
    },
    DnsStart {
        host: String,
    },
    DnsDone {
        host: String,
        addrs: Vec<SocketAddr>,
        error: Option<RecordedError>,
        duration: Duration,
        coalesced: bool,
    },
    ConnectStart {
        addr: Addr,
    },
    ConnectDone {
        addr: Addr,
        error: Option<RecordedError>,
        duration: Duration,
    },
    TlsHandshakeStart {
        id: ConnectionId,
        server_name: Option<String>,
    },
    TlsHandshakeDone {
        id: ConnectionId,
        tls: Option<TlsInfo>,
        error: Option<RecordedError>,
        duration: Duration,
    },
    Read {
        id: ConnectionId,
        n: usize,
        error: Option<RecordedError>,
    },
    Write {
        id: ConnectionId,
        n: usize,
        error: Option<RecordedError>,
    },
    Close {
        connection: ConnectionInfo,
        error: Option<RecordedError>,
        reason: CloseReason,
    },
    GetConn {
        request: RequestInfo,
        host_port: String,
    },
    GotConn {
        request: RequestInfo,
        connection: ConnectionInfo,
        reused: bool,
        was_idle: bool,
        idle_time: Duration,
    },
    PutIdleConn {
        request: RequestInfo,
        id: ConnectionId,
        error: Option<RecordedError>,
    },
    GotFirstResponseByte {
        request: RequestInfo,
        elapsed: Duration,
    },
    Got100Continue {
        request: RequestInfo,
    },
    Got1xxResponse {
        request: RequestInfo,
        status: u16,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
    WroteHeaderField {
        request: RequestInfo,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    WroteHeaders {
        request: RequestInfo,
    },
    Wait100Continue {
        request: RequestInfo,
    },
    WroteRequest {
        request: RequestInfo,
        error: Option<RecordedError>,
    },
    ServerExchange {
        id: ConnectionId,
        method: String,
        route: Option<String>,
        version: String,
        status: Option<u16>,
        grpc_status: Option<i32>,
        completed: bool,
        waiting: Option<Duration>,
        request_head: Duration,
        request_body: Option<Duration>,
        handler: Duration,
        response_write: Duration,
        total: Duration,
        bytes_read: u64,
        bytes_written: u64,
    },
}

impl Recorded {
    /// The hook method's name without `on_`: `"accept"`, `"dial"`, `"dns_start"`,
    /// `"dns_done"`, `"connect_start"`, `"connect_done"`, `"tls_handshake_start"`,
    /// `"tls_handshake_done"`, `"read"`, `"write"`, `"close"`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Recorded::Accept { .. } => "accept",
            Recorded::Dial { .. } => "dial",
            Recorded::DnsStart { .. } => "dns_start",
            Recorded::DnsDone { .. } => "dns_done",
            Recorded::ConnectStart { .. } => "connect_start",
            Recorded::ConnectDone { .. } => "connect_done",
            Recorded::TlsHandshakeStart { .. } => "tls_handshake_start",
            Recorded::TlsHandshakeDone { .. } => "tls_handshake_done",
            Recorded::Read { .. } => "read",
            Recorded::Write { .. } => "write",
            Recorded::Close { .. } => "close",
            Recorded::GetConn { .. } => "get_conn",
            Recorded::GotConn { .. } => "got_conn",
            Recorded::PutIdleConn { .. } => "put_idle_conn",
            Recorded::GotFirstResponseByte { .. } => "got_first_response_byte",
            Recorded::Got100Continue { .. } => "got_100_continue",
            Recorded::Got1xxResponse { .. } => "got_1xx_response",
            Recorded::WroteHeaderField { .. } => "wrote_header_field",
            Recorded::WroteHeaders { .. } => "wrote_headers",
            Recorded::Wait100Continue { .. } => "wait_100_continue",
            Recorded::WroteRequest { .. } => "wrote_request",
            Recorded::ServerExchange { .. } => "server_exchange",
        }
    }

    /// The error carried by the event, if any.
    #[must_use]
    pub fn error(&self) -> Option<&RecordedError> {
        match self {
            Recorded::Accept { error, .. }
            | Recorded::Dial { error, .. }
            | Recorded::DnsDone { error, .. }
            | Recorded::ConnectDone { error, .. }
            | Recorded::TlsHandshakeDone { error, .. }
            | Recorded::Read { error, .. }
            | Recorded::Write { error, .. }
            | Recorded::Close { error, .. }
            | Recorded::PutIdleConn { error, .. }
            | Recorded::WroteRequest { error, .. } => error.as_ref(),
            _ => None,
        }
    }

    /// The HTTP request an HTTP event is about.
    #[must_use]
    pub fn request(&self) -> Option<&RequestInfo> {
        match self {
            Recorded::GetConn { request, .. }
            | Recorded::GotConn { request, .. }
            | Recorded::PutIdleConn { request, .. }
            | Recorded::GotFirstResponseByte { request, .. }
            | Recorded::Got100Continue { request }
            | Recorded::Got1xxResponse { request, .. }
            | Recorded::WroteHeaderField { request, .. }
            | Recorded::WroteHeaders { request }
            | Recorded::Wait100Continue { request }
            | Recorded::WroteRequest { request, .. } => Some(request),
            _ => None,
        }
    }

    /// The connection id the event is about, where there is one.
    #[must_use]
    pub fn id(&self) -> Option<ConnectionId> {
        match self {
            Recorded::Accept { connection, .. } | Recorded::Dial { connection, .. } => {
                connection.as_ref().map(|c| c.id)
            }
            Recorded::TlsHandshakeStart { id, .. }
            | Recorded::TlsHandshakeDone { id, .. }
            | Recorded::Read { id, .. }
            | Recorded::Write { id, .. } => Some(*id),
            Recorded::Close { connection, .. } | Recorded::GotConn { connection, .. } => {
                Some(connection.id)
            }
            Recorded::PutIdleConn { id, .. } | Recorded::ServerExchange { id, .. } => Some(*id),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    events: Vec<Recorded>,
    wakers: Vec<Waker>,
}

struct Inner {
    io: bool,
    state: Mutex<State>,
    changed: Condvar,
}

/// A hook that keeps every event it sees, in order, and lets a test wait for one.
///
/// Clones share one record, so install one clone and keep another to inspect. Modelled on
/// `metrics`' `DebuggingRecorder`.
///
/// ```
/// use conntrack_core::{Registration, RecordingHook, Role, Tracker};
/// use std::time::Duration;
///
/// let rec = RecordingHook::new();
/// let tracker = Tracker::builder().hook(rec.clone()).build();
/// drop(tracker.register(Registration::new(Role::Server)));
/// let events = rec.wait_for(|ev| ev.iter().any(|e| e.name() == "close"), Duration::from_secs(5));
/// assert_eq!(rec.names(), ["accept", "close"]);
/// # assert!(events.is_ok());
/// ```
#[derive(Clone)]
pub struct RecordingHook {
    inner: Arc<Inner>,
}

impl Default for RecordingHook {
    fn default() -> Self {
        RecordingHook::new()
    }
}

impl fmt::Debug for RecordingHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingHook")
            .field("events", &self.lock().events.len())
            .finish()
    }
}

impl RecordingHook {
    /// Records every event except per-I/O reads and writes.
    #[must_use]
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Records reads and writes too (which turns on per-I/O events for what it is installed on).
    #[must_use]
    pub fn with_io() -> Self {
        Self::build(true)
    }

    fn build(io: bool) -> Self {
        RecordingHook {
            inner: Arc::new(Inner {
                io,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, ev: Recorded) {
        let wakers = {
            let mut s = self.lock();
            s.events.push(ev);
            std::mem::take(&mut s.wakers)
        };
        self.inner.changed.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Every event so far, in order.
    #[must_use]
    pub fn events(&self) -> Vec<Recorded> {
        self.lock().events.clone()
    }

    /// The names of every event so far, in order (see [`Recorded::name`]).
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.lock().events.iter().map(Recorded::name).collect()
    }

    /// How many events of a name were seen.
    #[must_use]
    pub fn count(&self, name: &str) -> usize {
        self.lock()
            .events
            .iter()
            .filter(|e| e.name() == name)
            .count()
    }

    /// Forgets every event so far.
    pub fn clear(&self) {
        self.lock().events.clear();
    }

    /// Blocks until `pred` holds for the events so far, or `timeout` passes. Returns the
    /// events either way: `Ok` if `pred` held, `Err` on timeout.
    ///
    /// # Errors
    ///
    /// `Err(events)` if `timeout` passed first.
    pub fn wait_for(
        &self,
        mut pred: impl FnMut(&[Recorded]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Recorded>, Vec<Recorded>> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if pred(&s.events) {
                return Ok(s.events.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(s.events.clone());
            }
            s = self
                .inner
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A future that resolves with the events once `pred` holds for them. Runtime-agnostic;
    /// wrap it in your runtime's timeout.
    pub fn until<P: FnMut(&[Recorded]) -> bool + Unpin>(&self, pred: P) -> Until<P> {
        Until {
            hook: self.clone(),
            pred,
        }
    }
}

/// The future returned by [`RecordingHook::until`].
#[must_use = "futures do nothing unless polled"]
pub struct Until<P> {
    hook: RecordingHook,
    pred: P,
}

impl<P> fmt::Debug for Until<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Until").finish_non_exhaustive()
    }
}

impl<P: FnMut(&[Recorded]) -> bool + Unpin> Future for Until<P> {
    type Output = Vec<Recorded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<Recorded>> {
        let this = self.get_mut();
        let mut s = this.hook.lock();
        if (this.pred)(&s.events) {
            return Poll::Ready(s.events.clone());
        }
        s.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

fn owned_addrs(a: &[SocketAddr]) -> Vec<SocketAddr> {
    a.to_vec()
}

impl From<&AcceptEvent<'_>> for Recorded {
    fn from(ev: &AcceptEvent<'_>) -> Self {
        Recorded::Accept {
            category: ev.category.to_owned(),
            connection: ev.connection.cloned(),
            error: RecordedError::from(ev.error),
            rejected: ev.rejected,
        }
    }
}

impl From<&DialEvent<'_>> for Recorded {
    fn from(ev: &DialEvent<'_>) -> Self {
        Recorded::Dial {
            category: ev.category.to_owned(),
            target: ev.target.to_owned(),
            connection: ev.connection.cloned(),
            error: RecordedError::from(ev.error),
            duration: ev.duration,
        }
    }
}

impl From<&DnsStartEvent<'_>> for Recorded {
    fn from(ev: &DnsStartEvent<'_>) -> Self {
        Recorded::DnsStart {
            host: ev.host.to_owned(),
        }
    }
}

impl From<&DnsDoneEvent<'_>> for Recorded {
    fn from(ev: &DnsDoneEvent<'_>) -> Self {
        Recorded::DnsDone {
            host: ev.host.to_owned(),
            addrs: owned_addrs(ev.addrs),
            error: RecordedError::from(ev.error),
            duration: ev.duration,
            coalesced: ev.coalesced,
        }
    }
}

impl From<&ConnectStartEvent<'_>> for Recorded {
    fn from(ev: &ConnectStartEvent<'_>) -> Self {
        Recorded::ConnectStart {
            addr: ev.addr.clone(),
        }
    }
}

impl From<&ConnectDoneEvent<'_>> for Recorded {
    fn from(ev: &ConnectDoneEvent<'_>) -> Self {
        Recorded::ConnectDone {
            addr: ev.addr.clone(),
            error: RecordedError::from(ev.error),
            duration: ev.duration,
        }
    }
}

impl From<&TlsHandshakeStartEvent<'_>> for Recorded {
    fn from(ev: &TlsHandshakeStartEvent<'_>) -> Self {
        Recorded::TlsHandshakeStart {
            id: ev.connection.id,
            server_name: ev.server_name.map(str::to_owned),
        }
    }
}

impl From<&TlsHandshakeDoneEvent<'_>> for Recorded {
    fn from(ev: &TlsHandshakeDoneEvent<'_>) -> Self {
        Recorded::TlsHandshakeDone {
            id: ev.connection.id,
            tls: ev.tls.cloned(),
            error: RecordedError::from(ev.error),
            duration: ev.duration,
        }
    }
}

impl From<&ReadEvent<'_>> for Recorded {
    fn from(ev: &ReadEvent<'_>) -> Self {
        Recorded::Read {
            id: ev.id,
            n: ev.n,
            error: RecordedError::from(ev.error),
        }
    }
}

impl From<&WriteEvent<'_>> for Recorded {
    fn from(ev: &WriteEvent<'_>) -> Self {
        Recorded::Write {
            id: ev.id,
            n: ev.n,
            error: RecordedError::from(ev.error),
        }
    }
}

impl From<&CloseEvent<'_>> for Recorded {
    fn from(ev: &CloseEvent<'_>) -> Self {
        Recorded::Close {
            connection: ev.connection.clone(),
            error: RecordedError::from(ev.error),
            reason: ev.reason,
        }
    }
}

impl From<&GetConnEvent<'_>> for Recorded {
    fn from(ev: &GetConnEvent<'_>) -> Self {
        Recorded::GetConn {
            request: ev.request.clone(),
            host_port: ev.host_port.to_owned(),
        }
    }
}
impl From<&GotConnEvent<'_>> for Recorded {
    fn from(ev: &GotConnEvent<'_>) -> Self {
        Recorded::GotConn {
            request: ev.request.clone(),
            connection: ev.connection.clone(),
            reused: ev.reused,
            was_idle: ev.was_idle,
            idle_time: ev.idle_time,
        }
    }
}
impl From<&PutIdleConnEvent<'_>> for Recorded {
    fn from(ev: &PutIdleConnEvent<'_>) -> Self {
        Recorded::PutIdleConn {
            request: ev.request.clone(),
            id: ev.id,
            error: RecordedError::from(ev.error),
        }
    }
}
impl From<&GotFirstResponseByteEvent<'_>> for Recorded {
    fn from(ev: &GotFirstResponseByteEvent<'_>) -> Self {
        Recorded::GotFirstResponseByte {
            request: ev.request.clone(),
            elapsed: ev.elapsed,
        }
    }
}
impl From<&Got100ContinueEvent<'_>> for Recorded {
    fn from(ev: &Got100ContinueEvent<'_>) -> Self {
        Recorded::Got100Continue {
            request: ev.request.clone(),
        }
    }
}
impl From<&Got1xxResponseEvent<'_>> for Recorded {
    fn from(ev: &Got1xxResponseEvent<'_>) -> Self {
        Recorded::Got1xxResponse {
            request: ev.request.clone(),
            status: ev.status,
            headers: ev
                .headers
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
        }
    }
}
impl From<&WroteHeaderFieldEvent<'_>> for Recorded {
    fn from(ev: &WroteHeaderFieldEvent<'_>) -> Self {
        Recorded::WroteHeaderField {
            request: ev.request.clone(),
            name: ev.name.to_vec(),
            value: ev.value.to_vec(),
        }
    }
}
impl From<&WroteHeadersEvent<'_>> for Recorded {
    fn from(ev: &WroteHeadersEvent<'_>) -> Self {
        Recorded::WroteHeaders {
            request: ev.request.clone(),
        }
    }
}
impl From<&Wait100ContinueEvent<'_>> for Recorded {
    fn from(ev: &Wait100ContinueEvent<'_>) -> Self {
        Recorded::Wait100Continue {
            request: ev.request.clone(),
        }
    }
}
impl From<&WroteRequestEvent<'_>> for Recorded {
    fn from(ev: &WroteRequestEvent<'_>) -> Self {
        Recorded::WroteRequest {
            request: ev.request.clone(),
            error: RecordedError::from(ev.error),
        }
    }
}

impl From<&ServerExchangeEvent<'_>> for Recorded {
    fn from(ev: &ServerExchangeEvent<'_>) -> Self {
        Recorded::ServerExchange {
            id: ev.id,
            method: ev.method.to_owned(),
            route: ev.route.map(str::to_owned),
            version: ev.version.to_owned(),
            status: ev.status,
            grpc_status: ev.grpc_status,
            completed: ev.completed,
            waiting: ev.waiting,
            request_head: ev.request_head,
            request_body: ev.request_body,
            handler: ev.handler,
            response_write: ev.response_write,
            total: ev.total,
            bytes_read: ev.bytes_read,
            bytes_written: ev.bytes_written,
        }
    }
}

macro_rules! recording_hook {
    ($($(#[$doc:meta])* $method:ident($ev:ident) io=$io:tt listener=$l:tt dialer=$d:tt;)*) => {
        impl Hook for RecordingHook {
            $(fn $method(&self, ev: &$ev<'_>) {
                self.push(Recorded::from(ev));
            })*
            fn wants_io_events(&self) -> bool {
                self.inner.io
            }
        }
    };
}
for_each_event!(recording_hook);
