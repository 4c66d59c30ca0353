//! [`RequestTrace`]: reporting one HTTP request's phases (httptrace's `ClientTrace` events)
//! from an HTTP client integration.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::hooks::hook::{for_each_event, Chain, Hook, Hooks};
use crate::hooks::trace;
use crate::record::event::*;
use crate::track::activity::{Marks, RawTiming};
use crate::track::clock;
use crate::track::connection::{ConnectionRef, ExchangeStart, IoWatch};
use crate::track::state::TrackerInner;
use crate::track::tracker::Tracker;

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// The method as shared text: the standard methods' are made once per process, so tracing a
/// request allocates nothing for its method.
fn method_text(method: &str) -> Arc<str> {
    static STANDARD: std::sync::OnceLock<[Arc<str>; 9]> = std::sync::OnceLock::new();
    const NAMES: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    let standard = STANDARD.get_or_init(|| NAMES.map(Arc::from));
    match NAMES.iter().position(|m| *m == method) {
        Some(i) => Arc::clone(&standard[i]),
        None => Arc::from(method),
    }
}

/// One HTTP request being traced, from [`Tracker::request`].
///
/// An HTTP client integration (conntrack-tokio's `TracedClient`, or your own) reports each
/// phase of a request through it; the events go to the hooks of the [`trace`] scope that was
/// current when the request began, then to any hook given to
/// [`Tracker::request_with_hook`], then to the tracker's hooks. Every method fires its event
/// at most once and is cheap when no hook is installed.
///
/// Once the request has its connection ([`got_conn`](RequestTrace::got_conn)), the
/// connection counts it as an exchange (`requests`, `in_flight`, `state` in
/// [`ConnectionInfo`](crate::ConnectionInfo)) until [`finish`](RequestTrace::finish), or until
/// the last clone of the trace drops.
///
/// When a request that got a connection finishes, its phases (blocked, DNS, connect, TLS,
/// send, wait, transfer; see [`RequestTiming`](crate::RequestTiming)) go to the tracker's
/// bounded ring of recent requests ([`Tracker::recent_requests`]), which the debug page draws
/// as a waterfall: the event times are taken whether or not a hook is installed.
///
/// With `watch_io`, `got_conn` also watches the connection's I/O for the request (with or
/// without hooks, for those times): the first
/// write that completes fires `on_wrote_header_field` for each stored field and then
/// `on_wrote_headers`; the first write completing after [`body_done`](RequestTrace::body_done)
/// fires `on_wrote_request` (as does a failed write, with its error); the first read fires
/// `on_got_first_response_byte` (after `on_wrote_request` if the body was done). That fits a
/// connection carrying one request at a time (HTTP/1); a multiplexed one (HTTP/2) reports
/// those phases itself with [`wrote_headers`](RequestTrace::wrote_headers),
/// [`wrote_request`](RequestTrace::wrote_request) and
/// [`got_first_response_byte`](RequestTrace::got_first_response_byte).
///
/// ```
/// use conntrack_core::{Registration, RecordingHook, Role, Tracker};
///
/// let rec = RecordingHook::new();
/// let tracker = Tracker::builder().hook(rec.clone()).build();
/// let conn = tracker.register(Registration::new(Role::Client));
/// let req = tracker.request("GET", "http://example.com/");
/// req.get_conn("example.com:80");
/// let got = req.got_conn(conn.downgrade(), false);
/// assert!(!got.reused);
/// req.wrote_headers();
/// req.wrote_request(None);
/// req.got_first_response_byte();
/// req.put_idle_conn(None);
/// req.finish();
/// assert_eq!(conn.info().requests, 1);
/// assert_eq!(
///     &rec.names()[1..],
///     ["get_conn", "got_conn", "wrote_headers", "wrote_request", "got_first_response_byte", "put_idle_conn"]
/// );
/// ```
#[derive(Clone)]
pub struct RequestTrace {
    inner: Arc<Inner>,
}

struct Inner {
    tracker: Arc<TrackerInner>,
    chain: Chain,
    info: RequestInfo,
    started: u64,
    conn: Mutex<Option<ConnectionRef>>,
    fields: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    wrote_headers: AtomicBool,
    body_done: AtomicBool,
    wrote_request: AtomicBool,
    first_byte: AtomicBool,
    put_idle: AtomicBool,
    got_100: AtomicBool,
    finished: AtomicBool,
    /// The hooks lent to connections dialed for this request, closed at the end; made when a
    /// dial or a connection first asks for them.
    gate: Mutex<Option<Arc<Gate>>>,
    /// Whether `gate` was ever filled (so a request without one takes no lock to close it).
    has_gate: AtomicBool,
    /// When `got_conn`, `wrote_request` (or failing that `wrote_headers`) and the first
    /// response byte happened, nanos on the process clock (`NO_MARK`: not yet).
    marks: [AtomicU64; 5],
    /// Whether the connection was reused, and the dial phases of a new one.
    dial: Mutex<(bool, [Option<Duration>; 3])>,
    /// When the request finished (the response body ended), nanos on the process clock.
    finished_at: AtomicU64,
}

/// A request's phase durations, in the manner of curl's `-w` timings or a HAR entry: what a
/// service logs for a slow request. From [`RequestTrace::timings`]; conntrack-tokio's
/// `TracedClient` puts the request's [`RequestTrace`] in each response's extensions.
///
/// Every duration but the establishment phases is measured from the start of the request, so
/// they only grow: `wait <= request_written <= first_byte <= total`. `dns`, `connect` and
/// `tls` are the new connection's (they happened during `wait`); a reused connection has none.
/// A phase not reached (yet) is `None`; `total` is set when the response body has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RequestTimings {
    /// Whether the request went over a pooled connection; `None` before it had one.
    pub reused: Option<bool>,
    /// Waiting for a connection: pool checkout, or the whole dial of a new one.
    pub wait: Option<Duration>,
    /// Name resolution of the new connection.
    pub dns: Option<Duration>,
    /// TCP connect of the new connection.
    pub connect: Option<Duration>,
    /// TLS handshake of the new connection.
    pub tls: Option<Duration>,
    /// Until the whole request was written.
    pub request_written: Option<Duration>,
    /// Until the first byte of the server's answer (time to first byte): the first response
    /// byte after the request was written. An interim `100 Continue` before the body went
    /// out does not count here (it does for `on_got_first_response_byte`, as in Go).
    pub first_byte: Option<Duration>,
    /// Until the response body ended.
    pub total: Option<Duration>,
}

impl fmt::Display for RequestTimings {
    /// One line: `wait 3.1ms (dns 0.4ms connect 0.2ms tls 2.1ms) written 3.3ms first byte
    /// 4.8ms total 5.0ms, new connection`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn ms(d: Duration) -> String {
            format!("{:.1}ms", d.as_secs_f64() * 1000.0)
        }
        let mut parts = Vec::new();
        if let Some(w) = self.wait {
            let mut s = format!("wait {}", ms(w));
            let dial: Vec<String> = [
                ("dns", self.dns),
                ("connect", self.connect),
                ("tls", self.tls),
            ]
            .into_iter()
            .filter_map(|(n, d)| d.map(|d| format!("{n} {}", ms(d))))
            .collect();
            if !dial.is_empty() {
                s.push_str(&format!(" ({})", dial.join(" ")));
            }
            parts.push(s);
        }
        for (name, d) in [
            ("written", self.request_written),
            ("first byte", self.first_byte),
            ("total", self.total),
        ] {
            if let Some(d) = d {
                parts.push(format!("{name} {}", ms(d)));
            }
        }
        f.write_str(&parts.join(" "))?;
        match self.reused {
            Some(true) => f.write_str(", reused connection"),
            Some(false) => f.write_str(", new connection"),
            None => Ok(()),
        }
    }
}

const NO_MARK: u64 = u64::MAX;
const GOT_CONN: usize = 0;
const WROTE_HEADERS: usize = 1;
const WROTE_REQUEST: usize = 2;
const FIRST_BYTE: usize = 3;
/// The first response byte read once the request was written: the first byte for the timings
/// (with `Expect: 100-continue` the `100 Continue` comes before the body is sent; it is the
/// first byte for `on_got_first_response_byte`, as in Go, but not the server's answer).
const RESPONSE_BYTE: usize = 4;

impl Tracker {
    /// Starts tracing an HTTP request, capturing the current [`trace`] scope's hooks.
    pub fn request(&self, method: &str, uri: &str) -> RequestTrace {
        RequestTrace::new(self, method, uri, trace::current())
    }

    /// [`request`](Tracker::request), with `hook` called after the scope's hooks (an HTTP
    /// client's own hooks).
    pub fn request_with_hook(&self, method: &str, uri: &str, hook: Arc<dyn Hook>) -> RequestTrace {
        self.request_with_hooks(method, uri, &RequestHooks::new([hook]))
    }

    /// [`request`](Tracker::request), with `hooks` called after the scope's hooks: an HTTP
    /// client's own hooks, prepared once for all its requests (no allocation per request for
    /// them).
    pub fn request_with_hooks(
        &self,
        method: &str,
        uri: &str,
        hooks: &RequestHooks,
    ) -> RequestTrace {
        let chain = hooks.chain.prepend(&trace::current());
        RequestTrace::new(self, method, uri, chain)
    }
}

/// Hooks for many requests, prepared once (see [`Tracker::request_with_hooks`]): an HTTP
/// client keeps its own hooks this way. Cloning one is a reference count.
///
/// ```
/// use std::sync::Arc;
/// use conntrack_core::{Callbacks, Hook, RequestHooks, Tracker};
///
/// let tracker = Tracker::new();
/// let hook: Arc<dyn Hook> = Arc::new(Callbacks::new().on_get_conn(|ev| println!("{}", ev.host_port)));
/// let hooks = RequestHooks::new([hook]);
/// let trace = tracker.request_with_hooks("GET", "http://example.test/", &hooks);
/// trace.get_conn("example.test:80");
/// ```
#[derive(Clone, Default)]
pub struct RequestHooks {
    chain: Chain,
}

impl RequestHooks {
    /// The hooks, called in this order.
    pub fn new(hooks: impl IntoIterator<Item = Arc<dyn Hook>>) -> Self {
        RequestHooks {
            chain: Chain::new(hooks.into_iter().collect()),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }
}

impl fmt::Debug for RequestHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHooks")
            .field("len", &self.chain.hooks().len())
            .finish()
    }
}

impl RequestTrace {
    fn new(tracker: &Tracker, method: &str, uri: &str, chain: Chain) -> Self {
        RequestTrace {
            inner: Arc::new(Inner {
                tracker: Arc::clone(&tracker.inner),
                chain,
                info: RequestInfo {
                    id: NEXT_REQUEST.fetch_add(1, Ordering::Relaxed),
                    method: method_text(method),
                    uri: Arc::from(uri),
                },
                started: clock::now_nanos(),
                conn: Mutex::new(None),
                fields: Mutex::new(Vec::new()),
                wrote_headers: AtomicBool::new(false),
                body_done: AtomicBool::new(false),
                wrote_request: AtomicBool::new(false),
                first_byte: AtomicBool::new(false),
                put_idle: AtomicBool::new(false),
                got_100: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                gate: Mutex::new(None),
                has_gate: AtomicBool::new(false),
                marks: std::array::from_fn(|_| AtomicU64::new(NO_MARK)),
                dial: Mutex::new((false, [None; 3])),
                finished_at: AtomicU64::new(NO_MARK),
            }),
        }
    }

    /// The request's method, URI and id.
    #[must_use]
    pub fn info(&self) -> &RequestInfo {
        &self.inner.info
    }

    /// Whether any hook would see this request's events (to skip building them): some hook
    /// of its scope, its client or the tracker wants request events
    /// ([`Hook::wants_request_events`]).
    #[must_use]
    pub fn has_hooks(&self) -> bool {
        self.inner.tracker.wants_requests(&self.inner.chain)
    }

    /// Whether the tracker keeps the phases of finished requests
    /// ([`TrackerBuilder::recent_requests`](crate::TrackerBuilder::recent_requests)): an HTTP
    /// client then watches the request's I/O for its write and first-byte times even when no
    /// hook wants its events.
    #[must_use]
    pub fn records_phases(&self) -> bool {
        self.inner.tracker.activity.keeps_requests()
    }

    /// Time since the request began.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        clock::since(self.inner.started)
    }

    /// The connection the request got, once it has one.
    #[must_use]
    pub fn connection(&self) -> Option<ConnectionRef> {
        lock(&self.inner.conn).clone()
    }

    /// The scope to dial a connection for this request in (see [`trace::Captured`]): the
    /// DNS, connect and TLS events of a connection dialed inside it, and its other connection
    /// events, go to this request's hooks (its trace scope's and its own) **until the request
    /// finishes**, and never after, so a pooled connection does not keep reporting to the
    /// request that dialed it. Empty when the request has no hooks of its own.
    #[must_use]
    pub fn dial_scope(&self) -> trace::Captured {
        if self.inner.chain.is_empty() {
            return trace::Captured::default();
        }
        // The gate is made only if a connection is dialed or registered in the scope: a
        // request on a pooled connection makes none. Held weakly: a dial left running in the
        // background (its connection raced a pooled one) does not keep the request alive. The
        // hooks made live as long as the scope is held (the future polled in it, a captured
        // copy), as before they were made lazily: a connection dialed for the request reports
        // to it no longer than that, and never after the request ends (the gate closes).
        let inner: Arc<dyn trace::LazyScope> = Arc::clone(&self.inner) as _;
        trace::Captured::lazy(Arc::downgrade(&inner))
    }

    /// The request is about to get a connection to `host_port` (`on_get_conn`).
    pub fn get_conn(&self, host_port: &str) {
        let request = &self.inner.info;
        self.inner
            .fire(&mut |h| h.on_get_conn(&GetConnEvent { request, host_port }));
    }

    /// The request's phase durations so far (see [`RequestTimings`]).
    #[must_use]
    pub fn timings(&self) -> RequestTimings {
        let i = &*self.inner;
        let at = |which: usize| i.mark_at(which).map(Duration::from_nanos);
        let wait = at(GOT_CONN);
        let (reused, dial) = *lock(&i.dial);
        let finished = i.finished_at.load(Ordering::Acquire);
        RequestTimings {
            reused: wait.map(|_| reused),
            wait,
            dns: dial[0],
            connect: dial[1],
            tls: dial[2],
            request_written: at(WROTE_REQUEST),
            first_byte: i.response_byte_at().map(Duration::from_nanos),
            total: (finished != NO_MARK)
                .then(|| Duration::from_nanos(finished.saturating_sub(i.started))),
        }
    }

    /// The request got `conn` (`on_got_conn`): begins an exchange on it and reports whether it
    /// was reused and how long it had been idle. With `watch_io`, the connection's I/O drives
    /// the write and first-byte events (see the type's docs).
    pub fn got_conn(&self, conn: ConnectionRef, watch_io: bool) -> ExchangeStart {
        let now = self.inner.mark(GOT_CONN);
        let start = conn.entry.begin_exchange_at(Some(now));
        {
            let t = conn.entry.timings();
            *lock(&self.inner.dial) = if start.reused {
                (true, [None; 3])
            } else {
                (false, [t.dns, t.connect, t.tls_handshake])
            };
        }
        if watch_io {
            // Also without hooks: the phase times feed the tracker's request timings.
            let watch: Weak<dyn IoWatch> = Arc::downgrade(&self.inner) as _;
            conn.entry.set_watcher(Some(watch));
        }
        if self.has_hooks() {
            let info = conn.entry.event_info_at(now);
            let request = &self.inner.info;
            self.inner.fire(&mut |h| {
                h.on_got_conn(&GotConnEvent {
                    request,
                    connection: &info,
                    reused: start.reused,
                    was_idle: start.was_idle,
                    idle_time: start.idle_time,
                });
            });
        }
        let old = lock(&self.inner.conn).replace(conn);
        if let Some(old) = old {
            // A second connection for one request: the first one's exchange is over.
            old.entry.clear_watcher_of(self.inner.owner());
            old.end_exchange();
        }
        start
    }

    /// Keeps the request's header fields, reported one by one (`on_wrote_header_field`) just
    /// before `on_wrote_headers`. Cheap to skip when [`has_hooks`](RequestTrace::has_hooks)
    /// is `false`.
    pub fn set_header_fields(&self, fields: Vec<(Vec<u8>, Vec<u8>)>) {
        *lock(&self.inner.fields) = fields;
    }

    /// The request's headers were written (`on_wrote_header_field` for each stored field,
    /// then `on_wrote_headers`). Once only.
    pub fn wrote_headers(&self) {
        self.inner.wrote_headers();
    }

    /// The request body has been handed over completely (its last frame was read). The next
    /// completed write on a watched connection (or the first response byte) reports
    /// `on_wrote_request`.
    pub fn body_done(&self) {
        self.inner.body_done.store(true, Ordering::Release);
    }

    /// The request waits for `100 Continue` before sending its body (`on_wait_100_continue`).
    pub fn wait_100_continue(&self) {
        let request = &self.inner.info;
        self.inner
            .fire(&mut |h| h.on_wait_100_continue(&Wait100ContinueEvent { request }));
    }

    /// An informational response arrived (`on_got_1xx_response`, and `on_got_100_continue`
    /// first for a 100).
    pub fn got_1xx_response(&self, status: u16, headers: &[(&[u8], &[u8])]) {
        let request = &self.inner.info;
        if status == 100 && !self.inner.got_100.swap(true, Ordering::AcqRel) {
            self.inner
                .fire(&mut |h| h.on_got_100_continue(&Got100ContinueEvent { request }));
        }
        self.inner.fire(&mut |h| {
            h.on_got_1xx_response(&Got1xxResponseEvent {
                request,
                status,
                headers,
            });
        });
    }

    /// The whole request was written, or writing it failed (`on_wrote_request`). Once only.
    pub fn wrote_request(&self, error: Option<&io::Error>) {
        self.inner.wrote_request(error);
    }

    /// The first response byte arrived (`on_got_first_response_byte`). Once only.
    pub fn got_first_response_byte(&self) {
        self.inner.first_byte();
    }

    /// The connection went back to the idle pool (`error` `None`), or could not
    /// (`on_put_idle_conn`). Once only, and only once the request has a connection.
    pub fn put_idle_conn(&self, error: Option<&io::Error>) {
        let Some(conn) = self.connection() else {
            return;
        };
        if self.inner.put_idle.swap(true, Ordering::AcqRel) {
            return;
        }
        let request = &self.inner.info;
        let id = conn.id();
        self.inner.fire(&mut |h| {
            h.on_put_idle_conn(&PutIdleConnEvent { request, id, error });
        });
    }

    /// The request is over: ends its exchange on the connection and stops watching its I/O.
    /// Also done when the last clone drops.
    pub fn finish(&self) {
        self.inner.finish();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The precise clock, read when first asked and then the same for every mark of one I/O (the
/// headers and the request written by one write, the first byte read).
#[derive(Default)]
struct Reading(std::cell::Cell<Option<u64>>);

impl Reading {
    fn get(&self) -> u64 {
        match self.0.get() {
            Some(now) => now,
            None => {
                let now = clock::now_nanos();
                self.0.set(Some(now));
                now
            }
        }
    }
}

impl Inner {
    /// Marks event `which` now, once; returns the clock reading.
    fn mark(&self, which: usize) -> u64 {
        self.mark_with(which, &Reading::default())
    }

    /// [`mark`](Inner::mark), with the clock read at most once for all the marks of one I/O.
    fn mark_with(&self, which: usize, reading: &Reading) -> u64 {
        let now = reading.get();
        // Nothing happens to a request after its end (a late body write on HTTP/2, say).
        if !self.finished.load(Ordering::Acquire) {
            let _ = self.marks[which].compare_exchange(
                NO_MARK,
                now,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        now
    }

    /// When the server's answer began, for the timings: the first byte read after the request
    /// was written, else the first byte at all, never before the request was written (an
    /// early answer to a request whose body went out after it).
    fn response_byte_at(&self) -> Option<u64> {
        let first = self.mark_at(RESPONSE_BYTE).or(self.mark_at(FIRST_BYTE))?;
        Some(self.mark_at(WROTE_REQUEST).map_or(first, |w| first.max(w)))
    }

    /// An address identifying this request's I/O watch.
    fn owner(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// The event time `which`, in nanos since the request began.
    fn mark_at(&self, which: usize) -> Option<u64> {
        let t = self.marks[which].load(Ordering::Acquire);
        (t != NO_MARK).then(|| t.saturating_sub(self.started))
    }

    /// Keeps the finished request's marks in the tracker's ring, if it got a connection (the
    /// phases are worked out when the ring is read).
    fn record_timing(&self, conn: Option<crate::ConnectionId>, now: u64) {
        if !self.tracker.activity.keeps_requests() {
            return;
        }
        let Some(got_conn) = self.mark_at(GOT_CONN) else {
            return;
        };
        let finished = self.finished_at.load(Ordering::Acquire);
        let finish = if finished == NO_MARK { now } else { finished }.saturating_sub(self.started);
        let (reused, dial) = *lock(&self.dial);
        self.tracker.activity.push_request(RawTiming {
            id: self.info.id,
            method: Arc::clone(&self.info.method),
            uri: Arc::clone(&self.info.uri),
            connection: conn,
            reused,
            started: self.started,
            marks: Marks {
                got_conn: Some(got_conn),
                wrote_request: self.mark_at(WROTE_REQUEST).or(self.mark_at(WROTE_HEADERS)),
                first_byte: self.response_byte_at(),
                finish,
                dial,
            },
        });
    }

    fn fire(&self, f: &mut dyn FnMut(&dyn Hook)) {
        // A request's hooks hear nothing after its end.
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        if self.tracker.wants_requests(&self.chain) {
            self.tracker.fire(&self.chain, &mut |h| {
                if h.wants_request_events() {
                    f(h);
                }
            });
        }
    }

    fn wrote_headers(&self) {
        self.wrote_headers_with(&Reading::default());
    }

    fn wrote_headers_with(&self, reading: &Reading) {
        if self.wrote_headers.swap(true, Ordering::AcqRel) {
            return;
        }
        self.mark_with(WROTE_HEADERS, reading);
        let request = &self.info;
        let fields = std::mem::take(&mut *lock(&self.fields));
        for (name, value) in &fields {
            self.fire(&mut |h| {
                h.on_wrote_header_field(&WroteHeaderFieldEvent {
                    request,
                    name,
                    value,
                });
            });
        }
        self.fire(&mut |h| h.on_wrote_headers(&WroteHeadersEvent { request }));
    }

    fn wrote_request(&self, error: Option<&io::Error>) {
        self.wrote_request_with(error, &Reading::default());
    }

    fn wrote_request_with(&self, error: Option<&io::Error>, reading: &Reading) {
        if self.wrote_request.swap(true, Ordering::AcqRel) {
            return;
        }
        self.mark_with(WROTE_REQUEST, reading);
        let request = &self.info;
        self.fire(&mut |h| h.on_wrote_request(&WroteRequestEvent { request, error }));
    }

    fn first_byte(&self) {
        self.first_byte_with(&Reading::default());
    }

    fn first_byte_with(&self, reading: &Reading) {
        if self.wrote_request.load(Ordering::Acquire) {
            self.mark_with(RESPONSE_BYTE, reading);
        }
        if self.first_byte.swap(true, Ordering::AcqRel) {
            return;
        }
        let now = self.mark_with(FIRST_BYTE, reading);
        let request = &self.info;
        let elapsed = Duration::from_nanos(now.saturating_sub(self.started));
        self.fire(&mut |h| {
            h.on_got_first_response_byte(&GotFirstResponseByteEvent { request, elapsed });
        });
    }

    fn finish(&self) {
        // SeqCst, as `has_gate` below and in `LazyScope::chain`: either the gate's maker
        // sees the request finished, or this sees the gate.
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        let now = clock::now_nanos();
        let _ =
            self.finished_at
                .compare_exchange(NO_MARK, now, Ordering::AcqRel, Ordering::Relaxed);
        if self.has_gate.load(Ordering::SeqCst) {
            if let Some(gate) = lock(&self.gate).as_ref() {
                gate.close();
            }
        }
        let conn = lock(&self.conn).clone();
        if let Some(conn) = &conn {
            // Only its own watch: on HTTP/1 the connection may already carry the next request.
            conn.entry.clear_watcher_of(self.owner());
            conn.entry.end_exchange_at(now);
        }
        self.record_timing(conn.map(|c| c.id()), now);
    }
}

impl trace::LazyScope for Inner {
    fn chain(&self) -> Chain {
        let mut slot = lock(&self.gate);
        // SeqCst, with `finished` in `finish`: either the gate's maker sees the request
        // finished, or `finish` sees the gate (and closes it).
        self.has_gate.store(true, Ordering::SeqCst);
        if self.finished.load(Ordering::SeqCst) {
            // Asked for after the request ended (by a dial it left running): no hooks.
            return Chain::default();
        }
        let gate = slot.get_or_insert_with(|| {
            let mut hooks = Hooks::new();
            for h in self.chain.hooks() {
                hooks.push(Arc::clone(h));
            }
            Arc::new(Gate {
                io: self.chain.wants_io(),
                hooks: Mutex::new(Some(Arc::new(hooks))),
            })
        });
        Chain::new(vec![Arc::clone(gate) as Arc<dyn Hook>])
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A request's hooks, lent to the connections dialed for it until the request finishes.
struct Gate {
    io: bool,
    hooks: Mutex<Option<Arc<Hooks>>>,
}

impl Gate {
    fn open(&self) -> Option<Arc<Hooks>> {
        lock(&self.hooks).clone()
    }

    fn close(&self) {
        let old = lock(&self.hooks).take();
        drop(old);
    }
}

macro_rules! gate_hook {
    ($($(#[$doc:meta])* $method:ident($ev:ident) io=$io:tt listener=$l:tt dialer=$d:tt;)*) => {
        impl Hook for Gate {
            $(fn $method(&self, ev: &$ev<'_>) {
                if let Some(h) = self.open() {
                    h.$method(ev);
                }
            })*
            fn wants_io_events(&self) -> bool {
                self.io
            }
            // The dial scope carries connection events only: request events go to the
            // request's own chain.
            fn wants_request_events(&self) -> bool {
                false
            }
        }
    };
}
for_each_event!(gate_hook);

/// The I/O watch a request installs on its connection (held weakly there, so the connection
/// does not keep the request alive).
impl IoWatch for Inner {
    fn write(&self, n: usize, error: Option<&io::Error>) {
        let req = self;
        let reading = Reading::default();
        if let Some(e) = error {
            req.wrote_request_with(Some(e), &reading);
            return;
        }
        if n == 0 {
            return;
        }
        req.wrote_headers_with(&reading);
        if req.body_done.load(Ordering::Acquire) {
            req.wrote_request_with(None, &reading);
        }
    }

    fn read(&self, n: usize, error: Option<&io::Error>) {
        let req = self;
        if n == 0 || error.is_some() {
            return;
        }
        let reading = Reading::default();
        if req.body_done.load(Ordering::Acquire) {
            req.wrote_headers_with(&reading);
            req.wrote_request_with(None, &reading);
        }
        req.first_byte_with(&reading);
        // Nothing more to watch for this request, unless its body is still to be written (a
        // response can begin before that: `100 Continue`, or an early final answer).
        if !req.wrote_request.load(Ordering::Acquire) {
            return;
        }
        let conn = lock(&req.conn).clone();
        if let Some(conn) = conn {
            conn.entry.clear_watcher_of(req.owner());
        }
    }
}

impl fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTrace")
            .field("request", &self.inner.info)
            .field("connection", &*lock(&self.inner.conn))
            .finish_non_exhaustive()
    }
}
