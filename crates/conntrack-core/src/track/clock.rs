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
//! - Wall-clock times (`established_at`, `closed_at`) are not kept per connection: a record
//!   is given the wall clock as it reads when the record is built, minus the age measured on
//!   the monotonic clock (see [`Now`]). No record ever shows a connection starting after the
//!   snapshot listing it. The wall clock itself is read at most once a second ([`wall_at`]):
//!   records built within a second of each other take the wall time from the last reading plus
//!   the monotonic time since, so a step of the system clock (NTP at boot, `date -s`) shows in
//!   every record built from one second after it on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// How long a reading of the wall clock is used for.
const WALL_REFRESH_NANOS: u64 = 1_000_000_000;

/// The last reading of the wall clock, as the offset from the monotonic base (wall-clock
/// nanoseconds since the Unix epoch minus [`now_nanos`], both at the reading), and when it was
/// taken ([`now_nanos`]; `u64::MAX`: never). The two are separate atomics: a reader that sees
/// one from one reading and one from another still gets a valid offset, the newer or the older.
static WALL_OFFSET: AtomicU64 = AtomicU64::new(0);
static WALL_TAKEN: AtomicU64 = AtomicU64::new(u64::MAX);

/// The wall clock at monotonic time `nanos` (just read from [`now_nanos`]): from the last
/// reading of the wall clock if it is under a second old, else from a new reading.
pub(crate) fn wall_at(nanos: u64) -> SystemTime {
    let taken = WALL_TAKEN.load(Ordering::Acquire);
    let offset = if taken != u64::MAX && nanos.wrapping_sub(taken) < WALL_REFRESH_NANOS {
        WALL_OFFSET.load(Ordering::Relaxed)
    } else {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // The monotonic time of this reading: `nanos` may be older than the wall reading by
        // a preemption, which would show as a wall time slightly early; read it again.
        let mono = now_nanos();
        let offset = wall.saturating_sub(mono);
        WALL_OFFSET.store(offset, Ordering::Relaxed);
        WALL_TAKEN.store(mono, Ordering::Release);
        offset
    };
    UNIX_EPOCH + Duration::from_nanos(offset.saturating_add(nanos))
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
        let nanos = now_nanos();
        Now {
            nanos,
            coarse_ms: coarse_ms(),
            wall: wall_at(nanos),
        }
    }

    /// The clocks for records of state taken at `nanos` (the precise clock just read, by a
    /// registration or a close): the coarse clock is not needed.
    pub(crate) fn read_at(nanos: u64) -> Self {
        Now {
            nanos,
            coarse_ms: 0,
            wall: wall_at(nanos),
        }
    }

    /// The clocks as of `nanos`, the precise clock just read: the coarse and wall clocks are
    /// read (cheaply), the precise one is not read again.
    pub(crate) fn read_coarse_at(nanos: u64) -> Self {
        Now {
            nanos,
            coarse_ms: coarse_ms(),
            wall: wall_at(nanos),
        }
    }

    /// The wall-clock time of the monotonic offset `nanos` (at or before `self`): the wall
    /// clock read now, minus the time elapsed since, on the monotonic clock.
    pub(crate) fn wall_at(&self, nanos: u64) -> SystemTime {
        let ago = Duration::from_nanos(self.nanos.saturating_sub(nanos));
        self.wall.checked_sub(ago).unwrap_or(self.wall)
    }
}
