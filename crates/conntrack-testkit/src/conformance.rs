//! The conformance suite: the same scenarios and assertions for every adapter.
//!
//! Each scenario takes a [`Harness`], makes its own tracker and connections on loopback, and
//! ends by checking that the tracker is empty again. An adapter runs them like this:
//!
//! ```text
//! conntrack_testkit::conformance_tests!(MyHarness::new());
//! ```
//!
//! which expands to one `#[test]` per scenario.

use std::io;
use std::time::Duration;

use conntrack_core::{
    Addr, DialerConfig, ListenerConfig, Recorded, RecordingHook, Role, Stats, Tracker,
};

use crate::{Conn, Harness, EVENT_TIMEOUT};

/// Expands to one `#[test]` per conformance scenario, each calling the scenario with the given
/// harness expression.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            entries_mirror, bulk_transfer_counts, vectored_writes_count, half_close,
            peer_reset_reported, close_fires_once, stats_outlive_connections,
            drop_order_independent, tcp_statistics, per_io_hooks);
    };
    (@each $harness:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name(&$harness);
            }
        )*
    };
}

/// A tracker with one recording hook on both configs.
fn setup(cat: &str) -> (Tracker, RecordingHook, ListenerConfig, DialerConfig) {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let l = ListenerConfig::new()
        .category(format!("{cat}-in"))
        .hook(rec.clone());
    let d = DialerConfig::new()
        .category(format!("{cat}-out"))
        .hook(rec.clone());
    (tracker, rec, l, d)
}

fn wait_closes(rec: &RecordingHook, n: usize) -> Vec<Recorded> {
    rec.wait_for(
        |ev| ev.iter().filter(|e| e.name() == "close").count() >= n,
        EVENT_TIMEOUT,
    )
    .unwrap_or_else(|ev| panic!("expected {n} close events, got {:?}", names(&ev)))
}

/// The close reason of connection `id` in the recorded events.
fn reason_of(ev: &[Recorded], id: conntrack_core::ConnectionId) -> conntrack_core::CloseReason {
    ev.iter()
        .find_map(|e| match e {
            Recorded::Close {
                connection, reason, ..
            } if connection.id == id => Some(*reason),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no close of {id:?}: {:?}", names(ev)))
}

fn names(ev: &[Recorded]) -> Vec<&'static str> {
    ev.iter().map(Recorded::name).collect()
}

fn assert_empty(tracker: &Tracker) {
    assert_eq!(
        tracker.len(),
        0,
        "tracker not empty: {:?}",
        tracker.connections()
    );
    assert!(tracker.connections().is_empty());
}

/// Tracked bytes equal the plaintext on plain TCP; over TLS they are the ciphertext, which is
/// at least the plaintext.
fn assert_bytes<H: Harness>(h: &H, what: &str, got: u64, plaintext: u64) {
    if h.tls() {
        assert!(
            got >= plaintext,
            "{}: {what}: {got} < plaintext {plaintext}",
            h.name()
        );
    } else {
        assert_eq!(got, plaintext, "{}: {what}", h.name());
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 31 + 7) % 251).unwrap())
        .collect()
}

/// Server and client entries appear with the right roles and categories and mirrored
/// addresses, and the client entry carries the dialed target.
pub fn entries_mirror<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("mirror");
    let (server, client) = h.connect(&tracker, l, d).expect("connect");
    let infos = tracker.connections();
    assert_eq!(infos.len(), 2, "{}: {infos:?}", h.name());
    let s = infos
        .iter()
        .find(|i| i.id == server.id())
        .expect("server entry");
    let c = infos
        .iter()
        .find(|i| i.id == client.id())
        .expect("client entry");
    assert_eq!(s.role, Role::Server);
    assert_eq!(c.role, Role::Client);
    assert_eq!(&*s.category, "mirror-in");
    assert_eq!(&*c.category, "mirror-out");
    assert!(
        matches!(s.local_addr, Addr::Inet(a) if a.ip().is_loopback()),
        "{s:?}"
    );
    assert_eq!(s.local_addr, c.remote_addr);
    assert_eq!(s.remote_addr, c.local_addr);
    let port = s.local_addr.socket_addr().unwrap().port();
    assert_eq!(
        c.target.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert!(c.timings.connect.is_some(), "dial timing missing: {c:?}");
    assert_eq!(rec.count("accept"), 1);
    assert_eq!(rec.count("dial"), 1);
    drop(server);
    drop(client);
    wait_closes(&rec, 2);
    assert_empty(&tracker);
}

/// A multi-megabyte transfer each way: bytes counted equal bytes sent, on both sides.
pub fn bulk_transfer_counts<H: Harness>(h: &H) {
    const UP: usize = 4 * 1024 * 1024 + 17;
    const DOWN: usize = 1024 * 1024 + 3;
    let (tracker, rec, l, d) = setup("bulk");
    let (server, mut client) = h.connect(&tracker, l, d).expect("connect");
    let (sid, cid) = (server.id(), client.id());
    let up = pattern(UP);
    let reader = server.spawn(|s| {
        let mut buf = vec![0; UP];
        s.read_exact(&mut buf).map(|()| buf)
    });
    client.write_all(&up).expect("client write");
    client.flush().expect("flush");
    let (server, got) = reader.join().expect("reader thread");
    assert!(got.expect("server read") == up, "payload corrupted");
    let down = pattern(DOWN);
    let writer = server.spawn(move |s| s.write_all(&down).and_then(|()| s.flush()));
    let mut buf = vec![0; DOWN];
    client.read_exact(&mut buf).expect("client read");
    let (server, w) = writer.join().expect("writer thread");
    w.expect("server write");
    let si = tracker.get(sid).unwrap();
    let ci = tracker.get(cid).unwrap();
    assert_bytes(h, "server read", si.read_bytes, UP as u64);
    assert_bytes(h, "server write", si.write_bytes, DOWN as u64);
    assert_bytes(h, "client read", ci.read_bytes, DOWN as u64);
    assert_bytes(h, "client write", ci.write_bytes, UP as u64);
    drop(client);
    drop(server);
    wait_closes(&rec, 2);
    let total = tracker.stats().total();
    assert_bytes(h, "total read", total.read_bytes, (UP + DOWN) as u64);
    assert_bytes(h, "total write", total.write_bytes, (UP + DOWN) as u64);
    assert_empty(&tracker);
}

/// Vectored writes are counted by what the vectored calls reported, and arrive whole.
pub fn vectored_writes_count<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("vectored");
    let (mut server, mut client) = h.connect(&tracker, l, d).expect("connect");
    let a = pattern(1000);
    let b = pattern(70_000);
    let c = b"tail".to_vec();
    let total = a.len() + b.len() + c.len();
    let reader = std::thread::spawn({
        let tracker = tracker.clone();
        let sid = server.id();
        move || {
            let mut buf = vec![0; total];
            let r = server.read_exact(&mut buf);
            (server, r, buf, tracker.get(sid))
        }
    });
    let n = client
        .write_all_vectored(&[&a, &b, &c])
        .expect("vectored write");
    client.flush().unwrap();
    assert_eq!(n, total);
    let (server, r, buf, _) = reader.join().unwrap();
    r.expect("server read");
    assert_eq!(&buf[..a.len()], &a[..]);
    assert_eq!(&buf[total - 4..], b"tail");
    let written = tracker.get(client.id()).unwrap().write_bytes;
    assert_bytes(h, "client write", written, total as u64);
    assert_bytes(
        h,
        "server read",
        tracker.get(server.id()).unwrap().read_bytes,
        total as u64,
    );
    drop((server, client));
    wait_closes(&rec, 2);
    assert_empty(&tracker);
}

/// Half-close: the client shuts down its write half, the server reads end of stream, then
/// still answers, and the client reads the answer. Both entries stay until dropped.
pub fn half_close<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("half");
    let (mut server, mut client) = h.connect(&tracker, l, d).expect("connect");
    client.write_all(b"request").unwrap();
    client.shutdown_write().expect("shutdown write");
    let got = server.read_to_end().expect("server read to end");
    assert_eq!(got, b"request");
    assert_eq!(
        tracker.len(),
        2,
        "half-closed connections must stay tracked"
    );
    server.write_all(b"response").unwrap();
    server.flush().unwrap();
    server.shutdown_write().unwrap();
    let got = client.read_to_end().expect("client read to end");
    assert_eq!(got, b"response");
    let ci = tracker.get(client.id()).unwrap();
    assert_bytes(h, "client read", ci.read_bytes, 8);
    assert_bytes(h, "client write", ci.write_bytes, 7);
    let (sid, cid) = (server.id(), client.id());
    drop((server, client));
    let ev = wait_closes(&rec, 2);
    for e in ev.iter().filter(|e| e.name() == "close") {
        assert!(
            e.error().is_none(),
            "clean half-close reported an error: {e:?}"
        );
    }
    // Each side read the other's end of stream before it closed. (Over TLS the end of stream
    // is the peer's `close_notify`, which the TLS stream wrappers report: the TCP-level
    // stream may never read the FIN.)
    for id in [sid, cid] {
        assert_eq!(
            reason_of(&ev, id),
            conntrack_core::CloseReason::PeerClosed,
            "{}",
            h.name()
        );
    }
    assert_empty(&tracker);
}

/// A peer reset is reported to `on_close` as the last I/O error.
///
/// The server closes with unread data in its receive buffer, so its kernel answers with a
/// reset; the client's next read fails with `ConnectionReset`. Over TLS the library below the
/// tracker has usually drained the socket into its own buffer, so the kernel sends a plain FIN
/// and the client sees the TLS layer's `UnexpectedEof` ("closed without close_notify")
/// instead, which the TCP-level tracked stream never saw as an error but the adapters' TLS
/// stream wrappers record: either way `on_close` carries the error the client saw.
pub fn peer_reset_reported<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("reset");
    // A per-I/O hook on the client: the failed read reaches it too, with the error.
    let read_errors: std::sync::Arc<std::sync::Mutex<Vec<(usize, io::ErrorKind)>>> =
        std::sync::Arc::default();
    let log = read_errors.clone();
    let d = d.on_read(move |ev| {
        if let Some(e) = ev.error {
            log.lock().unwrap().push((ev.n, e.kind()));
        }
    });
    let (mut server, mut client) = h.connect(&tracker, l, d).expect("connect");
    let cid = client.id();
    client.write_all(b"never read").unwrap();
    client.flush().unwrap();
    // Make sure the data reached the server's receive buffer before it closes.
    server.read_exact(&mut [0u8; 1]).unwrap();
    drop(server);
    let mut seen = None;
    for _ in 0..100 {
        match client.read_some(1024) {
            Ok(b) if b.is_empty() => {
                // A FIN may be seen before the reset lands; writing provokes the reset.
                let _ = client.write_all(b"x");
            }
            Ok(_) => {}
            Err(e) => {
                let abrupt = if h.tls() {
                    matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    )
                } else {
                    e.kind() == io::ErrorKind::ConnectionReset
                };
                assert!(abrupt, "{}: {e}", h.name());
                seen = Some(e.kind());
                break;
            }
        }
    }
    let seen = seen.expect("no reset seen by the client");
    drop(client);
    let ev = wait_closes(&rec, 2);
    let close = ev
        .iter()
        .find(|e| e.name() == "close" && e.id() == Some(cid))
        .expect("client close event");
    let err = close
        .error()
        .unwrap_or_else(|| panic!("{}: close event carries no error", h.name()));
    assert_eq!(err.kind, seen, "{}", h.name());
    if seen == io::ErrorKind::ConnectionReset {
        assert_eq!(
            reason_of(&ev, cid),
            conntrack_core::CloseReason::Reset,
            "{}",
            h.name()
        );
    }
    if !h.tls() {
        // The read that failed is the socket's own: `on_read` saw it, with 0 bytes.
        assert!(
            read_errors.lock().unwrap().contains(&(0, seen)),
            "{}: on_read errors {:?}",
            h.name(),
            read_errors.lock().unwrap()
        );
    }
    assert_empty(&tracker);
}

/// `on_close` fires exactly once per connection, with the final byte counts.
pub fn close_fires_once<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("once");
    let (mut server, mut client) = h.connect(&tracker, l, d).expect("connect");
    let (sid, cid) = (server.id(), client.id());
    client.write_all(b"ping").unwrap();
    client.flush().unwrap();
    // A read into no room at all (made once data is there: on Linux it otherwise waits for
    // some) returns nothing, and is not the peer's end of stream. Not over TLS, where the TLS
    // layers take a plaintext read of 0 for the end of the stream.
    let mut b = [0; 2];
    server.read_exact(&mut b).unwrap();
    if !h.tls() {
        assert!(server.read_some(0).unwrap().is_empty());
    }
    server.read_exact(&mut b).unwrap();
    drop(client);
    drop(server);
    let ev = wait_closes(&rec, 2);
    // Give a wrong second close a chance to show up, without sleeping on the happy path:
    // a second wait for a third close must time out.
    let extra = rec.wait_for(
        |ev| ev.iter().filter(|e| e.name() == "close").count() > 2,
        Duration::from_millis(200),
    );
    assert!(
        extra.is_err(),
        "more than one close per connection: {:?}",
        names(&ev)
    );
    for (id, read, write) in [(sid, 4, 0), (cid, 0, 4)] {
        let closes: Vec<_> = ev
            .iter()
            .filter(|e| e.name() == "close" && e.id() == Some(id))
            .collect();
        assert_eq!(closes.len(), 1);
        let Recorded::Close { connection, .. } = closes[0] else {
            unreachable!()
        };
        assert_bytes(h, "final read", connection.read_bytes, read);
        assert_bytes(h, "final write", connection.write_bytes, write);
        // Dropped with no error and no end of stream read: closed by this side.
        assert_eq!(
            reason_of(&ev, id),
            conntrack_core::CloseReason::ClosedLocally,
            "{}",
            h.name()
        );
    }
    assert_empty(&tracker);
}

/// Totals keep counting after the connections are gone.
pub fn stats_outlive_connections<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("stats");
    for i in 0..3u8 {
        let (mut server, mut client) = h.connect(&tracker, l.clone(), d.clone()).expect("connect");
        client.write_all(&[i; 10]).unwrap();
        client.flush().unwrap();
        let mut b = [0; 10];
        server.read_exact(&mut b).unwrap();
    }
    wait_closes(&rec, 6);
    let stats: Stats = tracker.stats();
    let s = stats.get("stats-in", Role::Server).expect("server stats");
    let c = stats.get("stats-out", Role::Client).expect("client stats");
    assert_eq!((s.opened, s.closed, s.active), (3, 3, 0));
    assert_eq!((c.opened, c.closed, c.active), (3, 3, 0));
    assert_bytes(h, "server read total", s.read_bytes, 30);
    assert_bytes(h, "client write total", c.write_bytes, 30);
    assert_empty(&tracker);
}

/// Dropping the server end first or the client end first makes no difference.
pub fn drop_order_independent<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("order");
    let (s1, c1) = h.connect(&tracker, l.clone(), d.clone()).expect("connect");
    let (s2, c2) = h.connect(&tracker, l, d).expect("connect");
    assert_eq!(tracker.len(), 4);
    drop(s1);
    drop(c1);
    drop(c2);
    drop(s2);
    wait_closes(&rec, 4);
    assert_empty(&tracker);
}

/// On Linux, every tracked TCP connection carries the kernel's statistics: a small round-trip
/// time and no retransmit on loopback, and (plain TCP) the bytes the kernel received and had
/// acknowledged are those the tracker counted; the close event carries the final ones. Other
/// platforms report none.
pub fn tcp_statistics<H: Harness>(h: &H) {
    let (tracker, rec, l, d) = setup("tcpinfo");
    let (mut server, mut client) = h.connect(&tracker, l, d).expect("connect");
    let up = pattern(10_000);
    client.write_all(&up).expect("client write");
    client.flush().expect("flush");
    let mut buf = vec![0; up.len()];
    server.read_exact(&mut buf).expect("server read");
    server.write_all(&pattern(1_000)).expect("server write");
    server.flush().expect("flush");
    let mut buf = vec![0; 1_000];
    client.read_exact(&mut buf).expect("client read");
    // One more byte, whose segment acknowledges the server's answer.
    client.write_all(b"x").expect("client write");
    client.flush().expect("flush");
    server.read_exact(&mut buf[..1]).expect("server read");
    let s = tracker.get(server.id()).unwrap();
    let c = tracker.get(client.id()).unwrap();
    if cfg!(any(target_os = "linux", target_os = "android")) {
        for info in [&s, &c] {
            let t = info
                .tcp
                .as_deref()
                .unwrap_or_else(|| panic!("{}: no TCP statistics: {info:?}", h.name()));
            assert!(
                t.rtt > Duration::ZERO && t.rtt < Duration::from_secs(1),
                "{}: {t:?}",
                h.name()
            );
            assert_eq!(t.retransmits, 0, "{}: {t:?}", h.name());
        }
        let t = s.tcp.as_deref().unwrap();
        if !h.tls() {
            // (Over TLS the kernel may hold bytes, such as session tickets, not read yet.)
            assert_eq!(t.bytes_received, Some(s.read_bytes), "{}: {t:?}", h.name());
            assert_eq!(t.bytes_acked, Some(s.write_bytes), "{}: {t:?}", h.name());
        }
    } else {
        assert!(s.tcp.is_none() && c.tcp.is_none());
    }
    drop(server);
    drop(client);
    let events = wait_closes(&rec, 2);
    for e in &events {
        if let Recorded::Close { connection, .. } = e {
            assert_eq!(
                connection.tcp.is_some(),
                cfg!(any(target_os = "linux", target_os = "android")),
                "{}: {connection:?}",
                h.name()
            );
        }
    }
    assert_empty(&tracker);
}

/// One per-I/O event: the connection, the bytes and whether it carried an error.
type IoLog = std::sync::Arc<std::sync::Mutex<Vec<(conntrack_core::ConnectionId, usize, bool)>>>;

fn logged(log: &IoLog, id: conntrack_core::ConnectionId) -> Vec<(usize, bool)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(i, ..)| *i == id)
        .map(|&(_, n, e)| (n, e))
        .collect()
}

/// Per-I/O hooks (`on_read` / `on_write` closures on the configs) see every read and write of
/// their connections: the byte counts add up to the connection's own, no event carries an
/// error on a clean exchange, and end of stream is a read of 0.
pub fn per_io_hooks<H: Harness>(h: &H) {
    let tracker = Tracker::new();
    let (reads, writes): (IoLog, IoLog) = Default::default();
    let (r1, w1, r2, w2) = (reads.clone(), writes.clone(), reads.clone(), writes.clone());
    let l = ListenerConfig::new()
        .category("io-in")
        .on_read(move |ev| r1.lock().unwrap().push((ev.id, ev.n, ev.error.is_some())))
        .on_write(move |ev| w1.lock().unwrap().push((ev.id, ev.n, ev.error.is_some())));
    let d = DialerConfig::new()
        .category("io-out")
        .on_read(move |ev| r2.lock().unwrap().push((ev.id, ev.n, ev.error.is_some())))
        .on_write(move |ev| w2.lock().unwrap().push((ev.id, ev.n, ev.error.is_some())));
    let (mut server, mut client) = h.connect(&tracker, l, d).expect("connect");
    let (sid, cid) = (server.id(), client.id());
    client.write_all(&pattern(1000)).unwrap();
    client.flush().unwrap();
    client.shutdown_write().unwrap();
    assert_eq!(server.read_to_end().unwrap(), pattern(1000));
    server.write_all(&pattern(500)).unwrap();
    server.flush().unwrap();
    server.shutdown_write().unwrap();
    assert_eq!(client.read_to_end().unwrap(), pattern(500));
    for (id, read, written) in [(sid, 1000, 500), (cid, 500, 1000)] {
        let info = tracker.get(id).expect("open");
        let r = logged(&reads, id);
        let w = logged(&writes, id);
        assert!(
            r.iter().chain(&w).all(|&(_, e)| !e),
            "{}: an error event on a clean exchange: {r:?} {w:?}",
            h.name()
        );
        let sum = |v: &[(usize, bool)]| v.iter().map(|&(n, _)| n as u64).sum::<u64>();
        assert_eq!(sum(&r), info.read_bytes, "{}: on_read adds up", h.name());
        assert_eq!(sum(&w), info.write_bytes, "{}: on_write adds up", h.name());
        assert_bytes(h, "read", info.read_bytes, read);
        assert_bytes(h, "written", info.write_bytes, written);
        if !h.tls() {
            assert_eq!(
                r.last().map(|&(n, _)| n),
                Some(0),
                "{}: end of stream is a read of 0: {r:?}",
                h.name()
            );
        }
    }
    drop((server, client));
    assert!(
        crate::drained_within(&tracker, EVENT_TIMEOUT),
        "{}",
        h.name()
    );
    assert_empty(&tracker);
}
