//! The load scenarios, written once for every adapter: many concurrent tracked pairs with
//! traffic and exact counts ([`concurrent_pairs`]), and a long churn of short connections that
//! end in bad ways ([`churn_with_faults`]).
//!
//! Like the conformance suite they drive the adapter through blocking calls ([`Conn`]), one
//! step at a time from the test thread, so the same code runs on tokio, smol, async-std and
//! std. "Concurrent" means all the pairs are open and tracked at once (two descriptors each);
//! the traffic on them is exchanged pair by pair, which keeps each step small enough for the
//! socket buffers and the run deterministic.
//!
//! Sizes come from the environment so that `cargo xtask stress` can run them at full size:
//! `CONNTRACK_STRESS_CONNS` (pairs, default [`DEFAULT_PAIRS`]) and `CONNTRACK_CHURN_CONNS`
//! (connections, default [`DEFAULT_CHURN`]). Every loop is bounded by its count and by
//! [`TIME_LIMIT`].

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conntrack_core::{
    AcceptEvent, CloseEvent, ConnectionId, DialEvent, DialerConfig, Hook, ListenerConfig, Role,
    Tracker,
};

use crate::Conn;

/// Pairs the concurrent scenario opens when `CONNTRACK_STRESS_CONNS` is unset (CI's size).
pub const DEFAULT_PAIRS: usize = 300;
/// Connections the churn scenario makes when `CONNTRACK_CHURN_CONNS` is unset (CI's size).
pub const DEFAULT_CHURN: usize = 1_000;
/// A scenario that runs longer than this fails instead of going on.
pub const TIME_LIMIT: Duration = Duration::from_secs(600);

/// An adapter's tracked listener and dialer on one loopback address.
pub trait Endpoints {
    /// One end of a tracked connection.
    type Conn: Conn;

    /// A short name for messages (`"tokio"`, `"std"`, ...).
    fn name(&self) -> &'static str;

    /// Dials the listener with the tracked dialer. The connect completes in the listen
    /// backlog, so it does not need a concurrent accept.
    fn dial(&mut self) -> io::Result<Self::Conn>;

    /// Accepts the next connection with the tracked listener.
    fn accept(&mut self) -> io::Result<Self::Conn>;

    /// Polls a dial future once and drops it: a cancelled dial. `None` where the adapter cannot
    /// cancel a dial (blocking std); otherwise whether the dial had completed in that one poll
    /// (its connection then opened and closed at once).
    fn cancelled_dial(&mut self) -> Option<bool> {
        None
    }

    /// Polls an accept future once and drops it: a cancelled accept. `None` where the adapter
    /// cannot cancel an accept; otherwise whether it accepted a connection in that one poll
    /// (which is then dropped at once).
    fn cancelled_accept(&mut self) -> Option<bool> {
        None
    }

    /// Runs a server-side TLS handshake on `server` whose client sent plain-text garbage, so
    /// the handshake fails (reported on the connection and counted). `None` where the harness
    /// has no TLS; otherwise the handshake's result.
    fn tls_garbage(&mut self, server: Self::Conn) -> Option<io::Result<()>> {
        drop(server);
        None
    }
}

/// Makes [`Endpoints`] for a tracker.
pub trait LoadHarness {
    /// The endpoints this adapter makes.
    type Endpoints: Endpoints;

    /// Binds a tracked listener on `127.0.0.1:0` with `listener` and a tracked dialer for it
    /// with `dialer`, both on `tracker`.
    ///
    /// # Errors
    ///
    /// As binding the listener.
    fn bind(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<Self::Endpoints>;
}

/// The size from environment variable `var`, or `default`.
#[must_use]
pub fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts opens and closes per connection id, and (if asked) panics on every 7th close.
#[derive(Default)]
struct Ledger {
    events: Mutex<HashMap<ConnectionId, (u32, u32)>>,
    panic_every_7th: bool,
    closes: AtomicU64,
    panics: AtomicU64,
}

impl Ledger {
    fn open(&self, id: ConnectionId) {
        self.events.lock().unwrap().entry(id).or_default().0 += 1;
    }

    fn assert_one_close_per_open(&self, opened: u64) {
        let events = self.events.lock().unwrap();
        assert_eq!(
            events.len() as u64,
            opened,
            "an entry per opened connection"
        );
        let bad: Vec<_> = events
            .iter()
            .filter(|(_, &(o, c))| (o, c) != (1, 1))
            .take(5)
            .collect();
        assert!(bad.is_empty(), "not one open and one close: {bad:?}");
    }
}

impl Hook for Ledger {
    fn on_accept(&self, ev: &AcceptEvent<'_>) {
        if let Some(c) = ev.connection {
            self.open(c.id);
        }
    }
    fn on_dial(&self, ev: &DialEvent<'_>) {
        if let Some(c) = ev.connection {
            self.open(c.id);
        }
    }
    fn on_close(&self, ev: &CloseEvent<'_>) {
        self.events
            .lock()
            .unwrap()
            .entry(ev.connection.id)
            .or_default()
            .1 += 1;
        if self.panic_every_7th && self.closes.fetch_add(1, Ordering::Relaxed) % 7 == 6 {
            self.panics.fetch_add(1, Ordering::Relaxed);
            panic!("{DELIBERATE}");
        }
    }
}

/// The message of the panics the churn provokes on purpose.
const DELIBERATE: &str = "a deliberate panic of the load scenario";

/// Silences the deliberate panics (hundreds of messages) from then on; other panics still
/// print through the hook that was installed before. Installed once per process and left in
/// place, since scenarios running in parallel share the process-wide panic hook.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m.contains(DELIBERATE)) {
                previous(info);
            }
        }));
    });
}

fn check_deadline(started: Instant, what: &str, i: usize) {
    assert!(
        started.elapsed() < TIME_LIMIT,
        "{what}: over {TIME_LIMIT:?} after {i} steps"
    );
}

/// What [`concurrent_pairs`] measured.
#[derive(Debug, Clone, Copy)]
pub struct PairsReport {
    /// Pairs open at once (twice as many tracker entries).
    pub pairs: usize,
    /// Bytes sent each way in total.
    pub bytes: u64,
    /// Full snapshots taken while closing.
    pub snapshots: usize,
    /// How long the run took.
    pub elapsed: Duration,
}

/// Opens `pairs` tracked pairs (server and client end on one tracker) and keeps them all open;
/// echoes a different 1-4 KiB message on each; then closes the clients one by one and the
/// servers after them.
///
/// Asserts: with everything open, `len()` and a snapshot count exactly `2 * pairs` and each
/// category's `active` is `pairs`; after every single close `len()` and the category's
/// `active` drop by exactly one (and a full snapshot every 500 closes agrees); byte totals
/// per category equal the bytes sent; every open has exactly one close; the tracker ends
/// empty.
///
/// # Panics
///
/// When an assertion fails or the adapter returns an I/O error.
pub fn concurrent_pairs<H: LoadHarness>(h: &H, pairs: usize) -> PairsReport {
    let started = Instant::now();
    let ledger = Arc::new(Ledger::default());
    let tracker = Tracker::builder().hook(Arc::clone(&ledger)).build();
    let mut ends = h
        .bind(
            &tracker,
            ListenerConfig::new().category("load-in"),
            DialerConfig::new().category("load-out"),
        )
        .expect("bind");
    let name = ends.name();

    let mut open = Vec::with_capacity(pairs);
    let mut sent = 0u64;
    for i in 0..pairs {
        check_deadline(started, name, i);
        let mut client = ends
            .dial()
            .unwrap_or_else(|e| panic!("{name}: dial {i}: {e}"));
        let mut server = ends
            .accept()
            .unwrap_or_else(|e| panic!("{name}: accept {i}: {e}"));
        let msg = vec![u8::try_from(i % 251).unwrap(); 1000 + (i * 7) % 3000];
        let mut got = vec![0; msg.len()];
        client.write_all(&msg).unwrap();
        server.read_exact(&mut got).unwrap();
        server.write_all(&got).unwrap();
        got.fill(0);
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, msg, "{name}: echo {i}");
        sent += msg.len() as u64;
        open.push((server, client));
    }

    let n = pairs as u64;
    assert_eq!(tracker.len(), 2 * pairs, "{name}: all open");
    assert_eq!(tracker.connections().len(), 2 * pairs);
    let stats = tracker.stats();
    let active = |stats: &conntrack_core::Stats, cat: &str, role: Role| {
        stats.get(cat, role).map_or(0, |c| c.active)
    };
    assert_eq!(active(&stats, "load-in", Role::Server), n);
    assert_eq!(active(&stats, "load-out", Role::Client), n);

    // Close clients one by one, then servers; every step is exact.
    let (servers, clients): (Vec<_>, Vec<_>) = open.into_iter().unzip();
    let mut left = 2 * pairs;
    let mut snapshots = 0;
    for (i, c) in clients.into_iter().enumerate() {
        drop(c);
        left -= 1;
        assert_eq!(tracker.len(), left, "{name}: after closing client {i}");
        let a = active(&tracker.stats(), "load-out", Role::Client);
        assert_eq!(a, (pairs - i - 1) as u64);
        if i % 500 == 0 {
            assert_eq!(tracker.connections().len(), left);
            snapshots += 1;
        }
    }
    for (i, s) in servers.into_iter().enumerate() {
        drop(s);
        left -= 1;
        assert_eq!(tracker.len(), left, "{name}: after closing server {i}");
        if i % 500 == 0 {
            assert_eq!(tracker.connections().len(), left);
            snapshots += 1;
        }
    }

    assert!(tracker.is_empty());
    assert!(tracker.connections().is_empty());
    let stats = tracker.stats();
    let s = stats.get("load-in", Role::Server).unwrap();
    let c = stats.get("load-out", Role::Client).unwrap();
    assert_eq!((s.opened, s.closed, s.active, s.failed), (n, n, 0, 0));
    assert_eq!((c.opened, c.closed, c.active, c.failed), (n, n, 0, 0));
    assert_eq!(
        (s.read_bytes, s.write_bytes),
        (sent, sent),
        "{name}: server bytes"
    );
    assert_eq!(
        (c.read_bytes, c.write_bytes),
        (sent, sent),
        "{name}: client bytes"
    );
    ledger.assert_one_close_per_open(2 * n);
    PairsReport {
        pairs,
        bytes: sent,
        snapshots,
        elapsed: started.elapsed(),
    }
}

/// Accepts until the connection accepted is `client`'s peer (its remote address is the
/// client's local address), dropping any other connection it accepts first: one a cancelled
/// dial left in the listen backlog. Every connection accepted is counted in `accepted`.
fn accept_peer<E: Endpoints>(
    ends: &mut E,
    tracker: &Tracker,
    client: &E::Conn,
    accepted: &mut u64,
) -> io::Result<E::Conn> {
    let want = tracker
        .get(client.id())
        .expect("the client is tracked")
        .local_addr;
    // Bounded: at most one leftover per cancelled dial or accept, a few per step.
    for _ in 0..100 {
        let s = ends.accept()?;
        *accepted += 1;
        let peer = tracker.get(s.id()).expect("just accepted").remote_addr;
        if peer == want {
            return Ok(s);
        }
    }
    panic!(
        "{}: the client's connection was never accepted",
        ends.name()
    );
}

/// What [`churn_with_faults`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChurnReport {
    /// Connections attempted.
    pub attempts: usize,
    /// Client entries opened (dials that made a connection).
    pub dialed: u64,
    /// Server entries opened.
    pub accepted: u64,
    /// Dial futures dropped after one poll.
    pub cancelled_dials: u64,
    /// Accept futures dropped after one poll.
    pub cancelled_accepts: u64,
    /// Streams dropped by a thread that panicked while holding them.
    pub owner_panics: u64,
    /// TLS handshakes fed garbage.
    pub tls_garbage: u64,
    /// Panics of the tracker's hook, as counted by the tracker.
    pub hook_panics: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

/// Makes `n` short connections one after another, each ending in one of ten ways: a clean echo;
/// a reset (the server closes with unread data); a half-close; an abrupt drop mid-transfer; a
/// stream whose owning thread panics; a cancelled dial (where the adapter can cancel one); a
/// cancelled accept (likewise; it may complete in its one poll and be dropped at once); a TLS
/// handshake fed plain-text garbage (where the harness has TLS); a client that goes away with
/// the server's answer unread; a client that closes at once. The tracker's hook panics on every
/// 7th close.
///
/// Asserts: nothing is left tracked; per category opened = closed, active 0, failed 0; the
/// server's opened equals the connections accepted and the client's the dials made; every
/// open has exactly one close; `hook_panics` equals the panics thrown;
/// `tls_handshake_failed` equals the garbage handshakes.
///
/// # Panics
///
/// When an assertion fails or the adapter returns an unexpected I/O error.
#[allow(clippy::too_many_lines)]
pub fn churn_with_faults<H: LoadHarness>(h: &H, n: usize) -> ChurnReport {
    let started = Instant::now();
    quiet_deliberate_panics();
    let ledger = Arc::new(Ledger {
        panic_every_7th: true,
        ..Ledger::default()
    });
    let tracker = Tracker::builder().hook(Arc::clone(&ledger)).build();
    let mut ends = h
        .bind(
            &tracker,
            ListenerConfig::new().category("churn-in"),
            DialerConfig::new().category("churn-out"),
        )
        .expect("bind");
    let name = ends.name();
    let mut r = ChurnReport {
        attempts: n,
        ..ChurnReport::default()
    };

    for i in 0..n {
        check_deadline(started, name, i);
        let mut mode = i % 10;
        if mode == 5 {
            match ends.cancelled_dial() {
                Some(completed) => {
                    r.cancelled_dials += 1;
                    r.dialed += u64::from(completed);
                    // Whether or not the dial completed in its one poll, the kernel may
                    // have queued the connection on the listener: `accept_peer` accepts and
                    // drops such leftovers.
                    continue;
                }
                None => mode = 0,
            }
        }
        let mut c = ends
            .dial()
            .unwrap_or_else(|e| panic!("{name}: dial {i}: {e}"));
        r.dialed += 1;
        if mode == 6 {
            match ends.cancelled_accept() {
                Some(accepted) => {
                    r.cancelled_accepts += 1;
                    if accepted {
                        // Accepted in its only poll and dropped at once. (If that was a
                        // cancelled dial's connection, this client's server end is accepted
                        // and dropped later by `accept_peer`.)
                        r.accepted += 1;
                        drop(c);
                        continue;
                    }
                }
                None => mode = 0,
            }
        }
        let mut s = accept_peer(&mut ends, &tracker, &c, &mut r.accepted)
            .unwrap_or_else(|e| panic!("{name}: accept {i}: {e}"));
        match mode {
            // A clean echo (and the fallback of the modes an adapter cannot do).
            0 | 5 | 6 => {
                let mut buf = [0u8; 64];
                c.write_all(&[9; 64]).unwrap();
                s.read_exact(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
                c.read_exact(&mut buf).unwrap();
            }
            // Reset: the server closes with unread data.
            1 => {
                c.write_all(&[1; 4096]).unwrap();
                drop(s);
                let _ = c.read_some(16); // the reset, or end of stream
            }
            // Half-close: the client shuts its write half, the server reads to the end and
            // answers.
            2 => {
                c.write_all(b"half").unwrap();
                c.shutdown_write().unwrap();
                let got = s.read_to_end().unwrap();
                assert_eq!(got, b"half");
                s.write_all(&got).unwrap();
                drop(s);
                assert_eq!(c.read_to_end().unwrap(), b"half");
            }
            // Abrupt drop in the middle of a transfer: both ends go with data in flight.
            3 => {
                c.write_all(&[3; 32 * 1024]).unwrap();
                let _ = s.read_some(1024).unwrap();
                drop(s);
                drop(c);
            }
            // The thread holding the server end panics; the stream goes with its unwinding.
            4 => {
                c.write_all(b"x").unwrap();
                let joined = s
                    .spawn(|s| {
                        let _ = s.read_some(1);
                        panic!("{DELIBERATE}: the owner of a stream");
                    })
                    .join();
                assert!(joined.is_err());
                r.owner_panics += 1;
                assert_eq!(c.read_to_end().map(|v| v.len()).unwrap_or(0), 0);
            }
            // TLS fed garbage, where the harness has TLS; a clean close otherwise.
            7 => {
                c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .unwrap();
                if let Some(res) = ends.tls_garbage(s) {
                    assert!(res.is_err(), "{name}: a handshake on garbage fails");
                    r.tls_garbage += 1;
                }
                let _ = c.read_to_end();
            }
            // The client goes away with the server's answer unread.
            8 => {
                c.write_all(b"ask").unwrap();
                let mut buf = [0u8; 3];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&[8; 2048]).unwrap();
                drop(c);
                let _ = s.read_some(16);
            }
            // The client closes at once; the server reads the end of the stream.
            _ => {
                drop(c);
                assert!(s.read_some(16).map(|v| v.is_empty()).unwrap_or(true));
            }
        }
    }
    drop(ends);

    assert!(
        tracker.is_empty(),
        "{name}: still tracked: {:?}",
        tracker.connections()
    );
    let stats = tracker.stats();
    let s = stats.get("churn-in", Role::Server).unwrap();
    let c = stats.get("churn-out", Role::Client).unwrap();
    assert_eq!(s.opened, r.accepted, "{name}: every accept registered");
    assert_eq!(c.opened, r.dialed, "{name}: every dial registered");
    assert_eq!((s.closed, s.active, s.failed), (s.opened, 0, 0), "{name}");
    assert_eq!((c.closed, c.active, c.failed), (c.opened, 0, 0), "{name}");
    ledger.assert_one_close_per_open(s.opened + c.opened);
    assert_eq!(stats.hook_panics, ledger.panics.load(Ordering::Relaxed));
    assert!(stats.hook_panics > 0 || n < 7);
    assert_eq!(s.tls_handshake_failed, r.tls_garbage, "{name}");
    r.hook_panics = stats.hook_panics;
    r.elapsed = started.elapsed();
    r
}
