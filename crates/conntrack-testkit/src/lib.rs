//! Test support shared by every conntrack adapter.
//!
//! The [`conformance`] module holds one suite of scenarios, written once against the small
//! blocking [`Harness`] / [`Conn`] interface. Each adapter implements that interface for its
//! runtime (an async adapter blocks on its runtime inside each call) and runs every scenario
//! as its own test, so tokio, async-std, smol and std are held to the same assertions on real
//! loopback sockets.
//!
//! The [`dialer`] module does the same for the adapters' dialers: one suite of dial scenarios
//! (resolution, interleaving, Happy Eyeballs, timeouts, cancellation, hook order, errors) run
//! on every runtime through the small [`DialHarness`](dialer::DialHarness) interface.
//!
//! The [`control`] module holds the scenarios of acting on connections (limits, idle and age
//! policies, abort by id, shutdown with a deadline), run on every runtime through
//! [`ControlHarness`](control::ControlHarness).
//!
//! The `tls` module (feature `tls`) holds the adapters' TLS fixtures: certificates, rustls
//! configs and readers of recorded handshake failures.

pub mod bench;
pub mod conformance;
pub mod control;
pub mod dialer;
pub mod load;
#[cfg(feature = "tls")]
pub mod tls;

use std::io;
use std::time::Duration;

use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};

/// How long a scenario waits for an expected event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits, at most `limit`, until every connection of `tracker` has closed and been counted
/// ([`Tracker::drained`], on a thread of its own); returns whether it did.
#[must_use]
pub fn drained_within(tracker: &Tracker, limit: Duration) -> bool {
    let (done, wait) = std::sync::mpsc::channel();
    let tracker = tracker.clone();
    std::thread::spawn(move || {
        conntrack_core::blocking::block_on(tracker.drained());
        let _ = done.send(());
    });
    wait.recv_timeout(limit).is_ok()
}

/// An adapter under test: makes tracked loopback connection pairs.
pub trait Harness {
    /// One end of a tracked connection.
    type Conn: Conn;

    /// A short name for messages (`"tokio"`, `"std"`, ...).
    fn name(&self) -> &'static str;

    /// Whether the connections carry TLS. The tracker counts bytes at the TCP level, so over
    /// TLS it sees ciphertext: byte-count assertions become "at least the plaintext" instead
    /// of "exactly the plaintext".
    fn tls(&self) -> bool {
        false
    }

    /// Binds a tracked listener on `127.0.0.1:0` with `listener`, dials it with a tracked
    /// dialer with `dialer` (dialing the listener's address as `"127.0.0.1:PORT"`), and
    /// returns `(server end, client end)`, both registered with `tracker`.
    fn connect(
        &self,
        tracker: &Tracker,
        listener: ListenerConfig,
        dialer: DialerConfig,
    ) -> io::Result<(Self::Conn, Self::Conn)>;
}

/// One end of a tracked connection, driven with blocking calls.
pub trait Conn: Send + 'static {
    /// The tracker id of this end.
    fn id(&self) -> ConnectionId;
    /// Writes all of `buf` with plain writes.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes all of `bufs` using the stream's vectored write; returns how many bytes the
    /// vectored calls reported in total.
    fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<usize>;
    /// Flushes buffered data.
    fn flush(&mut self) -> io::Result<()>;
    /// Fills `buf` exactly.
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()>;
    /// Reads until end of stream.
    fn read_to_end(&mut self) -> io::Result<Vec<u8>>;
    /// One read call: returns what it read (empty at end of stream).
    fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>>;
    /// Shuts down the write half (half-close: the peer reads end of stream).
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Runs `f` on another thread with this end moved there, and returns the end back
    /// (used to read and write at the same time on one connection).
    fn spawn<R: Send + 'static>(
        self,
        f: impl FnOnce(&mut Self) -> R + Send + 'static,
    ) -> std::thread::JoinHandle<(Self, R)>
    where
        Self: Sized,
    {
        std::thread::spawn(move || {
            let mut me = self;
            let r = f(&mut me);
            (me, r)
        })
    }
}

/// A test found that an outside tool it needs (`tool`: Chromium, promtool, `ss`) is missing.
///
/// Under CI (`CI=true`) that is a failure: this panics with `install`, the way to get the
/// tool. Elsewhere the test may skip the check: this prints a note and, when the
/// `CONNTRACK_SKIP_LOG` variable names a file (`cargo xtask ci` sets it), appends one line to
/// it, so the run ends with a list of what was skipped and how to install it instead of
/// counting the skipped check as passed silently.
///
/// # Panics
///
/// Under `CI=true`.
pub fn tool_missing(test: &str, tool: &str, install: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {tool} is required under CI ({install})"
    );
    eprintln!("NOTE: {tool} not found: {test} skipped its check ({install})");
    if let Some(path) = std::env::var_os("CONNTRACK_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}\t{tool}\t{install}");
        }
    }
}
