//! The I/O hot path allocates nothing: with no per-I/O hook, 10k `record_read` and 10k
//! `record_write` calls (and their `read_result` / `write_result` forms) make no allocation,
//! also when non-I/O hooks are installed on the tracker, the config or a trace scope. (By
//! construction they also take no lock and make no dynamic call: see
//! `Connection::record_read`.) A pending read or write of a stream polled by one task parks
//! its waker without allocating, however often it parks.
//!
//! This file is its own test binary, so the counting global allocator below is local to it.
//! Counting uses `stats_alloc`'s instrumented `System` wrapper, so this file needs no `unsafe`.

use std::alloc::System;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Wake, Waker};

use conntrack_core::{
    trace, Callbacks, Connection, ListenerConfig, NoopHook, RecordingHook, Registration, Tracker,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLS: usize = 10_000;

/// Allocations and reallocations made during 10k reads and 10k writes (each both as
/// `record_*` and as `*_result(Ok)`).
///
/// The counter is process-wide: the test harness can show up in one region. A hot path that allocated would
/// show up in every region, so the fewest of three runs is the hot path's own count.
fn allocations_during_io(conn: &Connection) -> usize {
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for i in 0..CALLS {
                conn.record_read(i);
                conn.record_write(i);
                let _ = conn.read_result(Ok(1));
                let _ = conn.write_result(Ok(1));
            }
            let c = region.change();
            c.allocations + c.reallocations
        })
        .min()
        .unwrap()
}

fn addrs() -> (SocketAddr, SocketAddr) {
    (
        "127.0.0.1:80".parse().unwrap(),
        "127.0.0.1:50000".parse().unwrap(),
    )
}

// One #[test] so that no other test in this binary allocates while a region is measured.
#[test]
fn record_read_and_write_allocate_nothing_without_an_io_hook() {
    let (a, b) = addrs();

    // No hook at all.
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::server(a, b));
    conn.record_read(1); // first touch of lazily initialised state
    assert_eq!(allocations_during_io(&conn), 0, "no hooks");
    // Three runs of (0 + 1 + ... + 9_999) plus 10k ones, and the first touch.
    let per_run: u64 = (0..CALLS as u64).sum::<u64>() + CALLS as u64;
    let expect = 3 * per_run + 1;
    assert_eq!(conn.info().read_bytes, expect, "every call was counted");

    // Tracker-level hooks that do not want per-I/O events change nothing.
    let rec = RecordingHook::new();
    let with_hooks = Tracker::builder().hook(NoopHook).hook(rec.clone()).build();
    let _added = with_hooks.add_hook(NoopHook);
    let conn = with_hooks.register(Registration::server(a, b));
    conn.record_read(1);
    assert_eq!(
        allocations_during_io(&conn),
        0,
        "tracker-level non-I/O hooks"
    );

    // Nor do non-I/O hooks of a listener config and of a trace scope.
    let config = ListenerConfig::new()
        .category("api")
        .on_close(|_| {})
        .hook(NoopHook);
    let conn = trace::with(Callbacks::new().on_accept(|_| {}), || {
        with_hooks.accepted(&config, a, b)
    });
    conn.record_read(1);
    assert_eq!(
        allocations_during_io(&conn),
        0,
        "config and scope non-I/O hooks"
    );

    assert_eq!(rec.names(), ["accept", "accept"], "the hooks were live");
    // A failed read is not the hot path, and still reports nothing to non-I/O hooks.
    let _ = conn.read_result(Err(io::Error::from(io::ErrorKind::ConnectionReset)));
    assert_eq!(rec.count("read"), 0);

    // Pending I/O of one task: its waker is kept inline, and parking it again is a comparison.
    struct Nothing;
    impl Wake for Nothing {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Nothing));
    let conn = tracker.register(Registration::server(a, b));
    let parks = (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for _ in 0..CALLS {
                conn.park_read(&waker).expect("live");
                conn.park_write(&waker).expect("live");
            }
            let c = region.change();
            c.allocations + c.reallocations
        })
        .min()
        .unwrap();
    assert_eq!(parks, 0, "parking one task's waker");

    // Control: the counter does see allocations made on this path, here by a per-I/O hook
    // that allocates on every read.
    let allocating = Tracker::builder()
        .hook(Callbacks::new().on_read(|ev| drop(std::hint::black_box(ev.n.to_string()))))
        .build();
    let conn = allocating.register(Registration::server(a, b));
    assert!(
        allocations_during_io(&conn) >= 2 * CALLS,
        "the counter works"
    );
}
