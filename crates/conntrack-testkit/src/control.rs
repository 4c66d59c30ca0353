//! The control suite: connection limits, idle and age policies, abort by id and shutdown with
//! a deadline, the same scenarios and assertions on every runtime.
//!
//! An adapter implements [`ControlHarness`] (a tracked listener it can accept from with a
//! blocking call, and its runtime's way to run [`Tracker::run_policies`] and
//! [`Tracker::shutdown`]) and runs:
//!
//! ```text
//! conntrack_testkit::control_tests!(MyHarness::new());
//! ```
//!
//! Clients of the limited listener are plain `std::net` sockets: only the server side is
//! tracked, so the tracker's length is the number of server connections.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use conntrack_core::{
    CloseReason, ConnectionId, DialerConfig, LimitMode, ListenerConfig, Recorded, RecordingHook,
    Role, ShutdownReport, Tracker,
};

use crate::{Conn, Harness, EVENT_TIMEOUT};

/// Expands to one `#[test]` per control scenario.
#[macro_export]
macro_rules! control_tests {
    ($harness:expr) => {
        $crate::control_tests!(@each $harness;
            limit_rejects_extra, limit_waits_for_a_slot, limit_waits_with_two_accepters,
            limit_waits_with_two_accepters_under_load, per_ip_limit_rejects,
            idle_timeout_closes_only_idle, idle_timeout_records_idle_time,
            max_age_closes_busy_connections,
            dialer_policies_apply_to_dialed_connections,
            abort_wakes_blocked_read, abort_wakes_blocked_write, shutdown_with_deadline,
            listener_refuses_after_shutdown);
    };
    (@each $harness:expr; $($name:ident),*) => {
        mod control {
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::control::$name(&$harness);
                }
            )*
        }
    };
}

/// What the control suite needs from an adapter, besides [`Harness`].
pub trait ControlHarness: Harness + Sync {
    /// A tracked listener of the adapter.
    type Listener: Send + Sync;

    /// Binds a tracked listener on `127.0.0.1:0` with `config`.
    ///
    /// # Errors
    ///
    /// The bind error.
    fn listen(
        &self,
        tracker: &Tracker,
        config: ListenerConfig,
    ) -> io::Result<(Self::Listener, SocketAddr)>;

    /// Accepts the next connection (blocking; the listener's own `accept`).
    ///
    /// # Errors
    ///
    /// The accept error.
    fn accept(&self, listener: &Self::Listener) -> io::Result<Self::Conn>;

    /// Accepts as [`accept`](Self::accept) does, giving up after `limit`: `None` if no
    /// connection was accepted by then (the listener's own accept, with the runtime's timer,
    /// or polling a non-blocking listener for a blocking one).
    fn accept_within(
        &self,
        listener: &Self::Listener,
        limit: Duration,
    ) -> Option<io::Result<Self::Conn>>;

    /// Runs `tracker.run_policies(sleep)` with the runtime's sleep, in the background, until
    /// `stop` is signalled.
    fn run_policies(&self, tracker: &Tracker, stop: Stop);

    /// `tracker.shutdown(grace, sleep)` with the runtime's sleep, blocking until it returns.
    fn shutdown(&self, tracker: &Tracker, grace: Duration) -> ShutdownReport;
}

/// A signal to stop a background future, for [`ControlHarness::run_policies`].
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<Mutex<(bool, Option<Waker>)>>);

impl Stop {
    /// A signal not yet given.
    #[must_use]
    pub fn new() -> Self {
        Stop::default()
    }

    /// Gives the signal.
    pub fn signal(&self) {
        let w = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Runs `fut` until it ends or the signal is given.
    pub async fn until<F: Future<Output = ()>>(self, fut: F) {
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx: &mut Context<'_>| {
            if fut.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if s.0 {
                return Poll::Ready(());
            }
            s.1 = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

/// Stops [`ControlHarness::run_policies`] when dropped.
struct StopOnDrop(Stop);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.signal();
    }
}

fn policies<H: ControlHarness>(h: &H, tracker: &Tracker) -> StopOnDrop {
    let stop = Stop::new();
    h.run_policies(tracker, stop.clone());
    StopOnDrop(stop)
}

fn closes(ev: &[Recorded]) -> Vec<(conntrack_core::ConnectionInfo, CloseReason)> {
    ev.iter()
        .filter_map(|e| match e {
            Recorded::Close {
                connection, reason, ..
            } => Some((connection.clone(), *reason)),
            _ => None,
        })
        .collect()
}

/// The kinds of the errors reported to `on_read` or `on_write` (`what`) for connection `id`.
fn io_errors(ev: &[Recorded], id: ConnectionId, what: &str) -> Vec<io::ErrorKind> {
    ev.iter()
        .filter(|e| e.name() == what && e.id() == Some(id))
        .filter_map(|e| e.error().map(|e| e.kind))
        .collect()
}

fn rejected(ev: &[Recorded]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Recorded::Accept { rejected: true, .. }))
        .count()
}

/// A hook that records the most connections the tracker held at any accept (the registry's
/// own count: a limit slot is taken before registration and given back after removal).
#[derive(Clone)]
struct MostOpen(Tracker, Arc<AtomicUsize>);

impl conntrack_core::Hook for MostOpen {
    fn on_accept(&self, _ev: &conntrack_core::AcceptEvent<'_>) {
        self.1.fetch_max(self.0.len(), Ordering::SeqCst);
    }
}

fn most_open(tracker: &Tracker) -> (MostOpen, Arc<AtomicUsize>) {
    let most = Arc::new(AtomicUsize::new(0));
    (MostOpen(tracker.clone(), Arc::clone(&most)), most)
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the listener");
    s.set_read_timeout(Some(EVENT_TIMEOUT)).expect("timeout");
    s
}

/// Runs an accept loop on its own thread (in `scope`), each connection served on its own
/// thread by `serve`, until `stop` is set and one more connection (made by
/// [`stop_server`]) arrives.
fn serve<'s, H: ControlHarness>(
    scope: &'s std::thread::Scope<'s, '_>,
    h: &'s H,
    listener: &'s H::Listener,
    stop: &'s AtomicBool,
    serve: impl Fn(H::Conn) + Send + Sync + Copy + 's,
) -> std::thread::ScopedJoinHandle<'s, ()> {
    scope.spawn(move || loop {
        let Ok(conn) = h.accept(listener) else {
            continue;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        scope.spawn(move || serve(conn));
    })
}

fn stop_server(stop: &AtomicBool, addr: SocketAddr) {
    stop.store(true, Ordering::SeqCst);
    drop(TcpStream::connect(addr));
}

/// Reads what the client sends and echoes it, until end of stream.
fn echo<C: Conn>(mut conn: C) {
    while let Ok(b) = conn.read_some(1024) {
        if b.is_empty() || conn.write_all(&b).is_err() {
            break;
        }
    }
}

fn wait_empty(tracker: &Tracker, rec: &RecordingHook, opened: usize) {
    rec.wait_for(
        |ev| ev.iter().filter(|e| e.name() == "close").count() >= opened,
        EVENT_TIMEOUT,
    )
    .unwrap_or_else(|ev| panic!("expected {opened} closes: {:?}", closes(&ev)));
    // The closes are reported; a drained tracker has also given their limit slots back (a
    // slot is released after the close hooks, before the close is counted).
    conntrack_core::blocking::block_on(tracker.drained());
    assert_eq!(tracker.len(), 0, "left: {:?}", tracker.connections());
}

/// Reject mode: with a limit of N and N+k clients, N are served, k are accepted and closed
/// at once (counted as rejected, reported to `on_accept`), never more than N are tracked, and
/// the listener serves again once a slot is free.
pub fn limit_rejects_extra<H: ControlHarness>(h: &H) {
    const N: usize = 2;
    const K: usize = 3;
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let (most_hook, most_seen) = most_open(&tracker);
    let config = ListenerConfig::new()
        .category("limited")
        .max_connections(N)
        .limit_mode(LimitMode::Reject)
        .hook(rec.clone())
        .hook(most_hook);
    let (listener, addr) = h.listen(&tracker, config.clone()).expect("listen");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        serve(s, h, &listener, &stop, echo);
        // N clients served (each gets its echo), then k more.
        let mut held: Vec<TcpStream> = (0..N)
            .map(|_| {
                let mut c = client(addr);
                c.write_all(b"hi").unwrap();
                let mut b = [0; 2];
                c.read_exact(&mut b)
                    .expect("a client within the limit is served");
                c
            })
            .collect();
        for _ in 0..K {
            let mut c = client(addr);
            let mut b = [0; 1];
            // Accepted and closed at once: end of stream (or a reset).
            assert!(
                matches!(c.read(&mut b), Ok(0) | Err(_)),
                "{}: a client over the limit is closed",
                h.name()
            );
        }
        rec.wait_for(|ev| rejected(ev) >= K, EVENT_TIMEOUT)
            .expect("k rejections reported");
        let stats = tracker.stats();
        let st = stats.get("limited", Role::Server).expect("stats");
        assert_eq!(st.rejected, K as u64, "{}: {st:?}", h.name());
        assert_eq!(
            st.opened,
            N as u64,
            "{}: rejected ones are not opened",
            h.name()
        );
        assert!(tracker.len() <= N);
        // A slot frees: the listener serves again.
        drop(held.pop());
        rec.wait_for(|ev| !closes(ev).is_empty(), EVENT_TIMEOUT)
            .expect("the client's close");
        let mut c = client(addr);
        c.write_all(b"ok").unwrap();
        let mut b = [0; 2];
        c.read_exact(&mut b).expect("served after a slot freed");
        assert_eq!(&b, b"ok");
        drop(c);
        drop(held);
        wait_empty(&tracker, &rec, N + 1);
        stop_server(&stop, addr);
    });
    let most = most_seen.load(Ordering::SeqCst);
    assert!(most <= N, "{}: {most} open at once", h.name());
    assert_eq!(
        config.limited_connections(),
        0,
        "{}: slots given back",
        h.name()
    );
    wait_empty(&tracker, &rec, N + 2);
}

/// Wait mode (the default): N+k clients all get served, never more than N at once, none
/// rejected.
pub fn limit_waits_for_a_slot<H: ControlHarness>(h: &H) {
    const N: usize = 2;
    const K: usize = 4;
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let (most_hook, most_seen) = most_open(&tracker);
    let config = ListenerConfig::new()
        .category("waiting")
        .max_connections(N)
        .hook(rec.clone())
        .hook(most_hook);
    let (listener, addr) = h.listen(&tracker, config.clone()).expect("listen");
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    std::thread::scope(|s| {
        serve(s, h, &listener, &stop, echo);
        let clients: Vec<_> = (0..N + K)
            .map(|i| {
                let (served, most, tracker) = (&served, &most, &tracker);
                s.spawn(move || {
                    let mut c = client(addr);
                    c.write_all(&[u8::try_from(i).unwrap(); 4]).unwrap();
                    let mut b = [0; 4];
                    c.read_exact(&mut b)
                        .expect("every client is served in time");
                    most.fetch_max(tracker.len(), Ordering::SeqCst);
                    served.fetch_add(1, Ordering::SeqCst);
                    // Hold the slot a little, so later clients really wait (the scenario).
                    std::thread::sleep(Duration::from_millis(20));
                })
            })
            .collect();
        for c in clients {
            c.join().expect("client");
        }
        wait_empty(&tracker, &rec, N + K);
        stop_server(&stop, addr);
    });
    assert_eq!(served.load(Ordering::SeqCst), N + K);
    assert!(most.load(Ordering::SeqCst) <= N);
    let ev = rec.events();
    let most = most_seen.load(Ordering::SeqCst);
    assert!(most <= N, "{}: {most} open at once", h.name());
    assert_eq!(rejected(&ev), 0, "{}: wait mode rejects none", h.name());
    let stats = tracker.stats();
    let st = stats.get("waiting", Role::Server).expect("stats");
    assert_eq!((st.opened, st.rejected), ((N + K + 1) as u64, 0));
    wait_empty(&tracker, &rec, N + K + 1);
}

/// Stops accept loops of [`serve`] (each with its listener's address) when dropped, also
/// when a scenario fails, so that its thread scope ends: sets the flag, then connects until
/// each loop has ended (a connection the listener refused does not end it), for at most the
/// event timeout per loop.
struct StopServers<'a, 's>(
    &'a AtomicBool,
    Vec<(SocketAddr, std::thread::ScopedJoinHandle<'s, ()>)>,
);

impl Drop for StopServers<'_, '_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        for (addr, accepting) in &self.1 {
            let started = Instant::now();
            while !accepting.is_finished() && started.elapsed() < EVENT_TIMEOUT {
                drop(TcpStream::connect(addr));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Wait mode with two accepters sharing one limit of 1 (two listeners given clones of one
/// config, each accepting on its own thread): while the first client is served, the second
/// accepter may already be blocked in its accept. The second client is then not refused: it
/// is not closed, it is served once the first closes, and nothing is counted as rejected.
pub fn limit_waits_with_two_accepters<H: ControlHarness>(h: &H) {
    const NOT_YET: Duration = Duration::from_millis(300);
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let config = ListenerConfig::new()
        .category("shared")
        .max_connections(1)
        .limit_mode(LimitMode::Wait)
        .hook(rec.clone());
    let (first_listener, first_addr) = h.listen(&tracker, config.clone()).expect("listen");
    let (second_listener, second_addr) = h.listen(&tracker, config.clone()).expect("listen");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopServers(
            &stop,
            vec![
                (first_addr, serve(s, h, &first_listener, &stop, echo)),
                (second_addr, serve(s, h, &second_listener, &stop, echo)),
            ],
        );
        // Both accepters reach their accept while no slot is taken (the scenario's setup).
        std::thread::sleep(Duration::from_millis(100));
        let mut first = client(first_addr);
        first.write_all(b"1").unwrap();
        let mut b = [0; 1];
        first
            .read_exact(&mut b)
            .expect("the first client is served");
        let mut second = client(second_addr);
        second.write_all(b"2").unwrap();
        second.set_read_timeout(Some(NOT_YET)).unwrap();
        match second.read(&mut b) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!(
                "{}: the second client must wait for the slot, not be served or closed: {other:?}",
                h.name()
            ),
        }
        assert_eq!(
            rejected(&rec.events()),
            0,
            "{}: wait mode rejects none",
            h.name()
        );
        assert_eq!(tracker.len(), 1, "{}", h.name());
        // The slot frees: the second client is served.
        drop(first);
        second.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        second
            .read_exact(&mut b)
            .unwrap_or_else(|e| panic!("{}: served once the first closed: {e}", h.name()));
        assert_eq!(&b, b"2");
        drop(second);
        wait_empty(&tracker, &rec, 2);
    });
    let ev = rec.events();
    assert_eq!(rejected(&ev), 0, "{}: wait mode rejects none", h.name());
    let stats = tracker.stats();
    let st = stats.get("shared", Role::Server).expect("stats");
    // The two clients, and one connection per accept loop to stop it.
    assert_eq!((st.opened, st.rejected), (4, 0), "{}", h.name());
    assert_eq!(
        config.limited_connections(),
        0,
        "{}: slots given back",
        h.name()
    );
    wait_empty(&tracker, &rec, 4);
}

/// A hook that counts the connections refused at accept.
#[derive(Clone, Default)]
struct CountRejected(Arc<AtomicUsize>);

impl conntrack_core::Hook for CountRejected {
    fn on_accept(&self, ev: &conntrack_core::AcceptEvent<'_>) {
        if ev.rejected {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Wait mode under load: two accepters (two listeners given clones of one config, each
/// accepting on its own thread) share a limit of 1 while 8 client threads make 1,600 short
/// connections to both at once, so that whenever the slot frees both accepters find it free
/// and accept. Every client is served, never more than one connection is tracked at once,
/// and none is rejected: the connection that finds the slot taken waits for the next one.
pub fn limit_waits_with_two_accepters_under_load<H: ControlHarness>(h: &H) {
    const CLIENT_THREADS: usize = 8;
    const EACH: usize = 200;
    let tracker = Tracker::new();
    let refused = CountRejected::default();
    let (most_hook, most_seen) = most_open(&tracker);
    let config = ListenerConfig::new()
        .category("shared")
        .max_connections(1)
        .limit_mode(LimitMode::Wait)
        .hook(refused.clone())
        .hook(most_hook);
    let (first_listener, first_addr) = h.listen(&tracker, config.clone()).expect("listen");
    let (second_listener, second_addr) = h.listen(&tracker, config.clone()).expect("listen");
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        let _stop = StopServers(
            &stop,
            vec![
                (first_addr, serve(s, h, &first_listener, &stop, echo)),
                (second_addr, serve(s, h, &second_listener, &stop, echo)),
            ],
        );
        let clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|t| {
                let served = &served;
                s.spawn(move || {
                    for i in 0..EACH {
                        let addr = if (t + i) % 2 == 0 {
                            first_addr
                        } else {
                            second_addr
                        };
                        let mut c = client(addr);
                        let mut b = [0; 1];
                        // A refused client sees its connection closed (end of stream or
                        // a reset): counted, and the next one goes on.
                        if c.write_all(b"x")
                            .and_then(|()| c.read_exact(&mut b))
                            .is_ok()
                        {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            if let Err(p) = c.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    let n = CLIENT_THREADS * EACH;
    let (served, refused) = (
        served.load(Ordering::SeqCst),
        refused.0.load(Ordering::SeqCst),
    );
    assert_eq!(
        (served, refused),
        (n, 0),
        "{}: wait mode serves every client and rejects none (served, rejected)",
        h.name()
    );
    let stats = tracker.stats();
    let st = stats.get("shared", Role::Server).expect("stats");
    // The clients, and at least one connection per accept loop to stop it.
    assert_eq!(st.rejected, 0, "{}: {st:?}", h.name());
    assert!(st.opened >= n as u64 + 2, "{}: {st:?}", h.name());
    let most = most_seen.load(Ordering::SeqCst);
    assert!(most <= 1, "{}: {most} open at once", h.name());
    conntrack_core::blocking::block_on(tracker.drained());
    assert_eq!(
        config.limited_connections(),
        0,
        "{}: slot given back",
        h.name()
    );
    assert_eq!(config.limit_waiters(), 0, "{}: nobody waits", h.name());
    eprintln!(
        "{}: {n} connections through a shared limit of 1 in {:?}",
        h.name(),
        started.elapsed()
    );
}

/// A per-IP limit (all clients come from 127.0.0.1) rejects past it, whatever the mode.
pub fn per_ip_limit_rejects<H: ControlHarness>(h: &H) {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let config = ListenerConfig::new()
        .category("per-ip")
        .max_connections_per_ip(1)
        .hook(rec.clone());
    let (listener, addr) = h.listen(&tracker, config).expect("listen");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        serve(s, h, &listener, &stop, echo);
        let mut first = client(addr);
        first.write_all(b"a").unwrap();
        let mut b = [0; 1];
        first.read_exact(&mut b).unwrap();
        let mut second = client(addr);
        assert!(matches!(second.read(&mut b), Ok(0) | Err(_)));
        rec.wait_for(|ev| rejected(ev) >= 1, EVENT_TIMEOUT)
            .expect("rejection");
        drop(first);
        wait_empty(&tracker, &rec, 1);
        stop_server(&stop, addr);
    });
    wait_empty(&tracker, &rec, 2);
}

/// The idle timeout closes the idle connection (reason `idle_timeout`, in `on_close` and
/// the history) and not one that keeps reading and writing; its blocked read fails.
pub fn idle_timeout_closes_only_idle<H: ControlHarness>(h: &H) {
    const IDLE: Duration = Duration::from_millis(300);
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = ListenerConfig::new()
        .category("idle")
        .idle_timeout(IDLE)
        .hook(rec.clone());
    let d = DialerConfig::new().category("idle-out");
    let (idle_server, idle_client) = h.connect(&tracker, l.clone(), d.clone()).unwrap();
    let (busy_server, mut busy_client) = h.connect(&tracker, l, d).unwrap();
    let idle_id = idle_server.id();
    let busy_id = busy_server.id();
    let _policies = policies(h, &tracker);
    // The idle server end blocks in a read; the policy's abort must wake it.
    let blocked = idle_server.spawn(|c| c.read_some(16));
    let busy = busy_server.spawn(|c| {
        let mut n = 0;
        while let Ok(b) = c.read_some(64) {
            if b.is_empty() {
                break;
            }
            n += b.len();
        }
        n
    });
    // Busy: a write every IDLE/6 for 4 x IDLE (the scenario's own time).
    let started = Instant::now();
    let mut last_write = started;
    while started.elapsed() < IDLE * 4 {
        busy_client.write_all(b"tick").expect("busy client writes");
        last_write = Instant::now();
        std::thread::sleep(IDLE / 6);
        assert!(
            tracker.get(busy_id).is_some(),
            "{}: an active connection was closed by the idle policy",
            h.name()
        );
    }
    let ev = rec
        .wait_for(
            |ev| closes(ev).iter().any(|(c, _)| c.id == idle_id),
            EVENT_TIMEOUT,
        )
        .expect("the idle connection closes");
    let (info, reason) = closes(&ev)
        .into_iter()
        .find(|(c, _)| c.id == idle_id)
        .unwrap();
    assert_eq!(reason, CloseReason::IdleTimeout, "{}", h.name());
    assert!(
        info.established_for >= IDLE,
        "{}: closed early: {info:?}",
        h.name()
    );
    let (_, res) = blocked.join().unwrap();
    let err = res.expect_err("the blocked read fails");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionAborted,
        "{}: {err}",
        h.name()
    );
    let hist = tracker.recently_closed();
    let h_idle = hist
        .iter()
        .find(|c| c.info.id == idle_id)
        .expect("in history");
    assert_eq!(h_idle.reason, CloseReason::IdleTimeout);
    // The busy one has gone quiet since its last write: having read and written, it closes
    // one idle timeout after its last I/O (not never, not at once).
    let ev = rec
        .wait_for(
            |ev| closes(ev).iter().any(|(c, _)| c.id == busy_id),
            EVENT_TIMEOUT,
        )
        .unwrap_or_else(|_| {
            panic!(
                "{}: a connection quiet after some I/O never closed: {:?}",
                h.name(),
                tracker.get(busy_id)
            )
        });
    let quiet = last_write.elapsed();
    let (info, reason) = closes(&ev)
        .into_iter()
        .find(|(c, _)| c.id == busy_id)
        .unwrap();
    assert_eq!(reason, CloseReason::IdleTimeout, "{}", h.name());
    // The coarse clock of the last I/O ticks every 1 to 10 ms.
    assert!(
        quiet + Duration::from_millis(20) >= IDLE,
        "{}: closed {quiet:?} after its last write: {info:?}",
        h.name()
    );
    assert!(info.read_bytes > 0, "{}: {info:?}", h.name());
    assert_eq!(busy.join().unwrap().1 as u64, info.read_bytes);
    drop(idle_client);
    drop(busy_client);
    rec.wait_for(|ev| closes(ev).len() >= 2, EVENT_TIMEOUT)
        .expect("both server ends close");
    assert_eq!(tracker.len(), 0, "{:?}", tracker.connections());
}

/// The maximum age closes a connection however busy it is, with reason `max_age`; the
/// client end (no policy) is closed by the peer, not by a policy.
pub fn max_age_closes_busy_connections<H: ControlHarness>(h: &H) {
    const AGE: Duration = Duration::from_millis(300);
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = ListenerConfig::new()
        .category("aged")
        .max_age(AGE)
        .hook(rec.clone());
    let d = DialerConfig::new().category("aged-out").hook(rec.clone());
    let (server, mut client) = h.connect(&tracker, l, d).unwrap();
    let sid = server.id();
    let _policies = policies(h, &tracker);
    let reader = server.spawn(|c| loop {
        match c.read_some(64) {
            Ok(b) if b.is_empty() => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    });
    // Busy until the server end is gone (bounded by the event timeout).
    let started = Instant::now();
    while tracker.get(sid).is_some() && started.elapsed() < EVENT_TIMEOUT {
        if client.write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(AGE / 10);
    }
    let ev = rec
        .wait_for(
            |ev| closes(ev).iter().any(|(c, _)| c.id == sid),
            EVENT_TIMEOUT,
        )
        .expect("the old connection closes");
    let (info, reason) = closes(&ev).into_iter().find(|(c, _)| c.id == sid).unwrap();
    assert_eq!(reason, CloseReason::MaxAge, "{}", h.name());
    assert!(info.established_for >= AGE, "{}: {info:?}", h.name());
    let (server, res) = reader.join().unwrap();
    assert_eq!(
        res.expect_err("the server's read fails").kind(),
        io::ErrorKind::ConnectionAborted
    );
    drop(server);
    let cid = client.id();
    drop(client);
    let ev = rec
        .wait_for(|ev| closes(ev).len() >= 2, EVENT_TIMEOUT)
        .expect("client close");
    let (_, reason) = closes(&ev).into_iter().find(|(c, _)| c.id == cid).unwrap();
    assert!(
        !matches!(reason, CloseReason::MaxAge | CloseReason::IdleTimeout),
        "{}: the client had no policy: {reason}",
        h.name()
    );
    assert_eq!(tracker.len(), 0);
}

/// The same policies set on a `DialerConfig` apply to the connections its dialer makes: an
/// idle dialed connection is closed by `idle_timeout` (its blocked read fails), a busy one by
/// `max_age`, and `tcp_info(false)` leaves the dialed end without TCP statistics; the
/// accepted ends, whose listener has none of these, stay open.
pub fn dialer_policies_apply_to_dialed_connections<H: ControlHarness>(h: &H) {
    const LIMIT: Duration = Duration::from_millis(300);
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = ListenerConfig::new().category("in").hook(rec.clone());
    let idle_d = DialerConfig::new()
        .category("idle-out")
        .idle_timeout(LIMIT)
        .tcp_info(false)
        .hook(rec.clone());
    let aged_d = DialerConfig::new()
        .category("aged-out")
        .max_age(LIMIT)
        .hook(rec.clone());
    let (idle_server, idle_client) = h.connect(&tracker, l.clone(), idle_d).unwrap();
    let (aged_server, mut aged_client) = h.connect(&tracker, l, aged_d).unwrap();
    let (idle_id, aged_id) = (idle_client.id(), aged_client.id());
    let idle_sid = idle_server.id();
    if cfg!(any(target_os = "linux", target_os = "android")) && !h.tls() {
        let tcp_of = |id| tracker.get(id).expect("open").tcp;
        assert!(
            tcp_of(idle_id).is_none(),
            "{}: tcp_info(false) on the dialer",
            h.name()
        );
        assert!(
            tcp_of(idle_sid).is_some(),
            "{}: the accepted end reads TCP statistics by default",
            h.name()
        );
    }
    let _policies = policies(h, &tracker);
    // The idle dialed end blocks in a read; the policy's abort must wake it.
    let blocked = idle_client.spawn(|c| c.read_some(16));
    // The aged one keeps writing (the server end reads), until the policy closes it.
    let reader = aged_server.spawn(|c| while matches!(c.read_some(64), Ok(b) if !b.is_empty()) {});
    let started = Instant::now();
    while tracker.get(aged_id).is_some() && started.elapsed() < EVENT_TIMEOUT {
        if aged_client.write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(LIMIT / 10);
    }
    let ev = rec
        .wait_for(
            |ev| {
                let c = closes(ev);
                c.iter().any(|(i, _)| i.id == idle_id) && c.iter().any(|(i, _)| i.id == aged_id)
            },
            EVENT_TIMEOUT,
        )
        .unwrap_or_else(|ev| panic!("{}: dialed ends not closed: {:?}", h.name(), closes(&ev)));
    let reason_of = |id| {
        closes(&ev)
            .into_iter()
            .find(|(c, _)| c.id == id)
            .map(|(c, r)| (c.role, c.established_for, r))
    };
    let (role, age, reason) = reason_of(idle_id).unwrap();
    assert_eq!(role, Role::Client);
    assert_eq!(reason, CloseReason::IdleTimeout, "{}", h.name());
    assert!(age >= LIMIT, "{}: closed early ({age:?})", h.name());
    let (_, age, reason) = reason_of(aged_id).unwrap();
    assert_eq!(reason, CloseReason::MaxAge, "{}", h.name());
    assert!(age >= LIMIT, "{}: closed early ({age:?})", h.name());
    let (_, res) = blocked.join().unwrap();
    assert_eq!(
        res.expect_err("the blocked read fails").kind(),
        io::ErrorKind::ConnectionAborted,
        "{}",
        h.name()
    );
    // The accepted ends had no policy: the policies did not close them (the aged one may
    // have seen its peer go, which is not a policy close).
    assert!(
        tracker.get(idle_sid).is_some(),
        "{}: the idle accepted end stays",
        h.name()
    );
    drop(aged_client);
    drop(reader.join());
    drop(idle_server);
    wait_empty(&tracker, &rec, 4);
    for (c, reason) in closes(&rec.events()) {
        if c.role == Role::Server {
            assert!(
                !matches!(reason, CloseReason::MaxAge | CloseReason::IdleTimeout),
                "{}: an accepted end was closed by a dialer's policy: {reason}",
                h.name()
            );
        }
    }
}

/// `Tracker::abort(id)` wakes a task blocked reading that connection: the read fails with
/// `ConnectionAborted`, the close reason is `aborted`, and the other connection is untouched.
pub fn abort_wakes_blocked_read<H: ControlHarness>(h: &H) {
    let tracker = Tracker::new();
    let rec = RecordingHook::with_io();
    let l = ListenerConfig::new().category("ab").hook(rec.clone());
    let d = DialerConfig::new().category("ab-out").hook(rec.clone());
    let (server, client) = h.connect(&tracker, l.clone(), d.clone()).unwrap();
    let (other_server, mut other_client) = h.connect(&tracker, l, d).unwrap();
    let sid = server.id();
    let blocked = server.spawn(|c| c.read_some(16));
    // Wait until the read is really pending? It cannot be observed; an abort before the read
    // starts must fail it too, which is the same assertion.
    assert!(tracker.abort(sid), "{}: the connection was live", h.name());
    assert!(!tracker.abort(sid), "{}: aborted once", h.name());
    let (mut server, res) = blocked.join().unwrap();
    let err = res.expect_err("the blocked read fails");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionAborted,
        "{}: {err}",
        h.name()
    );
    assert!(
        server.write_all(b"late").is_err(),
        "{}: later I/O fails too",
        h.name()
    );
    let ev = rec
        .wait_for(|ev| !closes(ev).is_empty(), EVENT_TIMEOUT)
        .expect("close");
    assert_eq!(closes(&ev)[0].0.id, sid);
    assert_eq!(closes(&ev)[0].1, CloseReason::Aborted);
    // The hooks see the errors the caller got: the woken read's and the later write's, not
    // an end of stream (the abort's shutdown of the socket is not the peer's).
    assert_eq!(
        io_errors(&ev, sid, "read"),
        [io::ErrorKind::ConnectionAborted],
        "{}: on_read",
        h.name()
    );
    assert_eq!(
        io_errors(&ev, sid, "write"),
        [io::ErrorKind::ConnectionAborted],
        "{}: on_write",
        h.name()
    );
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Recorded::Read { id, n: 0, error: None } if *id == sid)),
        "{}: no end of stream reported",
        h.name()
    );
    assert!(tracker.get(sid).is_none());
    // The other connection still works.
    other_client.write_all(b"ping").unwrap();
    let mut other_server = other_server;
    let mut b = [0; 4];
    other_server.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    drop((server, client, other_server, other_client));
    rec.wait_for(|ev| closes(ev).len() >= 4, EVENT_TIMEOUT)
        .expect("closes");
    assert_eq!(tracker.len(), 0);
}

/// `Tracker::abort(id)` wakes a task blocked in a write: the peer reads nothing, so the
/// writes fill both socket buffers and block; the abort makes the write fail with
/// `ConnectionAborted`, and the close reason is `aborted`.
pub fn abort_wakes_blocked_write<H: ControlHarness>(h: &H) {
    let tracker = Tracker::new();
    let rec = RecordingHook::with_io();
    let l = ListenerConfig::new().category("abw").hook(rec.clone());
    let d = DialerConfig::new().category("abw-out").hook(rec.clone());
    let (server, client) = h.connect(&tracker, l, d).unwrap();
    let cid = client.id();
    let started = Instant::now();
    let (finished, writer_done) = std::sync::mpsc::channel();
    let writer = client.spawn(move |c| {
        let chunk = vec![7u8; 64 * 1024];
        // Bounded: a write that never blocks stops after this much (the test then fails).
        let mut failed = None;
        for _ in 0..4096 {
            if let Err(e) = c.write_all(&chunk) {
                failed = Some(e);
                break;
            }
        }
        let _ = finished.send(());
        failed
    });
    // Blocked once the written count stops moving for a while.
    let mut last = 0;
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_millis(200) {
        assert!(
            started.elapsed() < EVENT_TIMEOUT && !writer.is_finished(),
            "{}: the writer never blocked",
            h.name()
        );
        let now = tracker.get(cid).map_or(0, |c| c.write_bytes);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(tracker.abort(cid), "{}: the connection was live", h.name());
    // The abort must end the write: wait for the writer, bounded.
    writer_done
        .recv_timeout(EVENT_TIMEOUT)
        .unwrap_or_else(|_| panic!("{}: the blocked write was not woken by the abort", h.name()));
    let (client, err) = writer.join().unwrap();
    let err = err.expect("the blocked write fails");
    assert_eq!(
        err.kind(),
        io::ErrorKind::ConnectionAborted,
        "{}: {err}",
        h.name()
    );
    let ev = rec
        .wait_for(|ev| !closes(ev).is_empty(), EVENT_TIMEOUT)
        .expect("close");
    assert_eq!(closes(&ev)[0].0.id, cid);
    assert_eq!(closes(&ev)[0].1, CloseReason::Aborted, "{}", h.name());
    // `on_write` sees the error the writer got (not a partial write).
    assert_eq!(
        io_errors(&ev, cid, "write"),
        [io::ErrorKind::ConnectionAborted],
        "{}: on_write",
        h.name()
    );
    drop((server, client));
    rec.wait_for(|ev| closes(ev).len() >= 2, EVENT_TIMEOUT)
        .expect("closes");
    assert_eq!(tracker.len(), 0);
}

/// The idle time recorded when the idle timeout closes a connection is the idle time that
/// closed it, at least the timeout, in `on_close` and in the history: also when the abort
/// wakes a read blocked on the connection (on std the socket's shutdown makes it return end
/// of stream, which is not activity).
pub fn idle_timeout_records_idle_time<H: ControlHarness>(h: &H) {
    const IDLE: Duration = Duration::from_millis(200);
    const PAIRS: usize = 4;
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = ListenerConfig::new()
        .category("idle-for")
        .idle_timeout(IDLE)
        .hook(rec.clone());
    let d = DialerConfig::new().category("idle-for-out");
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let (mut server, mut client) = h.connect(&tracker, l.clone(), d.clone()).unwrap();
        // Some I/O, then quiet: the server end blocks in a read until the abort wakes it.
        client.write_all(b"hi").expect("client writes");
        let mut b = [0; 2];
        server.read_exact(&mut b).expect("server reads");
        let id = server.id();
        let blocked = server.spawn(|c| c.read_some(16));
        pairs.push((id, blocked, client));
    }
    let _policies = policies(h, &tracker);
    let ev = rec
        .wait_for(|ev| closes(ev).len() >= PAIRS, EVENT_TIMEOUT)
        .unwrap_or_else(|ev| panic!("{}: closes: {:?}", h.name(), closes(&ev)));
    for (info, reason) in closes(&ev) {
        assert_eq!(reason, CloseReason::IdleTimeout, "{}: {info:?}", h.name());
        assert!(
            info.idle_for >= IDLE,
            "{}: on_close says idle for {:?}, closed by a timeout of {IDLE:?}: {info:?}",
            h.name(),
            info.idle_for
        );
    }
    let mut clients = Vec::new();
    for (id, blocked, client) in pairs {
        // The blocked read ends (the abort's error, or end of stream).
        let (_, res) = blocked.join().unwrap();
        assert!(
            res.as_ref().map_or(true, Vec::is_empty),
            "{}: {res:?}",
            h.name()
        );
        // (The history gets the record just after `on_close` has run.)
        let started = Instant::now();
        let closed = loop {
            if let Some(c) = tracker
                .recently_closed()
                .into_iter()
                .find(|c| c.info.id == id)
            {
                break c;
            }
            assert!(
                started.elapsed() < EVENT_TIMEOUT,
                "{}: not in the history",
                h.name()
            );
            std::thread::yield_now();
        };
        assert_eq!(closed.reason, CloseReason::IdleTimeout);
        assert!(
            closed.info.idle_for >= IDLE,
            "{}: the history says idle for {:?}: {:?}",
            h.name(),
            closed.info.idle_for,
            closed.info
        );
        clients.push(client);
    }
}

/// `shutdown(grace)` with an idle, a busy and a stuck connection (each end marks its
/// exchanges): the idle pair closes at once, the busy pair when its exchange ends, the stuck
/// pair is aborted at the deadline (its blocked read fails) and listed in the report; new
/// connections are refused meanwhile.
pub fn shutdown_with_deadline<H: ControlHarness>(h: &H) {
    const GRACE: Duration = Duration::from_millis(600);
    const BUSY_FOR: Duration = Duration::from_millis(200);
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = ListenerConfig::new().category("sd").hook(rec.clone());
    let d = DialerConfig::new().category("sd-out").hook(rec.clone());
    let pair = || {
        let (s, c) = h.connect(&tracker, l.clone(), d.clone()).unwrap();
        for id in [s.id(), c.id()] {
            tracker.lookup(id).unwrap().begin_exchange();
        }
        (s, c)
    };
    let (idle_s, idle_c) = pair();
    let (busy_s, busy_c) = pair();
    let (stuck_s, stuck_c) = pair();
    for id in [idle_s.id(), idle_c.id()] {
        tracker.lookup(id).unwrap().end_exchange();
    }
    let busy_refs = [busy_s.id(), busy_c.id()].map(|id| tracker.lookup(id).unwrap());
    let stuck_ids = [stuck_s.id(), stuck_c.id()];
    let blocked = stuck_s.spawn(|c| c.read_some(16));
    let report = std::thread::scope(|s| {
        let busy = s.spawn(|| {
            std::thread::sleep(BUSY_FOR);
            for r in &busy_refs {
                r.end_exchange();
            }
        });
        let started = Instant::now();
        let report = h.shutdown(&tracker, GRACE);
        let elapsed = started.elapsed();
        busy.join().unwrap();
        eprintln!(
            "{}: shutdown({GRACE:?}) took {elapsed:?} (report: {:?})",
            h.name(),
            report.elapsed
        );
        report
    });
    // Refused from now on: every listener registers through `admit`.
    let refused = tracker
        .admit(
            &l,
            conntrack_core::Addr::Unknown,
            conntrack_core::Addr::Unknown,
        )
        .expect_err("no new connection during a shutdown");
    assert_eq!(refused.kind(), io::ErrorKind::Interrupted);
    assert_eq!(rejected(&rec.events()), 1);
    assert!(!report.drained, "{}: {report:?}", h.name());
    assert!(report.elapsed >= GRACE, "{}: {report:?}", h.name());
    assert_eq!(
        (report.closed_idle, report.closed_busy),
        (2, 2),
        "{}: the idle pair, the busy pair: {report:?}",
        h.name()
    );
    let mut listed: Vec<_> = report.still_open.iter().map(|c| c.id).collect();
    listed.sort();
    let mut want = stuck_ids.to_vec();
    want.sort();
    assert_eq!(
        listed,
        want,
        "{}: only the stuck pair: {report:?}",
        h.name()
    );
    // The stuck read ends: it fails with the abort, or reads the end of stream of its peer,
    // aborted a moment earlier (on std the abort shuts the socket down).
    let (_, res) = blocked.join().unwrap();
    match res {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{}", h.name()),
        Ok(b) => assert!(b.is_empty(), "{}: {b:?}", h.name()),
    }
    let ev = rec
        .wait_for(|ev| closes(ev).len() >= 6, EVENT_TIMEOUT)
        .expect("6 closes");
    for (c, reason) in closes(&ev) {
        let want = if stuck_ids.contains(&c.id) {
            CloseReason::ShutdownDeadline
        } else {
            CloseReason::Shutdown
        };
        assert_eq!(reason, want, "{}: {c:?}", h.name());
    }
    assert_eq!(tracker.len(), 0);
    drop((idle_s, idle_c, busy_s, busy_c, stuck_c));
}

/// After `Tracker::shutdown`, the adapter's listener refuses new connections: each is taken
/// off the accept queue and closed at once (the client reads end of stream or a reset),
/// counted as rejected and reported to `on_accept`, and none is returned or tracked.
pub fn listener_refuses_after_shutdown<H: ControlHarness>(h: &H) {
    const CLIENTS: usize = 3;
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let config = ListenerConfig::new().category("closing").hook(rec.clone());
    let (listener, addr) = h.listen(&tracker, config).expect("listen");
    let report = h.shutdown(&tracker, Duration::from_millis(10));
    assert!(report.drained, "{}: nothing was open", h.name());
    // The connects complete in the listen backlog; the listener then refuses each.
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| client(addr)).collect();
    let accepted = h.accept_within(&listener, Duration::from_millis(500));
    assert!(
        accepted.is_none(),
        "{}: a connection was accepted after the shutdown",
        h.name()
    );
    rec.wait_for(|ev| rejected(ev) >= CLIENTS, EVENT_TIMEOUT)
        .unwrap_or_else(|ev| panic!("{}: refusals: {}", h.name(), rejected(&ev)));
    for mut c in clients {
        let mut b = [0; 1];
        assert!(
            matches!(c.read(&mut b), Ok(0) | Err(_)),
            "{}: a refused client is closed",
            h.name()
        );
    }
    let stats = tracker.stats();
    let s = stats.get("closing", Role::Server).expect("server stats");
    assert_eq!(s.rejected, CLIENTS as u64, "{}", h.name());
    assert_eq!(s.opened, 0, "{}", h.name());
    assert_eq!(tracker.len(), 0);
}
