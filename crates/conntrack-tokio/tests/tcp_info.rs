//! Kernel TCP statistics (`ConnectionInfo::tcp`) on loopback: read when a snapshot is taken
//! and once at close, agreeing with the bytes the tracker counted.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::future::Future;
use std::time::Duration;

use conntrack_core::{
    ConnectionInfo, DialerConfig, ListenerConfig, Recorded, RecordingHook, Tracker,
};
use conntrack_tokio::{Dialer, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn tcp(info: &ConnectionInfo) -> conntrack_core::TcpStats {
    *info
        .tcp
        .clone()
        .unwrap_or_else(|| panic!("no TCP statistics for {info:?}"))
}

#[tokio::test]
async fn tcp_statistics_agree_with_the_tracked_bytes() {
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("out"));
    let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect_addr(addr));
    let (mut server, _) = accepted.unwrap();
    let mut client = dialed.unwrap();

    // Client sends 100 KB; the server reads it all and answers 5,000 bytes; the client reads
    // them and sends one more byte, whose segment acknowledges the answer.
    let request = vec![7u8; 100_000];
    let (w, r) = tokio::join!(client.write_all(&request), async {
        let mut buf = vec![0u8; request.len()];
        server.read_exact(&mut buf).await.map(|_| ())
    });
    w.unwrap();
    r.unwrap();
    server.write_all(&[1u8; 5_000]).await.unwrap();
    let mut answer = vec![0u8; 5_000];
    client.read_exact(&mut answer).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    server.read_exact(&mut one).await.unwrap();
    let s = tracker.get(server.id()).unwrap();
    // The server answers that byte too, acknowledging it, so that every byte the client sent
    // has been acknowledged when the client has read the answer.
    server.write_all(b"y").await.unwrap();
    client.read_exact(&mut one).await.unwrap();
    let c = tracker.get(client.id()).unwrap();
    assert_eq!((s.read_bytes, s.write_bytes), (100_001, 5_000));
    assert_eq!((c.read_bytes, c.write_bytes), (5_001, 100_001));
    for info in [&s, &c] {
        let t = tcp(info);
        // Loopback: a round trip well under a second. (A starved machine can make the kernel
        // time out a loopback segment and send it again: resent bytes are counted apart.)
        assert!(
            t.rtt > Duration::ZERO && t.rtt < Duration::from_secs(1),
            "{t:?}"
        );
        assert!(t.rtt_var < Duration::from_secs(1), "{t:?}");
        assert!(t.bytes_retrans.is_some(), "{t:?}");
        assert!(t.cwnd > 0 && t.mss > 0, "{t:?}");
    }
    // What the kernel received and had acknowledged is what the tracker counted: the server
    // read every byte the client sent, and the client's last segment acknowledged the answer.
    let st = tcp(&s);
    assert_eq!(st.bytes_received, Some(s.read_bytes), "{st:?}");
    assert_eq!(st.bytes_acked, Some(s.write_bytes), "{st:?}");
    // Sent: what was written, plus whatever the kernel sent again.
    assert_eq!(
        st.bytes_sent,
        Some(s.write_bytes + st.bytes_retrans.unwrap()),
        "{st:?}"
    );
    let ct = tcp(&c);
    assert_eq!(ct.bytes_received, Some(c.read_bytes), "{ct:?}");
    // The side that opened the connection counts its SYN as one acknowledged byte.
    assert_eq!(ct.bytes_acked, Some(c.write_bytes + 1), "{ct:?}");
    assert_eq!(
        ct.bytes_sent,
        Some(c.write_bytes + ct.bytes_retrans.unwrap()),
        "{ct:?}"
    );

    // Once at close: the close event carries the final statistics. The server closes first,
    // so its last reading comes before any FIN (the kernel counts a received FIN as a byte).
    let (server_id, client_id) = (server.id(), client.id());
    drop(server);
    drop(client);
    let events = rec
        .wait_for(
            |ev| ev.iter().filter(|e| e.name() == "close").count() == 2,
            WAIT,
        )
        .expect("both connections close");
    for e in &events {
        if let Recorded::Close { connection, .. } = e {
            let t = tcp(connection);
            if connection.id == server_id {
                assert_eq!(t.bytes_received, Some(100_001));
                // 5,001 bytes; the client's acknowledgement of the last may still be on its way.
                let acked = t.bytes_acked.unwrap();
                assert!(acked == 5_000 || acked == 5_001, "{t:?}");
            } else {
                assert_eq!(connection.id, client_id);
                // 5,001, and the server's FIN if it has arrived.
                let received = t.bytes_received.unwrap();
                assert!(received == 5_001 || received == 5_002, "{t:?}");
            }
        }
    }
    // The history keeps them too.
    for closed in tracker.recently_closed() {
        assert!(closed.info.tcp.is_some(), "{closed:?}");
    }
}

#[tokio::test]
async fn unix_sockets_have_no_tcp_statistics() {
    let dir = std::env::temp_dir().join(format!("conntrack-tcpinfo-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let tracker = Tracker::new();
    let inner = tokio::net::UnixListener::bind(&dir).unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new());
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let (a, d) = tokio::join!(listener.accept(), dialer.connect_unix(&dir));
    let (a, d) = (a.unwrap().0, d.unwrap());
    assert!(tracker.get(a.id()).unwrap().tcp.is_none());
    assert!(tracker.get(d.id()).unwrap().tcp.is_none());
    let _ = std::fs::remove_file(&dir);
}

/// `with_tcp_info` on a stream the listener or dialer registered already (as they all do)
/// keeps it registered: the statistics are still read, and an abort still shuts the socket
/// down, waking a read blocked on it.
#[tokio::test]
async fn with_tcp_info_on_a_registered_stream_keeps_it_registered() {
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new());
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect_addr(addr));
    let server = accepted.unwrap().0.with_tcp_info();
    let client = dialed.unwrap().with_tcp_info();
    for t in [&server, &client] {
        let info = tracker.get(t.id()).unwrap();
        assert!(info.tcp.is_some(), "still read: {info:?}");
    }
    let (mut r, _w) = server.into_split();
    let id = r.id();
    let (pending_tx, pending_rx) = tokio::sync::oneshot::channel();
    let read = tokio::spawn(async move {
        let mut buf = [0; 8];
        let mut fut = std::pin::pin!(r.read(&mut buf));
        let mut pending_tx = Some(pending_tx);
        std::future::poll_fn(|cx| {
            let res = fut.as_mut().poll(cx);
            if res.is_pending() {
                if let Some(tx) = pending_tx.take() {
                    let _ = tx.send(());
                }
            }
            res
        })
        .await
    });
    pending_rx.await.unwrap();
    assert!(tracker.abort(id));
    let err = tokio::time::timeout(WAIT, read)
        .await
        .expect("the blocked read is woken by the abort")
        .unwrap()
        .expect_err("the read fails");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted, "{err}");
    drop(client);
}
