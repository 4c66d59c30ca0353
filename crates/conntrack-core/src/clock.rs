//! Clocks, read where they are needed. Nothing here runs on its own: no thread, no timer, so a
//! process whose tracked connections are all idle makes no wake-up on our account.
//!
//! - [`now_nanos`]: the precise monotonic clock (`Instant`), for ages and durations
//!   (`established_for`, hook durations). Read once per registration and once per snapshot.
//! - [`coarse_ms`]: the kernel's coarse monotonic clock in milliseconds, for "when was the
//!   last I/O" on the hot path. On Linux and Android that is `CLOCK_MONOTONIC_COARSE`, read
//!   through the vDSO (no system call; it advances once per kernel tick, 1 to 10 ms, which is
//!   the resolution of `idle_for`). Elsewhere, where no such clock exists, it is the precise
//!   clock.
//! - Wall-clock times (`established_at`, `closed_at`) are not kept at all: a record is given
//!   the wall clock read when it is built, minus the age measured on the monotonic clock (see
//!   [`Now`]). A wall-clock step (NTP at boot, `date -s`) is therefore reflected by the next
//!   record built, and no record ever shows a connection starting after the snapshot listing it.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

static BASE: OnceLock<Instant> = OnceLock::new();

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the process base, on the precise monotonic clock.
pub(crate) fn now_nanos() -> u64 {
    u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds on the coarse monotonic clock (an arbitrary origin, the same for every call in
/// the process). A few nanoseconds: the hot path reads it on every read and write.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub(crate) fn coarse_ms() -> u64 {
    // `now_without_cache_update`: plain `now()` also stores into the crate's process-wide
    // cached value, a shared write on every call that threads would fight over.
    let ticks = coarsetime::Instant::now_without_cache_update().as_ticks();
    // Ticks are seconds in 32.32 fixed point.
    (ticks >> 32) * 1000 + (((ticks & 0xFFFF_FFFF) * 1000) >> 32)
}

/// Milliseconds on the monotonic clock (no coarse clock on this platform).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub(crate) fn coarse_ms() -> u64 {
    now_nanos() / 1_000_000
}

/// Duration since a monotonic offset.
pub(crate) fn since(nanos: u64) -> Duration {
    Duration::from_nanos(now_nanos().saturating_sub(nanos))
}

/// The clocks as read once for a batch of records (a snapshot of every connection, the
/// history, one close): every record of the batch is built against the same instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    /// [`now_nanos`].
    pub(crate) nanos: u64,
    /// [`coarse_ms`].
    pub(crate) coarse_ms: u64,
    /// The wall clock.
    pub(crate) wall: SystemTime,
}

impl Now {
    pub(crate) fn read() -> Self {
        Now {
            nanos: now_nanos(),
            coarse_ms: coarse_ms(),
            wall: SystemTime::now(),
        }
    }

    /// The clocks for records of state taken at `nanos` (the precise clock just read): the
    /// coarse clock is not needed, the wall clock is read.
    pub(crate) fn read_at(nanos: u64) -> Self {
        Now {
            nanos,
            coarse_ms: 0,
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of the monotonic offset `nanos` (at or before `self`): the wall
    /// clock read now, minus the time elapsed since, on the monotonic clock.
    pub(crate) fn wall_at(&self, nanos: u64) -> SystemTime {
        let ago = Duration::from_nanos(self.nanos.saturating_sub(nanos));
        self.wall.checked_sub(ago).unwrap_or(self.wall)
    }
}
