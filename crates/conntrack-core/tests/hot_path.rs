//! The I/O hot path allocates nothing: with no per-I/O hook, `record_read` / `record_write`
//! make no allocation (and, by construction, take no lock and make no dynamic call: see
//! `Connection::record_read`).

use std::alloc::System;
use std::net::SocketAddr;

use conntrack_core::{NoopHook, Registration, Tracker};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations during 10k reads and 10k writes. The counter is process-wide, so a background
/// thread starting up (the tracker's clock thread names itself) can show up in one region; a
/// hot path that allocated would show up in every region, so the fewest of three is the
/// hot path's own count.
fn io_loop(conn: &conntrack_core::Connection) -> stats_alloc::Stats {
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for i in 0..10_000 {
                conn.record_read(i);
                conn.record_write(i);
            }
            region.change()
        })
        .min_by_key(|c| c.allocations + c.reallocations)
        .unwrap()
}

#[test]
fn record_read_and_write_allocate_nothing() {
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::server(a, a));
    conn.record_read(1); // first touch of lazily initialised state
    let change = io_loop(&conn);
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );

    // A tracker-level hook that does not want per-I/O events changes nothing.
    let with_hook = Tracker::builder().hook(NoopHook).build();
    let conn = with_hook.register(Registration::server(a, a));
    conn.record_read(1);
    let change = io_loop(&conn);
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );
}
