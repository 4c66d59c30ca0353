//! Clocks: a process-wide monotonic base, and a coarse millisecond clock for the I/O hot path.
//!
//! Reading `Instant::now()` costs tens of nanoseconds, more than the rest of a tracked read put
//! together. The hot path only needs "when was the last I/O" to the millisecond (for
//! `idle_for`), so it stores the value of [`coarse_ms`], a relaxed atomic load. One background
//! thread (`conntrack-clock`) refreshes that value every millisecond while any tracked
//! connection is open in the process, and parks (using no CPU) while none is. It finds out by
//! reading the trackers' counters once per tick, so registering and closing a connection
//! touch no process-wide counter of their own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

struct Base {
    instant: Instant,
    system: SystemTime,
}

static BASE: OnceLock<Base> = OnceLock::new();
static COARSE_MS: AtomicU64 = AtomicU64::new(0);
static TICKER: OnceLock<Option<Thread>> = OnceLock::new();

const TICK: Duration = Duration::from_millis(1);

fn base() -> &'static Base {
    BASE.get_or_init(|| Base {
        instant: Instant::now(),
        system: SystemTime::now(),
    })
}

/// Nanoseconds since the process base, on the monotonic clock.
pub(crate) fn now_nanos() -> u64 {
    u64::try_from(base().instant.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds since the process base, read precisely.
pub(crate) fn now_ms() -> u64 {
    now_nanos() / 1_000_000
}

/// Milliseconds since the process base, as last published by the ticker. A relaxed load.
#[inline]
pub(crate) fn coarse_ms() -> u64 {
    COARSE_MS.load(Ordering::Relaxed)
}

/// The wall-clock time of a monotonic offset (for display).
pub(crate) fn system_time_at(nanos: u64) -> SystemTime {
    base().system + Duration::from_nanos(nanos)
}

/// Duration since a monotonic offset.
pub(crate) fn since(nanos: u64) -> Duration {
    Duration::from_nanos(now_nanos().saturating_sub(nanos))
}

/// Something that may have live connections: the ticker runs while any source has some.
pub(crate) trait LiveSource: Send + Sync {
    /// Whether any connection is open. Reads shared counters; called once per tick.
    fn has_live(&self) -> bool;
}

static SOURCES: Mutex<Vec<Weak<dyn LiveSource>>> = Mutex::new(Vec::new());
/// `true` while the ticker is parked (or not started). Read on every registration, written
/// only when the ticker parks or is woken, so in steady state it is a shared, read-only line.
static PARKED: AtomicBool = AtomicBool::new(true);

/// Registers a tracker with the ticker.
pub(crate) fn add_source(source: Weak<dyn LiveSource>) {
    SOURCES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(source);
}

fn any_live() -> bool {
    let mut sources = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    let mut live = false;
    sources.retain(|w| match w.upgrade() {
        Some(s) => {
            live = live || s.has_live();
            true
        }
        None => false,
    });
    live
}

/// A connection was registered (after its tracker counted it): make sure the ticker runs.
///
/// SeqCst pairs with the ticker's park sequence (store `PARKED`, re-check the counters):
/// either the ticker sees this connection and stays up, or this load sees `PARKED` and wakes
/// it.
#[inline]
pub(crate) fn connection_opened() {
    if PARKED.load(Ordering::SeqCst) && PARKED.swap(false, Ordering::SeqCst) {
        // The ticker may have been parked for a while: publish a fresh value before anyone
        // reads it, then wake it.
        COARSE_MS.fetch_max(now_ms(), Ordering::Relaxed);
        if let Some(t) = ticker() {
            t.unpark();
        }
    }
}

fn ticker() -> Option<&'static Thread> {
    TICKER
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("conntrack-clock".into())
                .spawn(tick)
                .ok()
                .map(|h| h.thread().clone())
        })
        .as_ref()
}

fn tick() {
    loop {
        COARSE_MS.fetch_max(now_ms(), Ordering::Relaxed);
        std::thread::sleep(TICK);
        if any_live() {
            continue;
        }
        PARKED.store(true, Ordering::SeqCst);
        if any_live() {
            PARKED.store(false, Ordering::SeqCst);
            continue;
        }
        // Woken by `connection_opened` (an unpark before the park makes it return at once).
        std::thread::park();
    }
}
