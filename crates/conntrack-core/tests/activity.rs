//! The tracker's rings for the debug page's pictures: finished traced requests with their
//! phases, and samples of the live connections taken with each snapshot.

use conntrack_core::activity::{ACTIVE_SAMPLES, REQUEST_TIMINGS};
use conntrack_core::{Registration, Role, Snapshot, Tracker};

#[test]
fn finished_requests_keep_their_phases_newest_first_bounded() {
    let tracker = Tracker::builder().recent_requests(REQUEST_TIMINGS).build();
    let conn = tracker.register(Registration::new(Role::Client));
    conn.set_timings(
        conntrack_core::Timings::new().with_connect(std::time::Duration::from_millis(3)),
    );
    for i in 0..REQUEST_TIMINGS + 5 {
        let req = tracker.request("GET", &format!("http://example.com/{i}"));
        req.get_conn("example.com:80");
        let _ = req.got_conn(conn.downgrade(), false);
        req.wrote_headers();
        req.wrote_request(None);
        req.got_first_response_byte();
        req.finish();
    }
    // A request that never got a connection has no phases to draw.
    tracker.request("GET", "http://example.com/none").finish();
    let timings = tracker.recent_requests();
    assert_eq!(timings.len(), REQUEST_TIMINGS);
    assert_eq!(
        &*timings[0].uri,
        format!("http://example.com/{}", REQUEST_TIMINGS + 4)
    );
    let last = timings.last().unwrap();
    assert!(last.reused, "only the first request dialed");
    for t in &timings {
        let p = t.phases;
        assert_eq!(p.connect, None, "a reused connection has no connect phase");
        let sum: std::time::Duration = p.named().iter().filter_map(|(_, d)| *d).sum();
        assert_eq!(sum, t.total, "{t:?}");
        assert_eq!(t.connection, Some(conn.id()));
    }
}

#[test]
fn the_first_request_on_a_dialed_connection_shows_the_dial() {
    let tracker = Tracker::builder().recent_requests(8).build();
    let conn = tracker.register(Registration::new(Role::Client));
    conn.set_timings(
        conntrack_core::Timings::new().with_connect(std::time::Duration::from_nanos(1)),
    );
    let req = tracker.request("GET", "http://example.com/");
    let _ = req.got_conn(conn.downgrade(), false);
    req.finish();
    let t = &tracker.recent_requests()[0];
    assert!(!t.reused);
    assert_eq!(t.phases.connect, Some(std::time::Duration::from_nanos(1)));
    assert_eq!(t.phases.send, None, "no write reported");
}

/// The ring is opt-in: a tracker built without `recent_requests` keeps none.
#[test]
fn the_request_ring_is_off_by_default() {
    let tracker = Tracker::new();
    let conn = tracker.register(Registration::new(Role::Client));
    let req = tracker.request("GET", "http://example.com/");
    let _ = req.got_conn(conn.downgrade(), false);
    req.finish();
    assert!(tracker.recent_requests().is_empty());
    let tracker = Tracker::builder().recent_requests(1).build();
    let conn = tracker.register(Registration::new(Role::Client));
    for _ in 0..3 {
        let req = tracker.request("GET", "http://example.com/");
        let _ = req.got_conn(conn.downgrade(), false);
        req.finish();
    }
    assert_eq!(
        tracker.recent_requests().len(),
        1,
        "bounded by what was asked"
    );
}

#[test]
fn snapshots_sample_the_active_counts() {
    let tracker = Tracker::new();
    assert!(
        tracker.active_samples().is_empty(),
        "nothing samples on its own"
    );
    let _a = tracker.register(Registration::new(Role::Server).category("api"));
    let s = Snapshot::of(&tracker);
    assert_eq!(s.active_samples.len(), 1);
    let active = &s.active_samples[0].active;
    assert_eq!(active.len(), 1);
    assert_eq!(
        (&*active[0].0, active[0].1, active[0].2),
        ("api", Role::Server, 1)
    );
    // Within a second, a new snapshot replaces its sample rather than adding one.
    let _b = tracker.register(Registration::new(Role::Server).category("api"));
    let s = Snapshot::of(&tracker);
    assert_eq!(s.active_samples.len(), 1);
    assert_eq!(s.active_samples[0].active[0].2, 2);
    const { assert!(ACTIVE_SAMPLES >= 120) };
}
