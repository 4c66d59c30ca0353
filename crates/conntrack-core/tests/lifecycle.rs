//! The life of a tracked connection: registration, recording, snapshots, close (exactly once,
//! whatever the handles do), ids, clocks, totals and the history of closed connections.

mod common;

use std::collections::HashSet;
use std::io;
use std::time::{Duration, SystemTime};

use common::{addr, client, server};
use conntrack_core::{
    Addr, Connection, ConnectionInfo, DialerConfig, ListenerConfig, Recorded, RecordingHook,
    Registration, Role, Timings, TlsInfo, Tracker, DEFAULT_HISTORY,
};

fn close_events(rec: &RecordingHook) -> Vec<ConnectionInfo> {
    rec.events()
        .into_iter()
        .filter_map(|e| match e {
            Recorded::Close { connection, .. } => Some(connection),
            _ => None,
        })
        .collect()
}

// 1. register / record / close update the snapshot.

#[test]
fn register_record_close_update_the_snapshot() {
    let tracker = Tracker::new();
    assert!(tracker.is_empty());
    assert_eq!(tracker.len(), 0);
    assert!(tracker.connections().is_empty());

    let api = tracker.register(server("api").target("client.example:1"));
    let db = tracker.register(
        client("db")
            .target("db.internal:5432")
            .timings(Timings::new().with_connect(Duration::from_millis(4))),
    );
    assert_eq!(tracker.len(), 2);
    assert!(!tracker.is_empty());

    api.record_read(10);
    api.record_write(3);
    api.record_read(5);
    db.record_write(100);

    let infos = tracker.connections();
    assert_eq!(
        infos.iter().map(|i| i.id).collect::<Vec<_>>(),
        [api.id(), db.id()],
        "oldest first"
    );
    let a = &infos[0];
    assert_eq!((&*a.category, a.role), ("api", Role::Server));
    assert_eq!(a.local_addr, Addr::Inet(addr(80)));
    assert_eq!(a.remote_addr, Addr::Inet(addr(50_000)));
    assert_eq!(a.local_addr.to_string(), "127.0.0.1:80");
    assert_eq!(a.remote_addr.socket_addr(), Some(addr(50_000)));
    assert_eq!(a.target.as_deref(), Some("client.example:1"));
    assert_eq!((a.read_bytes, a.write_bytes), (15, 3));
    assert_eq!(a.timings, Timings::new());
    assert!(a.tls.is_none());
    let d = &infos[1];
    assert_eq!((&*d.category, d.role), ("db", Role::Client));
    assert_eq!(d.role.to_string(), "client");
    assert_eq!((d.read_bytes, d.write_bytes), (0, 100));
    assert_eq!(d.timings.connect, Some(Duration::from_millis(4)));

    // get() and the handle's own info() agree with the snapshot.
    let got = tracker.get(api.id()).expect("live");
    assert_eq!((got.id, got.read_bytes, got.write_bytes), (api.id(), 15, 3));
    assert_eq!(api.info().read_bytes, 15);
    assert_eq!((&*api.category(), api.role()), ("api", Role::Server));

    // Later I/O, TLS and timings show in the next snapshot.
    db.set_tls(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256").with_server_name("db.internal"));
    db.set_timings(Timings::new().with_dns(Duration::from_millis(2)));
    db.record_read(7);
    let d = tracker.get(db.id()).unwrap();
    assert_eq!(d.read_bytes, 7);
    assert_eq!(d.tls.as_ref().unwrap().protocol_version, "1.3");
    assert_eq!(
        (d.timings.dns, d.timings.connect),
        (
            Some(Duration::from_millis(2)),
            Some(Duration::from_millis(4))
        ),
        "set_timings keeps the phases it is not given"
    );

    api.close();
    assert_eq!(tracker.len(), 1);
    assert!(tracker.get(api.id()).is_none());
    assert_eq!(tracker.connections()[0].id, db.id());
    // The closed handle still answers with its final values.
    assert_eq!(api.info().read_bytes, 15);
    drop(db);
    assert!(tracker.is_empty());
    assert!(tracker.connections().is_empty());
}

#[test]
fn unix_and_unknown_addresses() {
    let tracker = Tracker::new();
    let dir = std::env::temp_dir().join("conntrack-core-test.sock");
    let conn = tracker.register(Registration::server(Addr::unix(&dir), Addr::Unix(None)));
    let info = conn.info();
    assert_eq!(info.local_addr.transport(), "unix");
    assert_eq!(info.local_addr.socket_addr(), None);
    assert_eq!(
        info.local_addr.to_string(),
        format!("unix:{}", dir.display())
    );
    assert_eq!(info.remote_addr.to_string(), "unix:(unnamed)");

    let unknown = tracker.register(Registration::new(Role::Client));
    let info = unknown.info();
    assert_eq!(
        (info.local_addr.clone(), info.remote_addr.clone()),
        (Addr::Unknown, Addr::Unknown)
    );
    assert_eq!(&*info.category, "", "no category is the empty string");
    assert_eq!(info.local_addr.to_string(), "-");
}

#[test]
fn connections_into_reuses_the_buffer() {
    let tracker = Tracker::new();
    let conns: Vec<_> = (0..3).map(|_| tracker.register(server("x"))).collect();
    let mut buf = Vec::new();
    tracker.connections_into(&mut buf);
    assert_eq!(buf.len(), 3);
    drop(conns);
    tracker.connections_into(&mut buf);
    assert!(buf.is_empty(), "cleared, then refilled with nothing");
}

#[test]
fn a_connection_outliving_its_tracker_still_closes_once() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let conn = tracker.register(server("x"));
    drop(tracker);
    conn.record_read(3);
    assert_eq!(conn.info().read_bytes, 3);
    drop(conn);
    let closes = close_events(&rec);
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].read_bytes, 3);
}

// 2. on_close fires exactly once.

#[test]
fn close_twice_fires_on_close_once() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let conn = tracker.register(server("x"));
    assert!(!conn.is_closed());
    conn.close();
    assert!(conn.is_closed());
    conn.close();
    assert!(conn.is_closed());
    assert_eq!(rec.count("close"), 1);
    assert!(tracker.is_empty());
    drop(conn);
    assert_eq!(
        rec.count("close"),
        1,
        "the drop after the closes adds nothing"
    );
    assert_eq!(tracker.stats().total().closed, 1);
}

#[test]
fn close_then_drop_fires_on_close_once() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let conn = tracker.register(server("x"));
    conn.record_write(9);
    conn.close();
    assert_eq!(rec.count("close"), 1);
    drop(conn);
    assert_eq!(rec.count("close"), 1);
    assert_eq!(close_events(&rec)[0].write_bytes, 9, "the final info");
    assert_eq!(tracker.stats().total().closed, 1);
}

#[test]
fn only_dropped_fires_on_close_once() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let conn = tracker.register(server("x"));
    let id = conn.id();
    assert_eq!(tracker.len(), 1);
    drop(conn);
    assert!(
        tracker.is_empty(),
        "a handle that is never closed does not leak"
    );
    let closes = close_events(&rec);
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].id, id);
}

const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

#[test]
fn three_clones_dropped_in_every_order_close_once() {
    for order in ORDERS {
        let rec = RecordingHook::new();
        let tracker = Tracker::builder().hook(rec.clone()).build();
        let a = tracker.register(server("x"));
        let b = a.clone();
        let c = b.clone();
        // Split halves: each records on its own handle, all land on one entry.
        a.record_read(1);
        b.record_read(2);
        c.record_write(4);
        assert_eq!(tracker.len(), 1, "clones share one entry");
        let mut handles = [Some(a), Some(b), Some(c)];
        for (k, &i) in order.iter().enumerate() {
            assert_eq!(tracker.len(), 1, "order {order:?}: open before drop {k}");
            assert_eq!(
                rec.count("close"),
                0,
                "order {order:?}: no close before drop {k}"
            );
            for h in handles.iter().flatten() {
                assert!(!h.is_closed(), "order {order:?}");
            }
            handles[i] = None;
        }
        assert!(tracker.is_empty(), "order {order:?}");
        let closes = close_events(&rec);
        assert_eq!(closes.len(), 1, "order {order:?}");
        assert_eq!((closes[0].read_bytes, closes[0].write_bytes), (3, 4));
    }
}

#[test]
fn an_explicit_close_on_one_clone_closes_for_all_in_every_order() {
    for order in ORDERS {
        for closer in 0..3 {
            let rec = RecordingHook::new();
            let tracker = Tracker::builder().hook(rec.clone()).build();
            let a = tracker.register(server("x"));
            let mut handles = [Some(a.clone()), Some(a.clone()), Some(a)];
            handles[closer].as_ref().unwrap().close();
            assert!(tracker.is_empty());
            for h in handles.iter().flatten() {
                assert!(h.is_closed(), "every clone sees the close");
            }
            for &i in &order {
                handles[i] = None;
            }
            assert_eq!(rec.count("close"), 1, "order {order:?}, closer {closer}");
            assert_eq!(tracker.stats().total().closed, 1);
        }
    }
}

// 3. ids.

#[test]
fn ids_are_unique_and_increasing_across_trackers() {
    let t1 = Tracker::new();
    let t2 = Tracker::new();
    let mut last = None;
    let mut keep = Vec::new();
    for i in 0..100 {
        let t = if i % 3 == 0 { &t1 } else { &t2 };
        let c = t.register(server("x"));
        if let Some(prev) = last {
            assert!(c.id() > prev, "{} after {prev}", c.id());
        }
        last = Some(c.id());
        keep.push(c);
    }
    let all: HashSet<_> = keep.iter().map(Connection::id).collect();
    assert_eq!(all.len(), 100, "unique");
    for t in [&t1, &t2] {
        let ids: Vec<_> = t.connections().iter().map(|c| c.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    }
    // Never reused, even once everything has closed.
    let max = last.unwrap();
    keep.clear();
    assert!(t1.register(server("x")).id() > max);
    assert!(t2.register(server("x")).id() > max);
}

#[test]
fn ids_are_unique_across_threads() {
    let tracker = Tracker::new();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let t = tracker.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for _ in 0..250 {
                    let c = t.register(server("x"));
                    ids.push(c.id());
                }
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing per thread");
                ids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            assert!(all.insert(id), "duplicate id {id}");
        }
    }
    assert_eq!(all.len(), 1000);
}

// 4. established_for is monotonic; established_at is wall-clock.

/// Two wall-clock renderings of one instant, built at different times: equal but for the
/// skew between reading the monotonic and the wall clock (a thread preempted in between), far
/// below a second unless the wall clock was stepped.
fn close_in_time(a: SystemTime, b: SystemTime) -> bool {
    let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
    d < Duration::from_secs(1)
}

/// `established_for` is `now - opened`, both read from one `std::time::Instant` base (the
/// monotonic clock: `CLOCK_MONOTONIC` on Linux), never from `SystemTime`. A wall-clock jump
/// (NTP step, a manual `date -s`, a VM resume) moves `SystemTime` only, so it can neither make
/// `established_for` jump nor go backwards. `established_at` is the wall-clock rendering of the
/// same instant, for display only: the wall clock read when the record is built minus the
/// age, so it lies between the wall clock before registration and after the snapshot, and two
/// records of one connection agree on it (up to the clocks' reading skew, unless the wall
/// clock was stepped in between).
#[test]
fn established_for_grows_on_the_monotonic_clock() {
    let tracker = Tracker::new();
    let before = SystemTime::now();
    let conn = tracker.register(server("x"));
    let first = conn.info();
    let after = SystemTime::now();
    assert!(
        before <= first.established_at && first.established_at <= after,
        "{before:?} <= {:?} <= {after:?}",
        first.established_at
    );
    // The passage of time is the scenario here.
    std::thread::sleep(Duration::from_millis(30));
    let second = tracker.get(conn.id()).unwrap();
    assert!(
        second.established_for >= first.established_for + Duration::from_millis(25),
        "{:?} then {:?}",
        first.established_for,
        second.established_for
    );
    assert!(
        close_in_time(first.established_at, second.established_at),
        "one registration time: {:?} and {:?}",
        first.established_at,
        second.established_at
    );

    let now = SystemTime::now();
    let skew = match now.duration_since(first.established_at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        skew < Duration::from_secs(60),
        "established_at is near now: {skew:?}"
    );
}

// 5. idle_for resets on I/O.

#[test]
fn idle_for_resets_on_io() {
    let tracker = Tracker::new();
    let conn = tracker.register(server("x"));
    // The passage of time is the scenario here.
    std::thread::sleep(Duration::from_millis(50));
    let idle = conn.info().idle_for;
    assert!(idle >= Duration::from_millis(40), "{idle:?}");
    conn.record_read(1);
    let after_read = conn.info().idle_for;
    // The hot path stamps I/O from a millisecond clock refreshed in the background, so a
    // stamp can lag by a tick; it is still far more recent than the registration.
    assert!(
        after_read < idle,
        "{after_read:?} after a read vs {idle:?} before"
    );

    std::thread::sleep(Duration::from_millis(50));
    let idle = conn.info().idle_for;
    assert!(idle >= Duration::from_millis(40), "{idle:?}");
    conn.record_write(1);
    let after_write = conn.info().idle_for;
    assert!(
        after_write < idle,
        "{after_write:?} after a write vs {idle:?} before"
    );
    assert!(conn.info().established_for >= Duration::from_millis(100));
}

// 6. totals outlive connections.

#[test]
fn stats_keep_counting_after_close() {
    let tracker = Tracker::new();
    let listen = ListenerConfig::new().category("in");
    let dial = DialerConfig::new().category("out");
    // The same category on both sides, counted per role.
    let listen_both = ListenerConfig::new().category("both");
    let dial_both = DialerConfig::new().category("both");

    for i in 1..=3 {
        let c = tracker.accepted(&listen, addr(80), addr(50_000));
        c.record_read(i * 10);
        c.record_write(1);
    }
    let live_in = tracker.accepted(&listen, addr(80), addr(50_001));
    live_in.record_read(7);
    tracker.accept_failed(&listen, &Addr::Inet(addr(80)), &io::Error::other("EMFILE"));
    tracker.accept_failed(&listen, &Addr::Inet(addr(80)), &io::Error::other("EMFILE"));

    tracker
        .dial(&dial, "db:5432")
        .failed(&io::Error::from(io::ErrorKind::ConnectionRefused));
    let dialed = tracker
        .dial(&dial, "db:5432")
        .established(addr(40_000), addr(5432));
    dialed.record_write(50);
    dialed.report_tls_handshake_done(
        Err(&io::Error::other("bad certificate")),
        Duration::from_millis(3),
    );
    drop(dialed);

    let s_both = tracker.accepted(&listen_both, addr(80), addr(50_002));
    s_both.record_read(1);
    let c_both = tracker
        .dial(&dial_both, "x:1")
        .established(addr(40_001), addr(1));
    c_both.record_read(2);
    c_both.report_tls_handshake_done(
        Ok(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")),
        Duration::from_millis(1),
    );

    let stats = tracker.stats();
    let s = stats.get("in", Role::Server).unwrap();
    assert_eq!((s.opened, s.closed, s.active, s.failed), (4, 3, 1, 2));
    assert_eq!(
        (s.read_bytes, s.write_bytes),
        (60 + 7, 3),
        "closed plus live bytes"
    );
    assert!(
        stats.get("in", Role::Client).is_none(),
        "no client 'in' was ever seen"
    );
    let c = stats.get("out", Role::Client).unwrap();
    assert_eq!(
        (
            c.opened,
            c.closed,
            c.active,
            c.failed,
            c.tls_handshake_failed
        ),
        (1, 1, 0, 1, 1)
    );
    assert_eq!((c.read_bytes, c.write_bytes), (0, 50));
    let bs = stats.get("both", Role::Server).unwrap();
    let bc = stats.get("both", Role::Client).unwrap();
    assert_eq!((bs.active, bs.read_bytes), (1, 1));
    assert_eq!(
        (bc.active, bc.read_bytes, bc.tls_handshake_failed),
        (1, 2, 0)
    );

    // Sorted by category, then role (client before server).
    let keys: Vec<_> = stats
        .categories
        .iter()
        .map(|c| (c.category.to_string(), c.role))
        .collect();
    assert_eq!(
        keys,
        [
            ("both".to_owned(), Role::Client),
            ("both".to_owned(), Role::Server),
            ("in".to_owned(), Role::Server),
            ("out".to_owned(), Role::Client),
        ]
    );

    let both = stats.category("both");
    assert_eq!((both.opened, both.active, both.read_bytes), (2, 2, 3));
    let total = stats.total();
    assert_eq!(&*total.category, "*");
    assert_eq!(
        (
            total.opened,
            total.closed,
            total.active,
            total.failed,
            total.tls_handshake_failed
        ),
        (7, 4, 3, 3, 1)
    );
    assert_eq!((total.read_bytes, total.write_bytes), (67 + 3, 53));
    assert_eq!(stats.category("never").opened, 0);
    assert_eq!(stats.hook_panics, 0);

    drop((live_in, s_both, c_both));
    let after = tracker.stats();
    let s = after.get("in", Role::Server).unwrap();
    assert_eq!(
        (s.active, s.closed, s.read_bytes),
        (0, 4, 67),
        "bytes survive the close"
    );
    let total = after.total();
    assert_eq!((total.opened, total.closed, total.active), (7, 7, 0));
    assert_eq!(
        (total.read_bytes, total.write_bytes, total.failed),
        (70, 53, 3)
    );
}

// 7. bounded, newest-first history.

#[test]
fn history_is_bounded_and_newest_first() {
    let tracker = Tracker::builder().history(3).build();
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let c = tracker.register(server("x"));
        ids.push(c.id());
        c.record_read(usize::from(i));
        if i == 4 {
            c.record_read_error(&io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer went away",
            ));
        }
        if i == 3 {
            c.record_error(&io::Error::from(io::ErrorKind::WouldBlock));
        }
    }
    let closed = tracker.recently_closed();
    assert_eq!(closed.len(), 3);
    let got: Vec<_> = closed.iter().map(|c| c.info.id).collect();
    assert_eq!(
        got,
        [ids[4], ids[3], ids[2]],
        "newest first, oldest dropped"
    );
    assert_eq!(closed[0].info.read_bytes, 4, "the final info");
    assert_eq!(closed[0].error.as_deref(), Some("peer went away"));
    assert_eq!(closed[1].error, None, "WouldBlock is not a failure");
    assert_eq!(closed[2].error, None);
    assert!(closed[0].closed_at >= closed[0].info.established_at);

    let none = Tracker::builder().history(0).build();
    drop(none.register(server("x")));
    assert!(none.recently_closed().is_empty());
    assert_eq!(none.stats().total().closed, 1, "totals still count");

    let default = Tracker::new();
    for _ in 0..DEFAULT_HISTORY + 5 {
        drop(default.register(server("x")));
    }
    assert_eq!(default.recently_closed().len(), DEFAULT_HISTORY);
}

/// A full history writes each new record over its oldest one in place: nothing of the old
/// record (target, TLS, timings, bytes, exchanges, error) shows through in the new one.
#[test]
fn a_record_written_over_an_old_one_keeps_nothing_of_it() {
    let tracker = Tracker::builder().history(1).build();
    let rich = tracker.register(
        client("db")
            .target("db.internal:5432")
            .timings(Timings::new().with_connect(Duration::from_millis(4))),
    );
    rich.set_tls(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256"));
    rich.record_read(7);
    rich.record_write(9);
    rich.downgrade().begin_exchange();
    rich.record_read_error(&io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
    drop(rich);
    assert_eq!(
        tracker.recently_closed()[0].info.target.as_deref(),
        Some("db.internal:5432")
    );

    let plain = tracker.register(server("api"));
    let id = plain.id();
    drop(plain);
    let closed = tracker.recently_closed();
    assert_eq!(closed.len(), 1);
    let c = &closed[0];
    assert_eq!(c.info.id, id);
    assert_eq!(&*c.info.category, "api");
    assert_eq!(c.info.role, Role::Server);
    assert_eq!(c.info.target, None);
    assert!(c.info.tls.is_none());
    assert_eq!(c.info.timings, Timings::default());
    assert_eq!((c.info.read_bytes, c.info.write_bytes), (0, 0));
    assert_eq!((c.info.requests, c.info.in_flight), (0, 0));
    assert_eq!(c.error, None);
}

#[test]
fn history_keeps_the_state_at_close() {
    let tracker = Tracker::builder().history(4).build();
    let conn = tracker.register(client("db").target("db.internal:5432"));
    let later = conn.clone();
    conn.record_read(7);
    conn.set_timings(Timings::new().with_connect(Duration::from_millis(2)));
    conn.set_tls(TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256"));
    let live = conn.info();
    conn.close();
    // Recording on a closed handle changes nothing the history shows.
    later.record_read(100);
    later.set_timings(Timings::new().with_dns(Duration::from_millis(9)));
    drop((conn, later));
    let closed = tracker.recently_closed();
    assert_eq!(closed.len(), 1);
    let c = &closed[0];
    assert_eq!(c.info.id, live.id);
    assert_eq!(&*c.info.category, "db");
    assert_eq!(c.info.role, Role::Client);
    assert_eq!(c.info.local_addr, live.local_addr);
    assert_eq!(c.info.remote_addr, live.remote_addr);
    assert_eq!(c.info.target.as_deref(), Some("db.internal:5432"));
    assert_eq!(c.info.read_bytes, 7);
    assert_eq!(c.info.timings, live.timings);
    assert!(c.info.tls.is_some());
    assert!(close_in_time(c.info.established_at, live.established_at));
    assert!(c.info.established_for >= live.established_for);
    assert_eq!(
        c.closed_at,
        c.info.established_at + c.info.established_for,
        "closed_at and established_at are on one clock"
    );
    let again = &tracker.recently_closed()[0];
    assert_eq!(
        (again.info.read_bytes, again.info.established_for),
        (c.info.read_bytes, c.info.established_for),
        "read twice, the same record"
    );
    assert!(close_in_time(again.closed_at, c.closed_at));
}

#[test]
fn an_address_dial_has_the_address_as_target() {
    let rec = RecordingHook::new();
    let target = addr(5432);
    let text = target.to_string();
    for hooked in [false, true] {
        let tracker = if hooked {
            Tracker::builder().hook(rec.clone()).build()
        } else {
            Tracker::new()
        };
        let config = DialerConfig::new().category("db");
        let dial = tracker.dial_addr(&config, target);
        let conn = dial.established(addr(40_000), target);
        assert_eq!(
            conn.info().target.as_deref(),
            Some(text.as_str()),
            "{hooked}"
        );
        drop(conn);
        let closed = tracker.recently_closed();
        assert_eq!(closed[0].info.target.as_deref(), Some(text.as_str()));

        // Read before it is established, or established with another remote address.
        let dial = tracker.dial_addr(&config, target);
        assert_eq!(dial.target(), text);
        assert!(format!("{dial:?}").contains(&text));
        let conn = dial.established(addr(40_000), addr(6000));
        assert_eq!(conn.info().target.as_deref(), Some(text.as_str()));
        let dial = tracker.dial_addr(&config, target);
        let conn2 = dial.established(addr(40_001), addr(6000));
        assert_eq!(conn2.info().target.as_deref(), Some(text.as_str()));
        assert_eq!(conn2.info().remote_addr, Addr::Inet(addr(6000)));
        drop((conn, conn2));

        tracker
            .dial_addr(&config, target)
            .failed(&io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(tracker.stats().get("db", Role::Client).unwrap().failed, 1);
    }
    let dials: Vec<_> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Recorded::Dial { target, .. } => Some(target),
            _ => None,
        })
        .collect();
    assert_eq!(dials, [text.clone(), text.clone(), text.clone(), text]);
}

#[test]
fn close_reports_the_last_error() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();

    let conn = tracker.register(server("x"));
    conn.record_error(&io::Error::from(io::ErrorKind::WouldBlock));
    conn.record_error(&io::Error::from(io::ErrorKind::Interrupted));
    drop(conn);
    assert!(rec.events().last().unwrap().error().is_none());

    let conn = tracker.register(server("x"));
    conn.record_write_error(&io::Error::other("first"));
    conn.record_error(&io::Error::from_raw_os_error(104)); // ECONNRESET on Linux
    drop(conn);
    let last = rec.events().pop().unwrap();
    assert_eq!(
        last.error().unwrap().kind,
        io::ErrorKind::ConnectionReset,
        "the last one"
    );
    let history = tracker.recently_closed();
    assert_eq!(
        history[0].error.as_deref(),
        Some(io::Error::from_raw_os_error(104).to_string().as_str())
    );
    assert_eq!(history[1].error, None);
}
