//! The tracker's rings for the debug page's pictures: finished traced requests with their
//! phases, finished server exchanges with theirs, and samples of the live connections taken
//! with each snapshot.

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

/// Serves one exchange on `conn` the way the tokio adapter's `ExchangeLayer` does: the head
/// parsed, the response head, its bytes written and flushed. `None` when nothing timed it.
fn serve_one(conn: &conntrack_core::Connection, route: &str, status: u16) -> Option<()> {
    let r = conn.downgrade();
    conn.record_read(40);
    r.begin_exchange();
    let mut x = r.server_exchange("GET", Some(route), "1.1");
    if let Some(x) = &mut x {
        x.response_head(status);
    }
    conn.record_write(100);
    let timed = x.map(conntrack_core::ServerExchange::finish_when_flushed);
    r.end_exchange_when_flushed();
    conn.record_flush();
    timed
}

fn server_conn(tracker: &Tracker) -> conntrack_core::Connection {
    let a: std::net::SocketAddr = "127.0.0.1:80".parse().unwrap();
    let b: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
    tracker.register(Registration::server(a, b).category("web"))
}

/// With the ring on, every server exchange is timed and kept, with no hook installed at all:
/// newest first, bounded, each with its phases adding up to its total.
#[test]
fn server_exchanges_are_kept_without_a_hook_newest_first_bounded() {
    let tracker = Tracker::builder().recent_requests(4).build();
    let conn = server_conn(&tracker);
    for i in 0..6u16 {
        serve_one(&conn, &format!("/items/{i}"), 200 + i).expect("timed: the ring keeps it");
    }
    // One cut short: the handler failed before any response.
    let r = conn.downgrade();
    r.begin_exchange();
    let x = r.server_exchange("POST", None, "2").expect("timed");
    r.end_exchange();
    x.finish();

    let kept = tracker.recent_server_exchanges();
    assert_eq!(kept.len(), 4, "bounded by what was asked");
    assert!(
        tracker.recent_requests().is_empty(),
        "no client request was traced"
    );
    let newest = &kept[0];
    assert_eq!(&*newest.method, "POST");
    assert_eq!(newest.route, None);
    assert_eq!(newest.version, "2");
    assert_eq!(newest.status, None);
    assert!(!newest.completed);
    assert_eq!(newest.phases.waiting, None, "HTTP/2 has no waiting phase");
    let ids: Vec<u64> = kept.iter().map(|x| x.id).collect();
    assert_eq!(ids, [7, 6, 5, 4], "numbered in order, newest first");
    for (x, i) in kept[1..].iter().zip([5u16, 4, 3]) {
        assert_eq!(x.route.as_deref(), Some(&*format!("/items/{i}")));
        assert_eq!(x.status, Some(200 + i));
        assert_eq!(x.version, "1.1");
        assert!(x.completed);
        assert_eq!(x.connection, conn.id());
        assert_eq!(&*x.category, "web");
        assert_eq!((x.bytes_read, x.bytes_written), (40, 100));
        assert!(x.phases.waiting.is_some(), "HTTP/1 waits from the last end");
        assert_eq!(x.phases.request_body, None, "the body was not timed");
    }
    for x in &kept {
        let sum: std::time::Duration = x.phases.named().iter().filter_map(|(_, d)| *d).sum();
        assert_eq!(sum, x.total, "{x:?}");
    }
    // The snapshot carries them, as the debug page shows them.
    let snap = Snapshot::of(&tracker);
    assert_eq!(snap.server_exchanges.len(), 4);
    assert_eq!(snap.server_exchanges[0].id, 7);
}

/// The ring is opt-in: without `recent_requests`, nothing times a server exchange (no hook
/// wants them) and nothing is kept; a hook that wants them does not fill a ring that is off.
#[test]
fn the_server_ring_is_off_by_default() {
    let tracker = Tracker::new();
    let conn = server_conn(&tracker);
    assert!(
        serve_one(&conn, "/a", 200).is_none(),
        "not timed: nothing wants it"
    );
    assert!(tracker.recent_server_exchanges().is_empty());
    assert!(Snapshot::of(&tracker).server_exchanges.is_empty());

    let hook = conntrack_core::RecordingHook::new();
    let tracker = Tracker::builder().hook(hook.clone()).build();
    let conn = server_conn(&tracker);
    serve_one(&conn, "/a", 200).expect("timed for the hook");
    assert!(
        hook.events()
            .iter()
            .any(|e| matches!(e, conntrack_core::Recorded::ServerExchange { .. })),
        "{:?}",
        hook.events()
    );
    assert!(tracker.recent_server_exchanges().is_empty());
}
