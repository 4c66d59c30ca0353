//! Clocks: a process-wide monotonic base, and a coarse millisecond clock for the I/O hot path.
//!
//! Reading `Instant::now()` costs tens of nanoseconds, more than the rest of a tracked read put
//! together. The hot path only needs "when was the last I/O" to the millisecond (for
//! `idle_for`), so it stores the value of [`coarse_ms`], a relaxed atomic load. One background
//! thread (`conntrack-clock`) refreshes that value every millisecond while any tracked
//! connection is open in the process, and parks (using no CPU) while none is.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

struct Base {
    instant: Instant,
    system: SystemTime,
}

static BASE: OnceLock<Base> = OnceLock::new();
static COARSE_MS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
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

/// A connection opened somewhere in the process: make sure the ticker runs.
pub(crate) fn connection_opened() {
    if LIVE.fetch_add(1, Ordering::Relaxed) == 0 {
        // The ticker may have been parked for a while: publish a fresh value before anyone
        // reads it, then wake it.
        COARSE_MS.fetch_max(now_ms(), Ordering::Relaxed);
        if let Some(t) = ticker() {
            t.unpark();
        }
    }
}

/// A connection closed somewhere in the process.
pub(crate) fn connection_closed() {
    LIVE.fetch_sub(1, Ordering::Relaxed);
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
        if LIVE.load(Ordering::Relaxed) == 0 {
            // Woken by `connection_opened` (unpark before park returns at once).
            std::thread::park();
            continue;
        }
        COARSE_MS.fetch_max(now_ms(), Ordering::Relaxed);
        std::thread::sleep(TICK);
    }
}
