//! [`Registration`] (what an integration knows about a new connection) and [`Connection`] (the
//! handle it gets back and drives).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Waker;
use std::time::Duration;

use crate::hooks::hook::{Chain, Hook, WeakChain};
use crate::record::event::{
    CloseEvent, ReadEvent, ServerExchangeEvent, TlsHandshakeDoneEvent, TlsHandshakeStartEvent,
    WriteEvent,
};
use crate::record::info::{
    Addr, CloseReason, ConnectionId, ConnectionInfo, Role, ServerExchangeProgress, ServerPhase,
    Timings, TlsInfo,
};
use crate::record::tcp_info::TcpStats;
use crate::track::clock::{self, Now};
use crate::track::config::{DialerConfig, ListenerConfig, Policy};
use crate::track::history::{Snapshot, NO_END};
use crate::track::limit::Limiter;
use crate::track::registry;
use crate::track::state::TrackerInner;

/// Everything known about a connection when it is handed to
/// [`Tracker::register`](crate::Tracker::register).
///
/// ```
/// use conntrack_core::Registration;
///
/// let reg = Registration::server("127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap(),
///                                "127.0.0.1:50000".parse::<std::net::SocketAddr>().unwrap())
///     .category("api");
/// # drop(reg);
/// ```
#[derive(Debug, Clone)]
pub struct Registration {
    pub(crate) role: Role,
    pub(crate) category: Option<Arc<str>>,
    pub(crate) local_addr: Addr,
    pub(crate) remote_addr: Addr,
    pub(crate) target: Option<Arc<str>>,
    /// The target is the remote address as text, made only when a record is built (set by
    /// [`Dial`](crate::Dial) for a dial of one address).
    pub(crate) target_is_remote: bool,
    pub(crate) timings: Timings,
    pub(crate) chain: Chain,
    /// The trace scope's hooks, when `scoped` (set by [`Dial`](crate::Dial), which captured
    /// the scope when the dial began); otherwise the scope current at registration is used.
    pub(crate) scope: Chain,
    /// `scope` holds the trace scope already.
    pub(crate) scoped: bool,
    /// When the dial started (nanos on the process clock), for `DialEvent::duration`.
    pub(crate) dial_started: Option<u64>,
    /// When the connection was established, if the integration just read the clock (the end
    /// of a dial's connect); else registration reads it.
    pub(crate) opened_at: Option<u64>,
    /// The idle timeout and maximum age of the config.
    pub(crate) policy: Policy,
    /// The limit slot this connection holds, given back at close.
    pub(crate) permit: Option<(Arc<Limiter>, Option<IpAddr>)>,
}

impl Registration {
    /// A connection with the given role and unknown addresses.
    #[must_use]
    pub fn new(role: Role) -> Self {
        Registration {
            role,
            category: None,
            local_addr: Addr::Unknown,
            remote_addr: Addr::Unknown,
            target: None,
            target_is_remote: false,
            timings: Timings::new(),
            chain: Chain::default(),
            scope: Chain::default(),
            scoped: false,
            dial_started: None,
            opened_at: None,
            policy: Policy::default(),
            permit: None,
        }
    }

    /// An accepted connection.
    pub fn server(local: impl Into<Addr>, remote: impl Into<Addr>) -> Self {
        Registration::new(Role::Server)
            .local_addr(local)
            .remote_addr(remote)
    }

    /// A dialed connection.
    pub fn client(local: impl Into<Addr>, remote: impl Into<Addr>) -> Self {
        Registration::new(Role::Client)
            .local_addr(local)
            .remote_addr(remote)
    }

    /// Sets the category.
    #[must_use]
    pub fn category(mut self, category: impl Into<Arc<str>>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// Sets this side's address.
    #[must_use]
    pub fn local_addr(mut self, addr: impl Into<Addr>) -> Self {
        self.local_addr = addr.into();
        self
    }

    /// Sets the peer's address.
    #[must_use]
    pub fn remote_addr(mut self, addr: impl Into<Addr>) -> Self {
        self.remote_addr = addr.into();
        self
    }

    /// Sets what was dialed.
    #[must_use]
    pub fn target(mut self, target: impl Into<Arc<str>>) -> Self {
        self.target = Some(target.into());
        self.target_is_remote = false;
        self
    }

    /// Sets the phase timings measured before registration.
    #[must_use]
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Adds a hook for this connection only; it runs after the config's hooks.
    #[must_use]
    pub fn hook(mut self, hook: impl Hook) -> Self {
        let mut v: Vec<Arc<dyn Hook>> = self.chain.hooks().to_vec();
        v.push(Arc::new(hook));
        self.chain = Chain::new(v);
        self
    }

    /// Takes the category and hooks of a listener config.
    #[must_use]
    pub fn listener_config(mut self, config: &ListenerConfig) -> Self {
        self.category = Some(Arc::clone(config.category_name()));
        self.chain = self.chain.prepend(config.chain());
        self.policy = config.policy();
        self
    }

    /// Sets an idle timeout for this connection (see
    /// [`ListenerConfig::idle_timeout`](crate::ListenerConfig::idle_timeout)).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.policy.idle_timeout = Some(timeout);
        self
    }

    /// Sets a maximum age for this connection (see
    /// [`ListenerConfig::max_age`](crate::ListenerConfig::max_age)).
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.policy.max_age = Some(age);
        self
    }

    /// Takes the category and hooks of a dialer config.
    #[must_use]
    pub fn dialer_config(mut self, config: &DialerConfig) -> Self {
        self.category = Some(Arc::clone(config.category_name()));
        self.chain = self.chain.prepend(config.chain());
        self.policy = config.policy();
        self
    }
}

const NO_TIME: u64 = u64::MAX;

fn dur_to_nanos(d: Option<Duration>) -> u64 {
    d.map_or(NO_TIME, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(NO_TIME - 1)
    })
}

fn nanos_to_dur(n: u64) -> Option<Duration> {
    (n != NO_TIME).then(|| Duration::from_nanos(n))
}

/// `last_io_ms` of a connection that has made no I/O yet: its idle time is its age.
const NO_IO: u64 = u64::MAX;

/// The rarely written parts of an entry.
#[derive(Default)]
struct Rare {
    tls: Option<Arc<TlsInfo>>,
    /// Server exchanges whose response waits for the connection's next flush.
    server_done: Vec<ServerExchangeData>,
    /// The timed server exchanges in progress, oldest first.
    live: Vec<Arc<Live>>,
    last_error: Option<io::Error>,
    /// An HTTP request watching this connection's I/O for its write/first-byte events.
    /// Held weakly: the connection does not keep the request alive.
    watcher: Option<Weak<dyn IoWatch>>,
    /// The tasks of the pending reads and of the pending writes, woken by an abort.
    read_wakers: Parked,
    write_wakers: Parked,
    /// What an abort calls to unblock blocking I/O (a socket shutdown).
    closer: Option<Box<dyn Fn() + Send + Sync>>,
    /// The socket an abort shuts down, while its stream lives (see
    /// [`Connection::shutdown_on_abort`]).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    abort_fd: Option<std::os::fd::RawFd>,
    /// More of them (each `try_clone` of a blocking stream registers its own descriptor of
    /// the one socket); empty while `abort_fd` is `None`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    more_abort_fds: Vec<std::os::fd::RawFd>,
    /// The connection's socket while its stream lives (see [`SocketGuard`]): an abort shuts
    /// it down, and TCP statistics are read from it when `tcp_stats`.
    #[cfg(unix)]
    sock_fd: Option<std::os::fd::RawFd>,
    /// How many [`SocketGuard`]s (the one `watch_socket` returned and its clones) keep
    /// `sock_fd` registered: the registration ends with the last of them.
    #[cfg(unix)]
    sock_refs: usize,
    /// Whether TCP statistics are read from `sock_fd`.
    #[cfg(unix)]
    tcp_stats: bool,
    /// The last TCP statistics read (the final ones once the socket is gone).
    tcp: Option<Arc<TcpStats>>,
}

impl Rare {
    /// The TCP statistics now: read from the socket while it is registered, else the last
    /// ones read.
    fn tcp_now(&mut self) -> Option<Arc<TcpStats>> {
        #[cfg(unix)]
        if let (Some(fd), true) = (self.sock_fd, self.tcp_stats) {
            match crate::record::tcp_info::sample(fd) {
                Some(s) => self.tcp = Some(Arc::new(s)),
                // Not a TCP socket (a Unix socket): never asked again.
                None => self.tcp_stats = false,
            }
        }
        self.tcp.clone()
    }
}

/// The tasks parked on one direction of a connection (by [`Connection::park_read`] or
/// [`Connection::park_write`]), for an abort to wake.
///
/// Clones of a stream (smol's and async-std's streams are `Clone`, and clones share the
/// connection) can each have a task blocked at once, so every task's waker is kept, a task
/// parking again only once (`Waker::will_wake`). The first lives inline: a connection polled by
/// one task never allocates here. The list holds at most [`Parked::MAX`]; a new task past that
/// pushes out the oldest waker, which is woken so that no task is forgotten (a task still
/// blocked polls again and parks anew; a finished one ignores the spurious wake-up).
#[derive(Default)]
struct Parked {
    first: Option<Waker>,
    /// The later ones, oldest first; empty while `first` is `None`.
    more: Vec<Waker>,
}

impl Parked {
    /// The most wakers kept per direction.
    const MAX: usize = 8;

    /// Keeps `waker` unless it is kept already; returns the waker pushed out to make room,
    /// for the caller to wake (outside its lock).
    fn park(&mut self, waker: &Waker) -> Option<Waker> {
        let Some(first) = &self.first else {
            self.first = Some(waker.clone());
            return None;
        };
        if first.will_wake(waker) || self.more.iter().any(|w| w.will_wake(waker)) {
            return None;
        }
        let out = if 1 + self.more.len() >= Self::MAX {
            let next = self.more.remove(0);
            self.first.replace(next)
        } else {
            None
        };
        self.more.push(waker.clone());
        out
    }

    /// Takes every waker, leaving the list empty.
    fn take(&mut self) -> impl Iterator<Item = Waker> {
        self.first
            .take()
            .into_iter()
            .chain(std::mem::take(&mut self.more))
    }
}

/// Something that wants to see a connection's completed reads and writes for a while (an HTTP
/// request's "wrote headers" / "first response byte"), without a per-I/O hook.
pub(crate) trait IoWatch: Send + Sync {
    /// A read finished with `n` bytes, or failed.
    fn read(&self, n: usize, error: Option<&io::Error>);
    /// A write finished with `n` bytes, or failed.
    fn write(&self, n: usize, error: Option<&io::Error>);
}

/// Who installed a watch (its address), so that only its owner takes it off: an HTTP/1
/// connection can be handed to the next request before the previous one has ended.
fn owner_of(w: &Weak<dyn IoWatch>) -> usize {
    w.as_ptr().cast::<()>() as usize
}

/// `Entry::watched`: an [`IoWatch`] is installed.
const WATCHER: u8 = 1;
/// `Entry::watched`: the next read is a request's first byte.
const FIRST_READ: u8 = 2;

/// The shared state of one connection. The registry holds one `Arc` to it and every
/// [`Connection`] handle another; `handles` counts only the handles.
pub(crate) struct Entry {
    pub(crate) id: u64,
    /// The shard this entry lives in; it also leads to the tracker's shared state.
    shard: Arc<registry::Shard<Entry>>,
    pub(crate) role: Role,
    pub(crate) local_addr: Addr,
    pub(crate) remote_addr: Addr,
    target: Option<Arc<str>>,
    /// The target is `remote_addr` as text (see [`Registration`]).
    target_is_remote: bool,
    pub(crate) opened_nanos: u64,
    read: AtomicU64,
    write: AtomicU64,
    last_io_ms: AtomicU64,
    dns: AtomicU64,
    connect: AtomicU64,
    tls_handshake: AtomicU64,
    /// What TLS negotiated and the last I/O error: rarely written, behind one plain mutex (an
    /// arc-swap cell for the TLS record cost a walk over every thread's debt list when dropped,
    /// the largest user-space cost of connection churn; one lock for both keeps the entry small).
    rare: Mutex<Rare>,
    handles: AtomicUsize,
    closed: AtomicBool,
    /// The index of this connection's (category, role) in the tracker's stat table.
    pub(crate) class: u32,
    /// Config hooks, then per-registration hooks.
    pub(crate) chain: Chain,
    /// The hooks of the trace scope the connection was made in, while that scope lives.
    scope: WeakChain,
    /// Whether `chain` wants per-I/O events, copied here so the hot path reads no other line.
    chain_io: bool,
    /// Whether an [`IoWatch`] is installed (`WATCHER`), and whether the next read's time is
    /// wanted as a request's first byte (`FIRST_READ`); read on the hot path next to
    /// `chain_io`, so the first-byte mark costs the hot path nothing.
    watched: AtomicU8,
    /// Exchanges (requests) begun on this connection.
    requests: AtomicU64,
    /// Exchanges begun and not yet ended.
    in_flight: AtomicU32,
    /// Exchanges whose response has been handed to the connection, ended by its next
    /// completed flush ([`Connection::end_exchange_when_flushed`]).
    ending: AtomicU32,
    /// Marked upgraded ([`Connection::mark_upgraded`]).
    upgraded: AtomicBool,
    /// Marked multiplexed ([`Connection::mark_multiplexed`]): the tracker never closes it
    /// before a shutdown's deadline.
    multiplexed: AtomicBool,
    /// `last_io_ms` as it was when the connection was aborted: I/O that the abort itself
    /// causes (a blocked read woken by the socket's shutdown returns end of stream) is not
    /// activity, so the record taken at close keeps the idle time that decided it.
    last_io_at_abort: AtomicU64,
    /// When the last exchange ended (ms on the process clock), `NO_END` before any did.
    exchange_end_ms: AtomicU64,
    /// When the first read after the `FIRST_READ` mark completed (process clock), 0: none.
    first_read_nanos: AtomicU64,
    /// When the last exchange ended (process clock), 0 before any did; with the bytes read and
    /// written then (the start of the next exchange's waiting phase).
    end_nanos: AtomicU64,
    read_at_end: AtomicU64,
    write_at_end: AtomicU64,
    /// Some server exchange record waits in `Rare::server_done` for a flush.
    server_queued: AtomicBool,
    /// The close reason decided by the tracker (`CloseReason::code`), 0 when none.
    reason: AtomicU8,
    /// Set by an abort: the stream's I/O fails from then on.
    aborted: AtomicBool,
    /// A read returned end of stream.
    eof: AtomicBool,
    /// The config turned TCP statistics off (`tcp_info(false)`).
    no_tcp_info: bool,
    /// The config asked for TCP statistics at close (`tcp_info_at_close(true)`).
    tcp_at_close: bool,
    /// A socket is registered that an abort shuts down ([`Connection::watch_socket`] or
    /// [`Connection::shutdown_on_abort`]): the kernel then wakes whoever is blocked on it, and
    /// a pending poll keeps no waker (read on the pending path only).
    sock_abort: AtomicBool,
    /// The idle timeout in ms and the maximum age in nanos, `u64::MAX` when unset.
    idle_limit_ms: u64,
    max_age_nanos: u64,
    /// The limit slot held, given back at close.
    permit: Option<(Arc<Limiter>, Option<IpAddr>)>,
}

impl Entry {
    // Inlined into its one caller, which puts the entry straight into its `Arc`.
    #[inline(always)]
    pub(crate) fn new(
        id: u64,
        shard: Arc<registry::Shard<Entry>>,
        reg: Registration,
        chain: Chain,
        scope: &Chain,
        class: u32,
    ) -> Self {
        let opened_nanos = reg.opened_at.unwrap_or_else(clock::now_nanos);
        // A server connection's first read is its first request's first byte, if timed.
        let first_read = reg.role == Role::Server
            && (shard.tracker.wants_servers(&chain) || scope.wants_servers());
        Entry {
            id,
            shard,
            role: reg.role,
            local_addr: reg.local_addr,
            remote_addr: reg.remote_addr,
            target: reg.target,
            target_is_remote: reg.target_is_remote,
            opened_nanos,
            read: AtomicU64::new(0),
            write: AtomicU64::new(0),
            last_io_ms: AtomicU64::new(NO_IO),
            dns: AtomicU64::new(dur_to_nanos(reg.timings.dns)),
            connect: AtomicU64::new(dur_to_nanos(reg.timings.connect)),
            tls_handshake: AtomicU64::new(dur_to_nanos(reg.timings.tls_handshake)),
            rare: Mutex::new(Rare::default()),
            handles: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            class,
            chain_io: chain.wants_io() || scope.wants_io(),
            chain,
            scope: scope.downgrade(),
            watched: AtomicU8::new(if first_read { FIRST_READ } else { 0 }),
            first_read_nanos: AtomicU64::new(0),
            end_nanos: AtomicU64::new(0),
            read_at_end: AtomicU64::new(0),
            write_at_end: AtomicU64::new(0),
            server_queued: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            ending: AtomicU32::new(0),
            upgraded: AtomicBool::new(false),
            multiplexed: AtomicBool::new(false),
            last_io_at_abort: AtomicU64::new(NO_IO),
            exchange_end_ms: AtomicU64::new(NO_END),
            reason: AtomicU8::new(0),
            aborted: AtomicBool::new(false),
            eof: AtomicBool::new(false),
            no_tcp_info: reg.policy.no_tcp_info,
            tcp_at_close: reg.policy.tcp_info_at_close,
            sock_abort: AtomicBool::new(false),
            idle_limit_ms: reg.policy.idle_timeout.map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }),
            max_age_nanos: dur_to_nanos(reg.policy.max_age),
            permit: reg.permit,
        }
    }

    /// Whether an idle timeout or a maximum age applies.
    pub(crate) fn has_policy(&self) -> bool {
        self.idle_limit_ms != u64::MAX || self.max_age_nanos != NO_TIME
    }

    /// When (nanos on the process clock) a policy may next close this connection, if ever,
    /// assuming no more I/O: the time to sleep to before checking again. `now` is the process
    /// clock and `now_ms` the coarse clock of `last_io_ms`, read together: the last I/O is
    /// placed on the process clock by how long ago it was on the coarse one (the two clocks
    /// have different origins).
    /// While an exchange is in flight the idle timeout does not run: the next look is one
    /// timeout from `now`.
    pub(crate) fn policy_deadline(&self, now: u64, now_ms: u64) -> Option<u64> {
        let mut at = None;
        if self.max_age_nanos != NO_TIME {
            at = Some(self.opened_nanos.saturating_add(self.max_age_nanos));
        }
        if self.idle_limit_ms != u64::MAX {
            let last = match self.last_io_ms.load(Ordering::Relaxed) {
                _ if self.in_flight.load(Ordering::Relaxed) > 0 => now,
                NO_IO => self.opened_nanos,
                ms => now.saturating_sub(now_ms.saturating_sub(ms).saturating_mul(1_000_000)),
            };
            let idle_at = last.saturating_add(self.idle_limit_ms.saturating_mul(1_000_000));
            at = Some(at.map_or(idle_at, |a: u64| a.min(idle_at)));
        }
        at
    }

    /// How late a check may come: 1/64 of the shortest policy, at least 1 ms, so that the
    /// connections due at about the same time close in one walk.
    pub(crate) fn policy_slack(&self) -> u64 {
        let idle = self.idle_limit_ms.saturating_mul(1_000_000);
        (idle.min(self.max_age_nanos) / 64).max(1_000_000)
    }

    /// Which policy, if any, closes this connection at `now` (nanos; `now_ms` on the coarse
    /// clock of `last_io_ms`).
    pub(crate) fn policy_due(&self, now: u64, now_ms: u64) -> Option<CloseReason> {
        if self.max_age_nanos != NO_TIME
            && now.saturating_sub(self.opened_nanos) >= self.max_age_nanos
        {
            return Some(CloseReason::MaxAge);
        }
        if self.idle_limit_ms != u64::MAX && self.in_flight.load(Ordering::Relaxed) == 0 {
            let idle_ms = match self.last_io_ms.load(Ordering::Relaxed) {
                NO_IO => now.saturating_sub(self.opened_nanos) / 1_000_000,
                ms => now_ms.saturating_sub(ms),
            };
            // Never idle for longer than it has existed: the coarse clock of the last I/O
            // may run a tick ahead of the process clock of the registration, and the record
            // of the close must show an idle time of at least the timeout.
            let age_ms = now.saturating_sub(self.opened_nanos) / 1_000_000;
            if idle_ms >= self.idle_limit_ms && age_ms >= self.idle_limit_ms {
                return Some(CloseReason::IdleTimeout);
            }
        }
        None
    }

    /// Whether a shutdown closes this connection now: it is between exchanges (it has had
    /// some, none is in flight) and the tracker closes it itself ([`Self::tracker_closes`]).
    pub(crate) fn is_idle_exchange(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.tracker_closes()
    }

    /// Whether a shutdown closes this connection itself once it is between exchanges: not an
    /// upgraded one (busy until the deadline), not a multiplexed one (its protocol may still
    /// hold response frames the tracker cannot see), and not a server connection once a
    /// shutdown signal was handed out (its server closes it, the protocol's way).
    fn tracker_closes(&self) -> bool {
        let closed_by_server = self.role == Role::Server && self.tracker().servers_close();
        !(self.upgraded.load(Ordering::Acquire)
            || self.multiplexed.load(Ordering::Relaxed)
            || closed_by_server)
    }

    /// Whether an exchange is in flight or the connection was upgraded: a shutdown waits for it.
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0 || self.upgraded.load(Ordering::Acquire)
    }

    /// Sets the close reason unless one is set already.
    fn set_reason(&self, reason: CloseReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// Fails the connection's I/O from now on, wakes its pending reads and writes, unblocks
    /// blocking I/O through its closer, and closes it with `reason`. Returns whether it was
    /// still open.
    pub(crate) fn abort(&self, reason: CloseReason) -> bool {
        if self.is_closed() {
            return false;
        }
        self.set_reason(reason);
        // Before anything is woken: see `last_io_at_abort`.
        self.last_io_at_abort
            .store(self.last_io_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        self.aborted.store(true, Ordering::SeqCst);
        let (mut r, mut w, closer) = {
            let mut rare = self.rare();
            // Under the lock: the stream's guard takes it before the stream closes the
            // descriptor, so this is still the connection's socket.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if let Some(fd) = rare.abort_fd.take() {
                crate::record::tcp_info::shutdown(fd);
                for fd in std::mem::take(&mut rare.more_abort_fds) {
                    crate::record::tcp_info::shutdown(fd);
                }
            } else if let Some(fd) = rare.sock_fd {
                crate::record::tcp_info::shutdown(fd);
            }
            (
                std::mem::take(&mut rare.read_wakers),
                std::mem::take(&mut rare.write_wakers),
                rare.closer.take(),
            )
        };
        if let Some(c) = closer {
            c();
        }
        // Every parked task: those of each clone of the stream, reading and writing.
        for w in r.take().chain(w.take()) {
            w.wake();
        }
        self.close();
        true
    }

    /// The error an aborted connection's I/O fails with.
    #[cold]
    fn aborted_error(&self) -> io::Error {
        let reason = CloseReason::from_code(self.reason.load(Ordering::Acquire))
            .unwrap_or(CloseReason::Aborted);
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("connection closed by the tracker ({reason})"),
        )
    }

    /// Keeps `waker` to wake on abort; fails if the connection was aborted meanwhile.
    fn park(&self, waker: &Waker, write: bool) -> io::Result<()> {
        let pushed_out = {
            let mut rare = self.rare();
            if write {
                rare.write_wakers.park(waker)
            } else {
                rare.read_wakers.park(waker)
            }
        };
        if let Some(w) = pushed_out {
            w.wake();
        }
        // SeqCst with the store in `abort`: it either finds this waker or this load sees it.
        if self.aborted.load(Ordering::SeqCst) {
            return Err(self.aborted_error());
        }
        Ok(())
    }

    pub(crate) fn tracker(&self) -> &TrackerInner {
        &self.shard.tracker
    }

    /// The category name (a reference-count increment: off the register/close fast path).
    pub(crate) fn category(&self) -> Arc<str> {
        self.tracker()
            .stats
            .with(self.class, |c| Arc::clone(&c.category))
    }

    fn rare(&self) -> std::sync::MutexGuard<'_, Rare> {
        self.rare.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tls(&self) -> Option<Arc<TlsInfo>> {
        self.rare().tls.clone()
    }

    fn set_tls(&self, tls: TlsInfo) {
        self.rare().tls = Some(Arc::new(tls));
    }

    /// Whether the close has begun (its bytes are then in, or on their way to, the totals).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn read_bytes(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub(crate) fn write_bytes(&self) -> u64 {
        self.write.load(Ordering::Relaxed)
    }

    pub(crate) fn timings(&self) -> Timings {
        Timings {
            dns: nanos_to_dur(self.dns.load(Ordering::Relaxed)),
            connect: nanos_to_dur(self.connect.load(Ordering::Relaxed)),
            tls_handshake: nanos_to_dur(self.tls_handshake.load(Ordering::Relaxed)),
        }
    }

    /// The record as of `now` (one clock read serves a whole snapshot). TCP statistics are
    /// read from the socket here, while it is registered.
    pub(crate) fn info_at(&self, now: &Now) -> ConnectionInfo {
        self.info_with(now, true)
    }

    /// The record as of `now`; with `read_tcp` false the TCP statistics are the last ones
    /// read (no system call), for readers that do not show them (the metrics collector).
    pub(crate) fn info_with(&self, now: &Now, read_tcp: bool) -> ConnectionInfo {
        let (tls, tcp, live) = {
            let mut rare = self.rare();
            let tcp = if read_tcp {
                rare.tcp_now()
            } else {
                rare.tcp.clone()
            };
            (rare.tls.clone(), tcp, rare.live.first().cloned())
        };
        let mut info = self
            .snapshot(now.nanos, now.coarse_ms, tls, tcp)
            .into_info(self.category(), now);
        info.exchange = live.map(|l| l.progress(now.nanos));
        info
    }

    /// The state as of `now`, with `tls` and `tcp` as read from the entry. Copies only: no
    /// string is built and no shared reference count (such as the category's) is touched.
    fn snapshot(
        &self,
        now_nanos: u64,
        now_coarse_ms: u64,
        tls: Option<Arc<TlsInfo>>,
        tcp: Option<Arc<TcpStats>>,
    ) -> Snapshot {
        let mut s = Snapshot::blank();
        self.fill_snapshot(&mut s, now_nanos, now_coarse_ms, tls, tcp);
        s
    }

    /// Writes the connection's state as of `now_nanos` into `s` (a slot of the history, or a
    /// blank snapshot), field by field.
    fn fill_snapshot(
        &self,
        s: &mut Snapshot,
        now_nanos: u64,
        now_coarse_ms: u64,
        tls: Option<Arc<TlsInfo>>,
        tcp: Option<Arc<TcpStats>>,
    ) {
        let last_io_ms = if self.aborted.load(Ordering::Relaxed) {
            self.last_io_at_abort.load(Ordering::Relaxed)
        } else {
            self.last_io_ms.load(Ordering::Relaxed)
        };
        s.idle_ms = if last_io_ms == NO_IO {
            u64::MAX
        } else {
            now_coarse_ms.saturating_sub(last_io_ms)
        };
        s.id = self.id;
        s.class = self.class;
        s.role = self.role;
        s.local_addr.clone_from(&self.local_addr);
        s.remote_addr.clone_from(&self.remote_addr);
        s.target.clone_from(&self.target);
        s.target_is_remote = self.target_is_remote;
        s.opened_nanos = self.opened_nanos;
        s.at_nanos = now_nanos;
        s.read = self.read_bytes();
        s.write = self.write_bytes();
        s.timings = self.timings();
        s.tls = tls;
        s.requests = self.requests.load(Ordering::Relaxed);
        s.in_flight = self.in_flight.load(Ordering::Relaxed);
        s.upgraded = self.upgraded.load(Ordering::Relaxed);
        s.exchange_end_ms = self.exchange_end_ms.load(Ordering::Relaxed);
        s.tcp = tcp;
    }

    pub(crate) fn info(&self) -> ConnectionInfo {
        self.info_at(&Now::read())
    }

    /// The record an event carries: as of now, with the TCP statistics last read (no system
    /// call on the event's path; a hook wanting fresh ones reads the connection's `info()`).
    pub(crate) fn event_info(&self) -> ConnectionInfo {
        self.info_with(&Now::read(), false)
    }

    /// [`event_info`](Entry::event_info) as of `nanos`, the precise clock just read by the
    /// caller (not read again).
    pub(crate) fn event_info_at(&self, nanos: u64) -> ConnectionInfo {
        self.info_with(&Now::read_coarse_at(nanos), false)
    }

    /// Calls every hook for this connection: the trace scope's (while it lives), its own chain
    /// (config, registration), then the tracker's.
    pub(crate) fn fire(&self, f: &mut dyn FnMut(&dyn Hook)) {
        if self.scope.is_empty() {
            self.tracker().fire(&self.chain, f);
        } else {
            self.tracker()
                .fire_scoped(&self.scope.upgrade(), &self.chain, f);
        }
    }

    /// Whether any hook may want this connection's events.
    pub(crate) fn has_hooks(&self) -> bool {
        !self.scope.is_empty() || self.tracker().has_hooks(&self.chain)
    }

    #[inline]
    fn wants_io(&self) -> bool {
        self.chain_io || self.watched.load(Ordering::Relaxed) != 0 || self.tracker().wants_io()
    }

    /// Whether an [`IoWatch`] is installed.
    fn has_watcher(&self, order: Ordering) -> bool {
        self.watched.load(order) & WATCHER != 0
    }

    /// A read completed: if its time was wanted as a request's first byte, keep it (cold).
    fn mark_first_read(&self) {
        if self.watched.load(Ordering::Relaxed) & FIRST_READ != 0
            && self.watched.fetch_and(!FIRST_READ, Ordering::AcqRel) & FIRST_READ != 0
        {
            self.first_read_nanos
                .store(clock::now_nanos().max(1), Ordering::Relaxed);
        }
    }

    fn watcher(&self) -> Option<Arc<dyn IoWatch>> {
        if self.has_watcher(Ordering::Acquire) {
            self.rare().watcher.as_ref().and_then(Weak::upgrade)
        } else {
            None
        }
    }

    /// The watcher, for the connection's raw I/O: none once TLS is set on the connection, whose
    /// raw reads then also carry handshake records and session tickets, not only the
    /// application's data (the TLS layer reports that: [`Connection::record_app_read`]).
    fn raw_watcher(&self) -> Option<Arc<dyn IoWatch>> {
        if self.has_watcher(Ordering::Acquire) {
            let rare = self.rare();
            if rare.tls.is_some() {
                return None;
            }
            rare.watcher.as_ref().and_then(Weak::upgrade)
        } else {
            None
        }
    }

    /// Takes the watch off if `owner` installed it (see `owner_of`).
    pub(crate) fn clear_watcher_of(&self, owner: usize) {
        if !self.has_watcher(Ordering::Acquire) {
            return;
        }
        let mut rare = self.rare();
        if rare.watcher.as_ref().is_some_and(|w| owner_of(w) == owner) {
            self.watched.fetch_and(!WATCHER, Ordering::AcqRel);
            let old = rare.watcher.take();
            drop(rare);
            drop(old);
        }
    }

    pub(crate) fn set_watcher(&self, w: Option<Weak<dyn IoWatch>>) {
        if w.is_none() && !self.has_watcher(Ordering::Acquire) {
            return;
        }
        let mut rare = self.rare();
        if w.is_some() {
            self.watched.fetch_or(WATCHER, Ordering::AcqRel);
        } else {
            self.watched.fetch_and(!WATCHER, Ordering::AcqRel);
        }
        let old = std::mem::replace(&mut rare.watcher, w);
        drop(rare);
        drop(old);
    }

    pub(crate) fn begin_exchange(&self) -> ExchangeStart {
        self.begin_exchange_at(None)
    }

    /// [`begin_exchange`](Entry::begin_exchange) at `now` ([`clock::now_nanos`], when the
    /// caller has just read it).
    pub(crate) fn begin_exchange_at(&self, now: Option<u64>) -> ExchangeStart {
        let before = self.requests.fetch_add(1, Ordering::Relaxed);
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let end = self.exchange_end_ms.load(Ordering::Relaxed);
        let was_idle = before > 0 && in_flight == 0;
        let idle_time = if was_idle && end != NO_END {
            let now = now.unwrap_or_else(clock::now_nanos);
            Duration::from_millis((now / 1_000_000).saturating_sub(end))
        } else {
            Duration::ZERO
        };
        ExchangeStart {
            reused: before > 0,
            was_idle,
            idle_time,
        }
    }

    pub(crate) fn end_exchange(&self) {
        self.end_exchange_at(clock::now_nanos());
    }

    /// [`end_exchange`](Entry::end_exchange) at `now` ([`clock::now_nanos`]).
    pub(crate) fn end_exchange_at(&self, now: u64) {
        self.exchange_end_ms
            .store(now / 1_000_000, Ordering::Relaxed);
        let before = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
        if before == Ok(1) && self.role == Role::Server && self.times_servers() {
            self.start_waiting(now);
        }
        // During a shutdown the tracker closes a connection as soon as its last exchange
        // ends, unless someone else does (see `tracker_closes`).
        if before == Ok(1) && self.tracker().is_shutting_down() && self.tracker_closes() {
            self.abort(CloseReason::Shutdown);
        }
    }

    /// The next request's waiting starts at `now` and ends at the connection's next read.
    fn start_waiting(&self, now: u64) {
        self.end_nanos.store(now.max(1), Ordering::Relaxed);
        self.read_at_end
            .store(self.read.load(Ordering::Relaxed), Ordering::Relaxed);
        self.write_at_end
            .store(self.write.load(Ordering::Relaxed), Ordering::Relaxed);
        self.first_read_nanos.store(0, Ordering::Relaxed);
        self.watched.fetch_or(FIRST_READ, Ordering::AcqRel);
    }

    /// A server's TLS handshake completed: its first request waits from here, not from the
    /// accept (the handshake's own bytes, the ClientHello first, are not the request's), so
    /// neither its waiting nor its head counts the handshake.
    fn handshake_done(&self) {
        if self.role == Role::Server
            && self.end_nanos.load(Ordering::Relaxed) == 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.times_servers()
        {
            self.start_waiting(clock::now_nanos());
        }
    }

    /// See [`Connection::end_exchange_when_flushed`].
    pub(crate) fn end_exchange_when_flushed(&self) {
        self.ending.fetch_add(1, Ordering::AcqRel);
    }

    /// A flush of the connection's stream completed: the exchanges waiting for it end.
    #[cold]
    fn flushed(&self) {
        let n = self.ending.swap(0, Ordering::AcqRel);
        if n > 0 {
            let now = clock::now_nanos();
            for _ in 0..n {
                self.end_exchange_at(now);
            }
            if self.server_queued.swap(false, Ordering::AcqRel) {
                let done = std::mem::take(&mut self.rare().server_done);
                for x in done {
                    self.fire_server_exchange(&x, now, true);
                }
            }
        }
    }

    /// Whether a hook of this connection may want its server exchanges timed (the scope's
    /// are only looked at when it has one).
    fn times_servers(&self) -> bool {
        self.tracker().wants_servers(&self.chain) || !self.scope.is_empty()
    }

    /// Whether a served exchange would be timed (see [`ConnectionRef::server_exchange`]).
    fn wants_server_exchanges(&self) -> bool {
        self.tracker().wants_servers(&self.chain) || self.scope.upgrade().wants_servers()
    }

    /// See [`ConnectionRef::server_exchange`].
    fn server_exchange(
        self: &Arc<Self>,
        method: &str,
        route: Option<&str>,
        version: &'static str,
    ) -> Option<ServerExchange> {
        if !self.wants_server_exchanges() {
            return None;
        }
        let now = clock::now_nanos();
        let multiplexed = version == "2";
        let (start, waiting_from, read0, write0) = if multiplexed {
            (
                now,
                None,
                self.read.load(Ordering::Relaxed),
                self.write.load(Ordering::Relaxed),
            )
        } else {
            let end = self.end_nanos.load(Ordering::Relaxed);
            let (from, read0, write0) = if end == 0 {
                (self.opened_nanos, 0, 0)
            } else {
                (
                    end,
                    self.read_at_end.load(Ordering::Relaxed),
                    self.write_at_end.load(Ordering::Relaxed),
                )
            };
            // No read since: the request's bytes came with the previous one's (pipelined or
            // buffered), its head starts where the waiting would.
            let first = self.first_read_nanos.swap(0, Ordering::Relaxed);
            let first = if first == 0 {
                from
            } else {
                first.clamp(from, now)
            };
            (first, Some(from), read0, write0)
        };
        let live = Arc::new(Live {
            method: shared_text(method),
            route: route.map(shared_text),
            head: now,
            response: AtomicU64::new(0),
            status: AtomicU32::new(0),
            body: BodyWait::default(),
        });
        self.rare().live.push(live.clone());
        Some(ServerExchange {
            entry: self.clone(),
            data: ServerExchangeData {
                live,
                version,
                status: None,
                grpc_status: None,
                waiting_from,
                first_byte: start,
                head: now,
                response: None,
                body_wait: None,
                read0,
                write0,
            },
            done: false,
        })
    }

    /// Fires `on_server_exchange` for an exchange that ended at `now`.
    #[cold]
    fn fire_server_exchange(&self, x: &ServerExchangeData, now: u64, completed: bool) {
        self.rare().live.retain(|l| !Arc::ptr_eq(l, &x.live));
        let body = x.body_wait.map(Duration::from_nanos);
        let head_at = x.head.min(now);
        let response_at = x.response.unwrap_or(now).clamp(head_at, now);
        let handler =
            Duration::from_nanos(response_at - head_at).saturating_sub(body.unwrap_or_default());
        let from = x.waiting_from.unwrap_or(x.first_byte);
        let category = self.category();
        let ev = ServerExchangeEvent {
            id: ConnectionId(self.id),
            category: &category,
            method: &x.live.method,
            route: x.live.route.as_deref(),
            version: x.version,
            status: x.status,
            grpc_status: x.grpc_status,
            completed,
            waiting: x
                .waiting_from
                .map(|w| Duration::from_nanos(x.first_byte.saturating_sub(w))),
            request_head: Duration::from_nanos(head_at.saturating_sub(x.first_byte)),
            request_body: body,
            handler,
            response_write: Duration::from_nanos(now - response_at),
            total: Duration::from_nanos(now.saturating_sub(from)),
            bytes_read: self.read.load(Ordering::Relaxed).saturating_sub(x.read0),
            bytes_written: self.write.load(Ordering::Relaxed).saturating_sub(x.write0),
        };
        // Kept before any hook runs: whoever a hook tells can read it from the ring.
        let rings = &self.tracker().activity;
        if rings.keeps_requests() {
            let timing = crate::track::activity::ServerExchangeTiming::of(
                &ev,
                Arc::clone(&category),
                Arc::clone(&x.live.method),
                x.live.route.clone(),
                x.version,
            );
            rings.push_server(from, timing);
        }
        self.fire(&mut |h| {
            if h.wants_server_exchanges() {
                h.on_server_exchange(&ev);
            }
        });
    }

    /// See [`Connection::mark_upgraded`].
    pub(crate) fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    /// See [`Connection::mark_multiplexed`].
    pub(crate) fn mark_multiplexed(&self) {
        // Read first: one store per connection, not one per request.
        if !self.multiplexed.load(Ordering::Relaxed) {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
    }

    fn store_error(&self, err: &io::Error) {
        // After an abort, errors are its consequences (the abort's own error, a shut-down
        // socket): the close reports the reason, not them.
        if matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ) || self.aborted.load(Ordering::Relaxed)
        {
            return;
        }
        let copy = match err.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(err.kind(), err.to_string()),
        };
        self.rare().last_error = Some(copy);
    }

    /// Removes the entry and reports the close, once; later calls do nothing.
    ///
    /// Order, for [`Tracker::stats`](crate::Tracker::stats): the `closed` flag is set first
    /// (a `stats()` walking the live entries skips this one from then on), then the bytes
    /// are added to the closed totals (Release, paired with the Acquire load in `stats()`:
    /// a reader that sees them in the totals sees the flag too, so it never counts them
    /// twice), then the entry leaves the registry and the hooks run; the close is counted
    /// last, so a drain future woken by it sees the close hooks done, and `active` counts the
    /// connection until then.
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let t = self.tracker();
        // (Zero adds are skipped: a contended read-modify-write costs even when it adds 0.)
        let (read, write) = (self.read_bytes(), self.write_bytes());
        t.stats.with(self.class, |c| {
            if read > 0 {
                c.cell.closed_read.fetch_add(read, Ordering::Release);
            }
            if write > 0 {
                c.cell.closed_write.fetch_add(write, Ordering::Release);
            }
        });
        self.shard.remove(self.id);
        // The limit slot is free as soon as the entry has left the registry: never more than
        // the limit are tracked at once, and `on_close` (below) runs with the slot back.
        if let Some((limiter, ip)) = &self.permit {
            limiter.release(*ip);
        }
        let (error, tls, tcp, closer) = {
            let mut rare = self.rare();
            rare.read_wakers = Parked::default();
            rare.write_wakers = Parked::default();
            // The final TCP statistics, read while the socket is still open (its guard drops
            // before the stream) if the config asked for them; else the last ones a snapshot
            // read. From now on nothing reads the descriptor.
            let tcp = if self.tcp_at_close {
                rare.tcp_now()
            } else {
                rare.tcp.clone()
            };
            #[cfg(unix)]
            {
                rare.sock_fd = None;
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                rare.abort_fd = None;
                rare.more_abort_fds = Vec::new();
            }
            (
                rare.last_error.take(),
                rare.tls.clone(),
                tcp,
                rare.closer.take(),
            )
        };
        drop(closer);
        let reason =
            CloseReason::from_code(self.reason.load(Ordering::Acquire)).unwrap_or_else(|| {
                match &error {
                    Some(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset
                                | io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::BrokenPipe
                        ) =>
                    {
                        CloseReason::Reset
                    }
                    Some(_) => CloseReason::Error,
                    None if self.eof.load(Ordering::Relaxed) => CloseReason::PeerClosed,
                    // Closed by this side during a graceful shutdown (its server closed it
                    // after the shutdown signal, or it finished by itself).
                    None if t.is_shutting_down() => CloseReason::Shutdown,
                    None => CloseReason::ClosedLocally,
                }
            });
        // Exchanges whose response waited for a flush that never came: cut short.
        if self.server_queued.swap(false, Ordering::AcqRel) {
            let done = std::mem::take(&mut self.rare().server_done);
            let now = clock::now_nanos();
            for x in done {
                self.fire_server_exchange(&x, now, false);
            }
        }
        let hooks = self.has_hooks();
        if !hooks && t.keeps_history() {
            // The history keeps a copy of the final state, written straight into its slot; the
            // full record is built only if someone reads the history.
            let (now, coarse) = (clock::now_nanos(), clock::coarse_ms());
            t.history.push_with(
                |s| {
                    self.fill_snapshot(s, now, coarse, tls, tcp);
                    // The bytes the totals got, even if a handle recorded more since.
                    s.read = read;
                    s.write = write;
                },
                error,
                reason,
            );
        } else if hooks {
            // The history keeps this copy of the final state (the close hooks get the record
            // built from it).
            let mut snapshot = self.snapshot(clock::now_nanos(), clock::coarse_ms(), tls, tcp);
            // The bytes the totals got, even if a handle recorded more since.
            snapshot.read = read;
            snapshot.write = write;
            let now = Now::read_at(snapshot.at_nanos);
            let info = snapshot.clone().into_info(self.category(), &now);
            self.fire(&mut |h| {
                h.on_close(&CloseEvent {
                    connection: &info,
                    error: error.as_ref(),
                    reason,
                });
            });
            t.push_history(snapshot, error, reason);
        }
        t.stats.with(self.class, |c| c.cell.closed.incr());
        t.wake_drain_waiters();
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("class", &self.class)
            .field("role", &self.role)
            .field("local_addr", &self.local_addr)
            .field("remote_addr", &self.remote_addr)
            .finish_non_exhaustive()
    }
}

/// The handle to one tracked connection, from [`Tracker::register`](crate::Tracker::register).
///
/// An integration calls [`record_read`](Connection::record_read) and
/// [`record_write`](Connection::record_write) with the byte counts its stream returned, and
/// drops the handle (or calls [`close`](Connection::close)) when the stream goes.
///
/// Handles are cheap to clone; clones share one tracker entry (for split halves and cloned
/// streams), and the entry leaves the tracker when the **last** handle drops, or at the first
/// explicit `close`, whichever comes first. Either way `on_close` fires exactly once.
pub struct Connection {
    entry: Arc<Entry>,
}

impl Connection {
    pub(crate) fn from_entry(entry: Arc<Entry>) -> Self {
        Connection { entry }
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        ConnectionId(self.entry.id)
    }

    /// The connection's category.
    #[must_use]
    pub fn category(&self) -> Arc<str> {
        self.entry.category()
    }

    /// Client or server.
    #[must_use]
    pub fn role(&self) -> Role {
        self.entry.role
    }

    /// A snapshot of this connection (also works after close, for the final values).
    #[must_use]
    pub fn info(&self) -> ConnectionInfo {
        self.entry.info()
    }

    /// Whether the connection has been closed (explicitly or by every handle dropping).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.entry.closed.load(Ordering::Acquire)
    }

    /// Counts `n` bytes read. A read of 0 is the peer's end of stream (the close reason then
    /// says `peer_closed`): do not report a read into an empty buffer, which returns 0 too (the
    /// adapters skip those).
    ///
    /// The hot path: with no per-I/O hook installed this is two relaxed atomic operations on
    /// this connection's own counters, one read of the kernel's coarse monotonic clock (through
    /// the vDSO on Linux: no system call) and relaxed loads of the "any per-I/O hook?" flags. It never allocates, locks or makes a dynamic call
    /// (the `bench` suite's `record_read` cases and the `hot_path` test hold it to that).
    #[inline]
    pub fn record_read(&self, n: usize) {
        let e = &*self.entry;
        e.read.fetch_add(n as u64, Ordering::Relaxed);
        e.last_io_ms.store(clock::coarse_ms(), Ordering::Relaxed);
        if n == 0 {
            e.eof.store(true, Ordering::Relaxed);
        }
        if e.wants_io() {
            self.fire_read(n, None);
        }
    }

    /// Counts `n` bytes written. Same cost as [`record_read`](Connection::record_read).
    #[inline]
    pub fn record_write(&self, n: usize) {
        let e = &*self.entry;
        e.write.fetch_add(n as u64, Ordering::Relaxed);
        e.last_io_ms.store(clock::coarse_ms(), Ordering::Relaxed);
        if e.wants_io() {
            self.fire_write(n, None);
        }
    }

    /// Remembers an I/O error (reported to `on_close` as the last error). `WouldBlock` and
    /// `Interrupted` are not failures and are ignored.
    pub fn record_error(&self, err: &io::Error) {
        self.entry.store_error(err);
    }

    /// A read failed: remembers the error and reports it to per-I/O hooks (`on_read`).
    pub fn record_read_error(&self, err: &io::Error) {
        self.entry.store_error(err);
        if self.entry.wants_io() {
            self.fire_read(0, Some(err));
        }
    }

    /// A write failed: remembers the error and reports it to per-I/O hooks (`on_write`).
    pub fn record_write_error(&self, err: &io::Error) {
        self.entry.store_error(err);
        if self.entry.wants_io() {
            self.fire_write(0, Some(err));
        }
    }

    /// Records the result of a read as a stream returned it: bytes on success, the error on
    /// failure. Returns the result unchanged.
    pub fn read_result(&self, res: io::Result<usize>) -> io::Result<usize> {
        match &res {
            Ok(n) => self.record_read(*n),
            Err(e) => self.record_read_error(e),
        }
        res
    }

    /// Records the result of a write as a stream returned it. Returns the result unchanged.
    pub fn write_result(&self, res: io::Result<usize>) -> io::Result<usize> {
        match &res {
            Ok(n) => self.record_write(*n),
            Err(e) => self.record_write_error(e),
        }
        res
    }

    #[cold]
    fn fire_read(&self, n: usize, error: Option<&io::Error>) {
        let e = &*self.entry;
        if n > 0 {
            e.mark_first_read();
        }
        // The event (and its category, a shared reference count) only for hooks that want it,
        // not for a request's I/O watch alone.
        if e.chain_io || e.tracker().wants_io() {
            let category = e.category();
            let ev = ReadEvent {
                id: self.id(),
                category: &category,
                role: e.role,
                n,
                error,
            };
            e.fire(&mut |h| {
                if h.wants_io_events() {
                    h.on_read(&ev);
                }
            });
        }
        if let Some(w) = e.raw_watcher() {
            w.read(n, error);
        }
    }

    #[cold]
    fn fire_write(&self, n: usize, error: Option<&io::Error>) {
        let e = &*self.entry;
        if e.chain_io || e.tracker().wants_io() {
            let category = e.category();
            let ev = WriteEvent {
                id: self.id(),
                category: &category,
                role: e.role,
                n,
                error,
            };
            e.fire(&mut |h| {
                if h.wants_io_events() {
                    h.on_write(&ev);
                }
            });
        }
        if let Some(w) = e.raw_watcher() {
            w.write(n, error);
        }
    }

    /// Sets what TLS negotiated.
    ///
    /// From then on, what the connection's raw reads and writes carry (handshake records,
    /// session tickets) is no longer taken for the application's data by a traced HTTP request
    /// on it: the TLS layer reports that with [`record_app_read`](Connection::record_app_read)
    /// and [`record_app_write`](Connection::record_app_write).
    pub fn set_tls(&self, tls: TlsInfo) {
        self.entry.set_tls(tls);
    }

    /// A read of application data through a layer above this connection (the plaintext
    /// returned by a TLS stream's read) finished with `n` bytes, or failed with `error`.
    ///
    /// Nothing is counted (`read_bytes` counts what the socket read): this tells a traced
    /// HTTP request using the connection ([`RequestTrace`](crate::RequestTrace)) when its
    /// response began, which the raw reads of a TLS connection cannot (a TLS 1.3 server's
    /// session tickets arrive after the handshake, before any response). A TLS integration
    /// calls it with every completed read and [`record_app_write`](Connection::record_app_write)
    /// with every completed write; while no request watches the connection it is one relaxed
    /// load. The TLS wrappers of every adapter do.
    #[inline]
    pub fn record_app_read(&self, n: usize, error: Option<&io::Error>) {
        if self.entry.has_watcher(Ordering::Relaxed) {
            self.app_io(true, n, error);
        }
    }

    /// A write of application data through a layer above this connection finished with `n`
    /// bytes, or failed (see [`record_app_read`](Connection::record_app_read)).
    #[inline]
    pub fn record_app_write(&self, n: usize, error: Option<&io::Error>) {
        if self.entry.has_watcher(Ordering::Relaxed) {
            self.app_io(false, n, error);
        }
    }

    /// A layer above this connection reached its peer's end of stream: a read of plaintext
    /// into room returned 0 (TLS: the peer's `close_notify`). The close reason then says
    /// `peer_closed`, as for the socket's own end of stream, which such a layer may never
    /// read (rustls stops reading at `close_notify`). Do not call it for a read into an empty
    /// buffer.
    #[inline]
    pub fn record_app_eof(&self) {
        self.entry.eof.store(true, Ordering::Relaxed);
    }

    /// Records the result of a read through a layer above this connection (a TLS stream's
    /// plaintext read): the error is remembered ([`record_error`](Connection::record_error))
    /// and either goes to [`record_app_read`](Connection::record_app_read). Returns the
    /// result unchanged.
    pub fn app_read_result(&self, res: io::Result<usize>) -> io::Result<usize> {
        match &res {
            Ok(n) => self.record_app_read(*n, None),
            Err(e) => {
                self.record_error(e);
                self.record_app_read(0, Some(e));
            }
        }
        res
    }

    /// [`app_read_result`](Connection::app_read_result) for a write.
    pub fn app_write_result(&self, res: io::Result<usize>) -> io::Result<usize> {
        match &res {
            Ok(n) => self.record_app_write(*n, None),
            Err(e) => {
                self.record_error(e);
                self.record_app_write(0, Some(e));
            }
        }
        res
    }

    #[cold]
    fn app_io(&self, read: bool, n: usize, error: Option<&io::Error>) {
        if let Some(w) = self.entry.watcher() {
            if read {
                w.read(n, error);
            } else {
                w.write(n, error);
            }
        }
    }

    /// Sets the phase timings that are `Some` in `timings`; the others keep their value.
    pub fn set_timings(&self, timings: Timings) {
        let e = &*self.entry;
        for (slot, v) in [
            (&e.dns, timings.dns),
            (&e.connect, timings.connect),
            (&e.tls_handshake, timings.tls_handshake),
        ] {
            if v.is_some() {
                slot.store(dur_to_nanos(v), Ordering::Relaxed);
            }
        }
    }

    /// Reports that a TLS handshake is starting on this connection (`on_tls_handshake_start`).
    pub fn report_tls_handshake_start(&self, server_name: Option<&str>) {
        let e = &*self.entry;
        if e.has_hooks() {
            let info = e.event_info();
            e.fire(&mut |h| {
                h.on_tls_handshake_start(&TlsHandshakeStartEvent {
                    connection: &info,
                    server_name,
                });
            });
        }
    }

    /// Reports a finished TLS handshake (`on_tls_handshake_done`): on success sets
    /// [`tls`](ConnectionInfo::tls) and `timings.tls_handshake`; on failure counts it in
    /// [`CategoryStats::tls_handshake_failed`](crate::CategoryStats::tls_handshake_failed) and
    /// remembers the error for `on_close`.
    pub fn report_tls_handshake_done(
        &self,
        result: Result<TlsInfo, &io::Error>,
        duration: Duration,
    ) {
        let e = &*self.entry;
        e.tls_handshake
            .store(dur_to_nanos(Some(duration)), Ordering::Relaxed);
        let error = match result {
            Ok(tls) => {
                e.set_tls(tls);
                e.handshake_done();
                None
            }
            Err(err) => {
                e.tracker().stats.with(e.class, |c| {
                    c.cell.tls_failed.fetch_add(1, Ordering::Relaxed)
                });
                e.set_reason(CloseReason::TlsFailure);
                e.store_error(err);
                Some(err)
            }
        };
        if e.has_hooks() {
            let info = e.event_info();
            let tls = e.tls();
            e.fire(&mut |h| {
                h.on_tls_handshake_done(&TlsHandshakeDoneEvent {
                    connection: &info,
                    tls: if error.is_none() {
                        tls.as_deref()
                    } else {
                        None
                    },
                    error,
                    duration,
                });
            });
        }
    }

    /// Registers the connection's socket (TCP or Unix) for as long as the returned guard
    /// lives: an [abort](Connection::abort) then shuts it down (`shutdown(2)`, both
    /// directions), which makes the kernel wake every task and thread blocked on it through
    /// the runtime's reactor, so a pending poll keeps no waker for control; and, for a TCP
    /// socket, the kernel's statistics ([`ConnectionInfo::tcp`]) are read from it when a
    /// snapshot or record is built (never on the I/O path; not at all when the config said
    /// [`tcp_info(false)`](crate::ListenerConfig::tcp_info); once more at close when it said
    /// [`tcp_info_at_close(true)`](crate::ListenerConfig::tcp_info_at_close)). Every adapter's
    /// listener and dialer register the sockets they make.
    ///
    /// **The descriptor number is kept, not the socket**: keep the guard next to the stream
    /// that owns the descriptor and make sure it drops **before** the stream (declare it
    /// before the stream in the struct that holds both: fields drop in declaration order), so
    /// that nothing reads or shuts down a descriptor that was closed and maybe reused by
    /// another socket. The abort and the guard's drop take the same lock, so they never race.
    ///
    /// Streams that share one socket (split halves, clones of a runtime's `Arc`-backed socket)
    /// each keep a [clone](SocketGuard::clone) of the guard: the registration lasts until the
    /// last of them drops, so that an abort still shuts the socket down, and wakes a task
    /// blocked on one of them, after the others are gone.
    #[cfg(unix)]
    pub fn watch_socket<S: std::os::fd::AsRawFd + ?Sized>(&self, socket: &S) -> SocketGuard {
        let e = &*self.entry;
        let fd = socket.as_raw_fd();
        let aborted = {
            let mut rare = e.rare();
            if e.is_closed() {
                false
            } else {
                // The same socket registered again (`with_tcp_info` on a stream its listener
                // registered): one more holder, so that the earlier guard's drop does not end
                // the registration the new one keeps.
                rare.sock_refs = if rare.sock_fd == Some(fd) {
                    rare.sock_refs + 1
                } else {
                    1
                };
                rare.sock_fd = Some(fd);
                rare.tcp_stats = !e.no_tcp_info;
                #[cfg(any(target_os = "linux", target_os = "android"))]
                e.sock_abort.store(true, Ordering::Relaxed);
                e.aborted.load(Ordering::SeqCst)
            }
        };
        // Aborted before the socket was registered: shut it down now (the caller holds it).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if aborted {
            crate::record::tcp_info::shutdown(fd);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = aborted;
        SocketGuard {
            entry: Arc::clone(&self.entry),
            #[cfg(unix)]
            fd,
        }
    }

    /// [`watch_socket`](Connection::watch_socket) under its earlier name.
    #[cfg(unix)]
    pub fn watch_tcp_info<S: std::os::fd::AsRawFd + ?Sized>(&self, socket: &S) -> SocketGuard {
        self.watch_socket(socket)
    }

    /// Marks the start of an exchange (an HTTP request, an RPC, a database query...) on this
    /// connection: [`ConnectionInfo::requests`] and [`in_flight`](ConnectionInfo::in_flight)
    /// count it until [`end_exchange`](Connection::end_exchange). Returns whether the
    /// connection was reused and how long it had been idle, as httptrace's `GotConnInfo`.
    pub fn begin_exchange(&self) -> ExchangeStart {
        self.entry.begin_exchange()
    }

    /// Marks the end of an exchange begun with [`begin_exchange`](Connection::begin_exchange).
    pub fn end_exchange(&self) {
        self.entry.end_exchange();
    }

    /// Marks the end of an exchange whose response has been handed to the connection's stream
    /// but maybe not written yet: it ends at the stream's next completed flush
    /// ([`record_flush`](Connection::record_flush)), once the response's last byte has been
    /// handed to the socket. Until then it is in flight: an idle timeout or a shutdown does
    /// not take the connection for idle while the response is still being written. A server
    /// integration calls it when the protocol layer lets go of a finished response (hyper
    /// drops the response body once it has its last frame, then writes and flushes it); the
    /// tracked streams of every adapter call `record_flush`.
    pub fn end_exchange_when_flushed(&self) {
        self.entry.end_exchange_when_flushed();
    }

    /// What a tracked stream calls when a flush completed: the exchanges waiting for it
    /// ([`end_exchange_when_flushed`](Connection::end_exchange_when_flushed)) end. One relaxed
    /// load when none waits.
    #[inline]
    pub fn record_flush(&self) {
        if self.entry.ending.load(Ordering::Relaxed) != 0 {
            self.entry.flushed();
        }
    }

    /// Marks the connection upgraded: its protocol was switched (after a `101 Switching
    /// Protocols`, or a `2xx` answer to `CONNECT`) and it now carries traffic that marks no
    /// exchanges (a WebSocket, a tunnel). Its [state](ConnectionInfo::state) is
    /// [`Upgraded`](crate::ConnState::Upgraded) from then on; a shutdown counts it busy (it gets the
    /// grace period, then is aborted at the deadline) and the idle timeout judges it by its I/O.
    /// The exchange layer of the tokio adapter marks it when a response says so.
    pub fn mark_upgraded(&self) {
        self.entry.mark_upgraded();
    }

    /// Marks the connection multiplexed: several exchanges share it and its protocol writes
    /// their responses from buffers of its own (HTTP/2), so a completed flush does not mean
    /// that every response has left. Without a [`ShutdownSignal`](crate::ShutdownSignal)
    /// handed out, a shutdown closes idle connections itself, but never this one before its
    /// deadline; given the signal, its server closes it the protocol's way (`GOAWAY`). The
    /// exchange layer of the tokio adapter marks every connection that carries an HTTP/2
    /// request.
    pub fn mark_multiplexed(&self) {
        self.entry.mark_multiplexed();
    }

    /// A reference to this connection that does not keep it in the tracker: the entry still
    /// leaves with the last [`Connection`] handle. For code that observes a connection it does
    /// not own (a request on a pooled connection).
    #[must_use]
    pub fn downgrade(&self) -> ConnectionRef {
        ConnectionRef {
            entry: Arc::clone(&self.entry),
        }
    }

    /// Removes the connection from the tracker and fires `on_close`, once. Later calls, and
    /// dropping the handles afterwards, do nothing more. Recording on a closed handle is
    /// harmless and no longer shows in the tracker.
    pub fn close(&self) {
        self.entry.close();
    }

    /// Aborts the connection: closes it now with [`CloseReason::Aborted`], wakes the tasks of
    /// its pending reads and writes (registered by [`park_read`](Connection::park_read) /
    /// [`park_write`](Connection::park_write)) and runs its [closer](Connection::set_closer);
    /// from then on [`check`](Connection::check) fails, so the tracked stream's I/O fails with
    /// `ConnectionAborted`. Returns whether it was still open.
    pub fn abort(&self) -> bool {
        self.entry.abort(CloseReason::Aborted)
    }

    /// Closes the connection now with `reason` as [`abort`](Connection::abort) does (for an
    /// integration enforcing its own policy).
    pub fn abort_with(&self, reason: CloseReason) -> bool {
        self.entry.abort(reason)
    }

    /// Whether the connection was aborted (by [`abort`](Connection::abort), a policy, or a
    /// shutdown deadline).
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        self.entry.aborted.load(Ordering::Relaxed)
    }

    /// What a tracked stream calls before each I/O: `Ok` unless the connection was aborted,
    /// then a `ConnectionAborted` error naming the reason. One relaxed load.
    ///
    /// # Errors
    ///
    /// `ConnectionAborted` once the connection has been aborted.
    #[inline]
    pub fn check(&self) -> io::Result<()> {
        if self.entry.aborted.load(Ordering::Relaxed) {
            return Err(self.entry.aborted_error());
        }
        Ok(())
    }

    /// What a tracked stream calls when a read returns `Pending`: keeps the task's waker so an
    /// abort can wake it (cloned only when it is not kept yet). The wakers of several tasks
    /// (each blocked on its own clone of a stream) are all kept, up to 8 per direction (past
    /// that the oldest is woken and let go), and an abort wakes them all. Fails if the
    /// connection was aborted meanwhile, so no wake-up is lost.
    ///
    /// # Errors
    ///
    /// `ConnectionAborted` once the connection has been aborted.
    pub fn park_read(&self, waker: &Waker) -> io::Result<()> {
        self.entry.park(waker, false)
    }

    /// As [`park_read`](Connection::park_read), for a pending write, flush or shutdown.
    ///
    /// # Errors
    ///
    /// `ConnectionAborted` once the connection has been aborted.
    pub fn park_write(&self, waker: &Waker) -> io::Result<()> {
        self.entry.park(waker, true)
    }

    /// A blocking stream's I/O call, guarded by this connection as
    /// [`poll_read_guarded`](Connection::poll_read_guarded) guards a poll: fails at once if the
    /// connection was aborted, else runs `call`; a call that returns after an abort (which
    /// shuts the socket down to wake it: end of stream, a partial write, an error) gets the
    /// abort's error instead. Record the result after this, so that the hooks see what the
    /// caller gets. One relaxed load before and one after the call.
    ///
    /// # Errors
    ///
    /// `ConnectionAborted` once the connection has been aborted, else `call`'s error.
    #[inline]
    pub fn guarded<R>(&self, call: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.check()?;
        let res = call();
        self.check()?;
        res
    }

    /// A tracked stream's read, guarded by this connection: fails at once if the connection
    /// was aborted ([`check`](Connection::check)), else runs `poll` and, if it is pending,
    /// leaves the task's waker for an abort to wake ([`park_read`](Connection::park_read)).
    /// With nothing aborted this adds one relaxed load to a read that completes, and a
    /// mutex-guarded waker comparison to one that goes pending.
    ///
    /// ```text
    /// let res = ready!(this.conn.poll_read_guarded(cx, |cx| this.inner.poll_read(cx, buf)));
    /// ```
    #[inline]
    pub fn poll_read_guarded<R>(
        &self,
        cx: &mut std::task::Context<'_>,
        poll: impl FnOnce(&mut std::task::Context<'_>) -> std::task::Poll<io::Result<R>>,
    ) -> std::task::Poll<io::Result<R>> {
        self.poll_guarded(cx, poll, false)
    }

    /// As [`poll_read_guarded`](Connection::poll_read_guarded), for a write, flush or
    /// shutdown.
    #[inline]
    pub fn poll_write_guarded<R>(
        &self,
        cx: &mut std::task::Context<'_>,
        poll: impl FnOnce(&mut std::task::Context<'_>) -> std::task::Poll<io::Result<R>>,
    ) -> std::task::Poll<io::Result<R>> {
        self.poll_guarded(cx, poll, true)
    }

    #[inline]
    fn poll_guarded<R>(
        &self,
        cx: &mut std::task::Context<'_>,
        poll: impl FnOnce(&mut std::task::Context<'_>) -> std::task::Poll<io::Result<R>>,
        write: bool,
    ) -> std::task::Poll<io::Result<R>> {
        self.check()?;
        let res = poll(cx);
        match &res {
            // A socket registered for abort is shut down by it, which wakes this task through
            // the runtime's reactor: nothing to keep. Other streams keep the task's waker.
            std::task::Poll::Pending => {
                if !self.entry.sock_abort.load(Ordering::Relaxed) {
                    self.entry.park(cx.waker(), write)?;
                }
            }
            // Woken by an abort's shutdown (end of stream, a broken pipe): the abort's error.
            std::task::Poll::Ready(_) => self.check()?,
        }
        res
    }

    /// Sets what an abort calls to unblock I/O that no waker reaches: for a blocking socket,
    /// `shutdown(Both)` on a clone of it, which makes a blocked `read` return. Dropped when
    /// the connection closes.
    ///
    /// The closer stays set while the returned guard lives: keep the guard in the stream it
    /// closes, so that a clone of the socket kept by the closer goes with the stream.
    pub fn set_closer(&self, closer: impl Fn() + Send + Sync + 'static) -> CloserGuard {
        let guard = CloserGuard {
            entry: Arc::clone(&self.entry),
            fd: false,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            raw: -1,
        };
        if self.is_aborted() {
            closer();
            return guard;
        }
        self.entry.rare().closer = Some(Box::new(closer));
        if self.is_aborted() {
            let c = self.entry.rare().closer.take();
            if let Some(c) = c {
                c();
            }
        }
        guard
    }

    /// Makes an abort shut `socket` down (`shutdown(Both)`), which wakes a thread blocked in a
    /// read or write on it, as [`set_closer`](Connection::set_closer) with a clone of the
    /// socket does, without the clone (the `dup` and its `close` are two system calls per
    /// connection). Linux and Android. Several may be registered at once (a blocking stream
    /// and its `try_clone`s, each with its own descriptor of the one socket): an abort shuts
    /// every one down, and each guard's drop removes its own, so that an abort still wakes a
    /// thread blocked on a clone once the stream it was cloned from is gone.
    ///
    /// **The descriptor number is kept, not the socket**: while the returned guard lives, the
    /// socket must stay open and stay the one behind that number. A stream wrapper that owns
    /// the socket declares the guard before it (fields drop in declaration order), never
    /// hands out a way to replace or close the socket while the guard lives (drop the guard
    /// first, as this crate's std adapter does in `get_mut`), and drops the guard when it
    /// gives the socket up. Otherwise an abort could shut down whatever socket reuses the
    /// number. The abort runs under the connection's lock, which the guard's drop takes too,
    /// so an abort never races the drop.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn shutdown_on_abort<S: std::os::fd::AsRawFd + ?Sized>(&self, socket: &S) -> CloserGuard {
        let fd = socket.as_raw_fd();
        let guard = CloserGuard {
            entry: Arc::clone(&self.entry),
            fd: true,
            raw: fd,
        };
        {
            let mut rare = self.entry.rare();
            if !self.is_aborted() {
                if rare.abort_fd.is_none() {
                    rare.abort_fd = Some(fd);
                } else {
                    rare.more_abort_fds.push(fd);
                }
                self.entry.sock_abort.store(true, Ordering::Relaxed);
                return guard;
            }
        }
        // Aborted before the socket was registered: shut it down now (the caller holds it).
        crate::record::tcp_info::shutdown(fd);
        guard
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        self.entry.handles.fetch_add(1, Ordering::Relaxed);
        Connection {
            entry: Arc::clone(&self.entry),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.entry.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.entry.close();
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.entry.id)
            .field("class", &self.entry.class)
            .field("role", &self.entry.role)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Keeps a connection's socket registered (for abort and TCP statistics), from
/// [`Connection::watch_socket`]; dropping it (the last of its clones) stops every use of the
/// descriptor (reading the statistics one last time if the config asked for them at close).
/// It does not keep the
/// connection in the tracker. (It exists on every platform, so that a stream type can hold an
/// `Option` of it; only Unix makes one.)
pub struct SocketGuard {
    #[cfg_attr(not(unix), allow(dead_code))]
    entry: Arc<Entry>,
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
}

/// The guard of [`Connection::watch_tcp_info`], [`SocketGuard`] under its earlier name.
pub type TcpInfoGuard = SocketGuard;

/// Another holder of the same registration: the socket stays registered until the last clone
/// drops. For streams sharing the socket (split halves, clones), each keeping its clone
/// declared before its stream: the last of them to drop ends the registration before it
/// closes the socket.
impl Clone for SocketGuard {
    fn clone(&self) -> Self {
        #[cfg(unix)]
        {
            let mut rare = self.entry.rare();
            if rare.sock_fd == Some(self.fd) {
                rare.sock_refs += 1;
            }
        }
        SocketGuard {
            entry: Arc::clone(&self.entry),
            #[cfg(unix)]
            fd: self.fd,
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            let e = &*self.entry;
            let mut rare = e.rare();
            if rare.sock_fd == Some(self.fd) {
                rare.sock_refs = rare.sock_refs.saturating_sub(1);
                if rare.sock_refs > 0 {
                    // Another stream sharing the socket still holds it.
                    return;
                }
                if e.tcp_at_close && !e.is_closed() {
                    let _ = rare.tcp_now();
                }
                rare.sock_fd = None;
                // Pending polls keep their wakers again (a split half outliving this one).
                #[cfg(any(target_os = "linux", target_os = "android"))]
                e.sock_abort
                    .store(rare.abort_fd.is_some(), Ordering::Relaxed);
            }
        }
    }
}

impl fmt::Debug for SocketGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketGuard")
            .field("id", &self.entry.id)
            .finish()
    }
}

/// Keeps a connection's closer (see [`Connection::set_closer`] and
/// `Connection::shutdown_on_abort`) set; dropping it removes the closer.
#[must_use = "dropping the guard removes the closer"]
pub struct CloserGuard {
    entry: Arc<Entry>,
    /// Whether it keeps a descriptor registration (`shutdown_on_abort`) rather than a closer
    /// (`set_closer`): it removes only its own kind.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    fd: bool,
    /// The registered descriptor (when `fd`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    raw: std::os::fd::RawFd,
}

impl Drop for CloserGuard {
    fn drop(&mut self) {
        let c = {
            let mut rare = self.entry.rare();
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if self.fd {
                // Its own registration only (another stream's may remain).
                if rare.abort_fd == Some(self.raw) {
                    rare.abort_fd = rare.more_abort_fds.pop();
                } else if let Some(i) = rare.more_abort_fds.iter().position(|&f| f == self.raw) {
                    rare.more_abort_fds.swap_remove(i);
                }
                self.entry.sock_abort.store(
                    rare.abort_fd.is_some() || rare.sock_fd.is_some(),
                    Ordering::Relaxed,
                );
                return;
            }
            rare.closer.take()
        };
        drop(c);
    }
}

impl fmt::Debug for CloserGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloserGuard")
            .field("id", &self.entry.id)
            .finish()
    }
}

/// What [`Connection::begin_exchange`] found: httptrace's `GotConnInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeStart {
    /// The connection had carried an exchange before.
    pub reused: bool,
    /// No exchange was in flight (and one had been before).
    pub was_idle: bool,
    /// How long since the last exchange ended; zero unless `was_idle`.
    pub idle_time: Duration,
}

/// A reference to a tracked connection that does not keep it in the tracker, from
/// [`Connection::downgrade`] or [`Tracker::lookup`](crate::Tracker::lookup). It can read the
/// connection and mark exchanges; once every [`Connection`] handle is gone the connection is
/// closed and this reference only reads its final state.
#[derive(Clone)]
pub struct ConnectionRef {
    pub(crate) entry: Arc<Entry>,
}

impl ConnectionRef {
    pub(crate) fn from_entry(entry: Arc<Entry>) -> Self {
        ConnectionRef { entry }
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        ConnectionId(self.entry.id)
    }

    /// A snapshot of the connection.
    #[must_use]
    pub fn info(&self) -> ConnectionInfo {
        self.entry.info()
    }

    /// Whether the connection has been closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.entry.closed.load(Ordering::Acquire)
    }

    /// See [`Connection::begin_exchange`].
    pub fn begin_exchange(&self) -> ExchangeStart {
        self.entry.begin_exchange()
    }

    /// See [`Connection::end_exchange`].
    pub fn end_exchange(&self) {
        self.entry.end_exchange();
    }

    /// See [`Connection::end_exchange_when_flushed`].
    pub fn end_exchange_when_flushed(&self) {
        self.entry.end_exchange_when_flushed();
    }

    /// See [`Connection::mark_upgraded`].
    pub fn mark_upgraded(&self) {
        self.entry.mark_upgraded();
    }

    /// See [`Connection::mark_multiplexed`].
    pub fn mark_multiplexed(&self) {
        self.entry.mark_multiplexed();
    }

    /// Starts timing a server exchange, just begun with
    /// [`begin_exchange`](ConnectionRef::begin_exchange), whose request head has just been
    /// parsed: `None`, at no cost, unless a hook of the connection wants server exchanges
    /// ([`Hook::wants_server_exchanges`]), which then gets
    /// [`on_server_exchange`](Hook::on_server_exchange) when it ends, or the tracker keeps
    /// recent requests ([`TrackerBuilder::recent_requests`](crate::TrackerBuilder::recent_requests)),
    /// whose ring of server exchanges then keeps it. `version` is
    /// `"1.0"`, `"1.1"` or `"2"` (an HTTP/2 request has no waiting phase). The exchange layer
    /// of the tokio adapter calls it; see [`ServerExchange`].
    pub fn server_exchange(
        &self,
        method: &str,
        route: Option<&str>,
        version: &'static str,
    ) -> Option<ServerExchange> {
        self.entry.server_exchange(method, route, version)
    }

    /// Whether [`server_exchange`](ConnectionRef::server_exchange) would time an exchange now
    /// (a hook of the connection wants server exchanges, or the tracker keeps recent
    /// requests): an integration checks it first to skip finding the route and the other
    /// arguments when nothing would use them.
    #[must_use]
    pub fn wants_server_exchanges(&self) -> bool {
        self.entry.wants_server_exchanges()
    }
}

/// What a [`ServerExchange`] has recorded.
#[derive(Clone)]
struct ServerExchangeData {
    live: Arc<Live>,
    version: &'static str,
    status: Option<u16>,
    grpc_status: Option<i32>,
    /// The start of the waiting phase (process clock); `None` on HTTP/2.
    waiting_from: Option<u64>,
    /// The request's first byte, the head parsed and the response head produced.
    first_byte: u64,
    head: u64,
    response: Option<u64>,
    /// The body waiting, summed (nanos), copied from `BodyWait` at the end; `None`: not timed.
    body_wait: Option<u64>,
    /// The connection's byte counters at the start.
    read0: u64,
    write0: u64,
}

/// A timed server exchange in progress, shared by its [`ServerExchange`], its body's
/// [`BodyTimer`] and the connection's record ([`ConnectionInfo::exchange`]).
/// `text` as a shared string: one this thread made before for the same text if it still keeps
/// it, else a new one (kept, the oldest of 32 let go). An exchange's method and route template
/// are among a few values, so most exchanges make no string of their own; a peer sending
/// methods of its own only makes the thread's few strings turn over.
fn shared_text(text: &str) -> Arc<str> {
    const KEPT: usize = 32;
    thread_local! {
        static TEXTS: std::cell::RefCell<Vec<Arc<str>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    TEXTS.with(|texts| {
        let Ok(mut texts) = texts.try_borrow_mut() else {
            return Arc::from(text);
        };
        if let Some(t) = texts.iter().find(|t| &***t == text) {
            return Arc::clone(t);
        }
        let t: Arc<str> = Arc::from(text);
        if texts.len() == KEPT {
            texts.remove(0);
        }
        texts.push(Arc::clone(&t));
        t
    })
}

struct Live {
    method: Arc<str>,
    route: Option<Arc<str>>,
    /// The head parsed (process clock).
    head: u64,
    /// The response head produced (process clock), 0 before.
    response: AtomicU64,
    /// Its status, 0 before.
    status: AtomicU32,
    body: BodyWait,
}

impl Live {
    /// The length of a body wait that began at `since` and ends now, or at the response head
    /// if that came first.
    fn wait_until(&self, since: u64) -> u64 {
        let mut end = clock::now_nanos();
        let response = self.response.load(Ordering::Relaxed);
        if response != 0 {
            end = end.min(response);
        }
        end.saturating_sub(since)
    }

    fn progress(&self, now: u64) -> ServerExchangeProgress {
        let response = self.response.load(Ordering::Relaxed);
        let phase = if response != 0 {
            ServerPhase::ResponseWrite
        } else if self.body.since.load(Ordering::Relaxed) != 0 {
            ServerPhase::RequestBody
        } else {
            ServerPhase::Handler
        };
        let status = self.status.load(Ordering::Relaxed);
        ServerExchangeProgress {
            method: self.method.clone(),
            route: self.route.clone(),
            phase,
            status: u16::try_from(status).ok().filter(|s| *s != 0),
            elapsed: Duration::from_nanos(now.saturating_sub(self.head)),
        }
    }
}

/// The time a request's body kept its reader waiting, shared with the body's wrapper.
#[derive(Default)]
struct BodyWait {
    /// Summed nanos of the finished waits.
    total: AtomicU64,
    /// When the current wait began (process clock), 0 when not waiting.
    since: AtomicU64,
    /// A [`BodyTimer`] was handed out.
    timed: AtomicBool,
}

/// The timing of one server exchange, from [`ConnectionRef::server_exchange`]: the request's
/// head parsed to its response written. The serving integration reports the body's polls
/// ([`ServerExchange::body_timer`]), the response head ([`ServerExchange::response_head`]) and
/// the end ([`finish_when_flushed`](ServerExchange::finish_when_flushed) once the response has
/// been handed over whole, [`finish`](ServerExchange::finish) when it was cut short); dropped
/// without either, it finishes cut short. Timestamps are on the monotonic clock, each read
/// once, at a phase's boundary; the request's first byte is the completion of the
/// connection's first read after the previous exchange, which costs the read path nothing.
pub struct ServerExchange {
    entry: Arc<Entry>,
    data: ServerExchangeData,
    done: bool,
}

/// A handle to a [`ServerExchange`]'s body waiting, for the request body's wrapper
/// ([`ServerExchange::body_timer`]).
#[derive(Clone)]
pub struct BodyTimer(Arc<Live>);

impl BodyTimer {
    /// The request body was polled for a frame and answered `pending` (`true`) or ready: the
    /// time from a first pending answer to the next ready one is body waiting. Reads the clock
    /// only on those two transitions. Only the waits before the response head count (the
    /// handler's): a body read while the response is written (a handler streaming the
    /// request back) is inside `response_write`, not counted twice.
    pub fn poll(&self, pending: bool) {
        let w = &self.0.body;
        if pending {
            if w.since.load(Ordering::Relaxed) == 0 && self.0.response.load(Ordering::Relaxed) == 0
            {
                w.since.store(clock::now_nanos().max(1), Ordering::Relaxed);
            }
        } else {
            let since = w.since.swap(0, Ordering::Relaxed);
            if since != 0 {
                w.total
                    .fetch_add(self.0.wait_until(since), Ordering::Relaxed);
            }
        }
    }
}

impl fmt::Debug for BodyTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyTimer").finish_non_exhaustive()
    }
}

impl ServerExchange {
    /// A handle for the request body's wrapper to report its polls. Asking for it says the
    /// body is timed: the event's `request_body` is `Some`.
    #[must_use]
    pub fn body_timer(&self) -> BodyTimer {
        self.data.live.body.timed.store(true, Ordering::Relaxed);
        BodyTimer(self.data.live.clone())
    }

    /// The response head was produced with `status`: the handler phase ends, the response
    /// write begins.
    pub fn response_head(&mut self, status: u16) {
        let now = clock::now_nanos();
        self.data.status = Some(status);
        self.data.response = Some(now);
        self.data
            .live
            .status
            .store(u32::from(status), Ordering::Relaxed);
        self.data.live.response.store(now.max(1), Ordering::Relaxed);
    }

    /// The gRPC status of the response (its `grpc-status` trailer or header).
    pub fn set_grpc_status(&mut self, status: i32) {
        self.data.grpc_status = Some(status);
    }

    fn take_body_wait(&mut self) -> Option<u64> {
        let w = &self.data.live.body;
        if !w.timed.load(Ordering::Relaxed) {
            return None;
        }
        let mut total = w.total.load(Ordering::Relaxed);
        // Still waiting when the exchange ended (the body was dropped pending): count it.
        let since = w.since.swap(0, Ordering::Relaxed);
        if since != 0 {
            total += self.data.live.wait_until(since);
        }
        Some(total)
    }

    /// The response has been handed over whole: the exchange ends, and its event fires, at
    /// the connection's next completed flush, together with
    /// [`end_exchange_when_flushed`](ConnectionRef::end_exchange_when_flushed), which the
    /// caller calls right after.
    pub fn finish_when_flushed(mut self) {
        self.done = true;
        let mut data = self.data.clone();
        data.body_wait = self.take_body_wait();
        let e = &self.entry;
        e.rare().server_done.push(data);
        e.server_queued.store(true, Ordering::Release);
    }

    /// The exchange ended now, cut short (the handler failed, the response was dropped or
    /// its body failed); its event fires now. Call it after
    /// [`end_exchange`](ConnectionRef::end_exchange).
    pub fn finish(mut self) {
        self.finish_now();
    }

    fn finish_now(&mut self) {
        self.done = true;
        self.data.body_wait = self.take_body_wait();
        self.entry
            .fire_server_exchange(&self.data, clock::now_nanos(), false);
    }
}

impl Drop for ServerExchange {
    fn drop(&mut self) {
        if !self.done {
            self.finish_now();
        }
    }
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerExchange")
            .field("id", &self.entry.id)
            .field("method", &self.data.live.method)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ConnectionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionRef")
            .field("id", &self.entry.id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::shared_text;

    #[test]
    fn shared_text_reuses_a_thread_s_strings_and_stays_bounded() {
        let a = shared_text("GET");
        let b = shared_text("GET");
        assert!(Arc::ptr_eq(&a, &b), "the same text, the same string");
        drop(b);
        assert_eq!(&*shared_text("/users/{id}"), "/users/{id}");
        // Many distinct texts (a peer's own methods): each comes back as given, and the
        // thread keeps only a few of them.
        for i in 0..1_000 {
            let text = format!("METHOD{i}");
            assert_eq!(&*shared_text(&text), text);
        }
        let c = shared_text("GET");
        assert_eq!(&*c, "GET");
        assert!(!Arc::ptr_eq(&a, &c), "let go of once 32 newer texts came");
        assert_eq!(Arc::strong_count(&a), 1, "no longer kept by the thread");
    }
}
