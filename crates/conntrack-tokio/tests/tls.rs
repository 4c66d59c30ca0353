//! TLS handshake tracing over tokio-rustls on real loopback sockets: what is negotiated shows
//! on both entries, and every kind of failed handshake is reported, counted and leaves nothing
//! tracked, while the accept loop keeps serving.
//!
//! Certificates: a test CA and a "localhost" leaf it signs, made with rcgen once per test
//! binary; the server presents the chain (leaf, CA) and clients trust the CA. "Untrusted" is a
//! client trusting another CA, "wrong name" a client asking for another name: both are real
//! verification failures.
#![cfg(feature = "tls")]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use conntrack_core::{
    ConnectionId, ConnectionInfo, DialerConfig, ListenerConfig, Recorded, RecordedError,
    RecordingHook, Role, Tracker,
};
use conntrack_testkit::tls::{client_config, nth_server_failure, pki, server_config, server_ids};
use conntrack_tokio::tls::{ClientTlsStream, TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// A tracked TLS server, as a server would write it: an accept loop that spawns a task per
/// connection, which handshakes (within `handshake_timeout`), writes "hello" and closes.
/// Failed handshakes do not stop the loop. Returns the address.
async fn serve(
    tracker: &Tracker,
    config: Arc<ServerConfig>,
    rec: &RecordingHook,
    handshake_timeout: Duration,
) -> std::net::SocketAddr {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(
        tracker,
        inner,
        ListenerConfig::new().category("tls-in").hook(rec.clone()),
    );
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        // Bounded: the test process ends the runtime, and with it this loop.
        for _ in 0..1000 {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(Ok(mut tls)) =
                    tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// The final info of a closed connection, from its `on_close`.
fn closed(rec: &RecordingHook, id: ConnectionId) -> ConnectionInfo {
    let ev = rec
        .wait_for(
            |ev| ev.iter().any(|e| e.name() == "close" && e.id() == Some(id)),
            WAIT,
        )
        .expect("close event");
    ev.into_iter()
        .find_map(|e| match e {
            Recorded::Close { connection, .. } if connection.id == id => Some(connection),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_with_alpn_and_sni_shows_the_same_info_on_both_sides() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(rustls::DEFAULT_VERSIONS, &[b"h2", b"http/1.1"]),
        &rec,
        WAIT,
    )
    .await;
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new().category("tls-out").hook(rec.clone()),
    );
    let connector = TlsConnector::from(client_config(&pki().ca, &[b"h2"]));
    let mut tls = dialer
        .connect_tls(&format!("localhost:{}", addr.port()), &connector, None)
        .await
        .expect("handshake");
    let mut hello = Vec::new();
    tls.read_to_end(&mut hello).await.unwrap();
    assert_eq!(hello, b"hello");

    let client = tls.get_ref().0.info();
    let ctls = client.tls.clone().expect("client entry has TLS info");
    assert_eq!(ctls.protocol_version, "1.3");
    assert!(
        [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256"
        ]
        .contains(&ctls.cipher_suite.as_str()),
        "{}",
        ctls.cipher_suite
    );
    assert_eq!(ctls.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(ctls.server_name.as_deref(), Some("localhost"));
    assert!(!ctls.resumed);
    let chain = ctls.peer_certificates.clone().expect("the server's chain");
    assert_eq!(chain.count, 2);
    // rcgen puts CN first in the DER; RFC 4514 writes the last RDN first.
    assert_eq!(
        chain.leaf_subject.as_deref(),
        Some("O=conntrack tests,CN=localhost")
    );
    assert!(chain.leaf_not_after.is_some());
    assert!(client.timings.tls_handshake.is_some() && client.timings.dns.is_some());

    // The server's entry, as its on_close saw it.
    let ev = rec.wait_for(|ev| !server_ids(ev).is_empty(), WAIT).unwrap();
    let sid = *server_ids(&ev).iter().next().unwrap();
    let server = closed(&rec, sid);
    let stls = server.tls.clone().expect("server entry has TLS info");
    assert_eq!(
        (
            &stls.protocol_version,
            &stls.cipher_suite,
            &stls.alpn,
            &stls.server_name,
            stls.resumed
        ),
        (
            &ctls.protocol_version,
            &ctls.cipher_suite,
            &ctls.alpn,
            &ctls.server_name,
            ctls.resumed
        ),
        "same TLS info on both entries"
    );
    assert!(stls.peer_certificates.is_none(), "no client certificate");
    assert!(server.timings.tls_handshake.is_some());

    // One start and one done per side; the done events carry the info and the measured time.
    let ev = rec.events();
    let starts: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Recorded::TlsHandshakeStart { id, server_name } => Some((*id, server_name.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts.contains(&(client.id, Some("localhost".to_string()))));
    assert!(starts.contains(&(sid, None)));
    for e in &ev {
        if let Recorded::TlsHandshakeDone {
            id, tls, duration, ..
        } = e
        {
            let (want_tls, want_time) = if *id == client.id {
                (&ctls, client.timings.tls_handshake)
            } else {
                (&stls, server.timings.tls_handshake)
            };
            assert_eq!(tls.as_ref(), Some(&**want_tls));
            assert_eq!(Some(*duration), want_time);
        }
    }
    drop(tls);
    tokio::time::timeout(WAIT, tracker.drained())
        .await
        .expect("all gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_server_gives_1_2_and_a_second_connection_resumes() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(&[&rustls::version::TLS12], &[]),
        &rec,
        WAIT,
    )
    .await;
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let connector = TlsConnector::from(client_config(&pki().ca, &[]));
    let target = format!("127.0.0.1:{}", addr.port());
    let mut first = dialer
        .connect_tls(&target, &connector, Some("localhost"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    first.read_to_end(&mut buf).await.unwrap();
    let info = first.get_ref().0.info().tls.unwrap();
    assert_eq!(info.protocol_version, "1.2");
    assert!(
        info.cipher_suite.starts_with("TLS_ECDHE_ECDSA_WITH_"),
        "{}",
        info.cipher_suite
    );
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    assert!(!info.resumed);
    // Same client config: the session is resumed.
    let second = dialer
        .connect_tls(&target, &connector, Some("localhost"))
        .await
        .unwrap();
    let info = second.get_ref().0.info().tls.unwrap();
    assert_eq!(info.protocol_version, "1.2");
    assert!(info.resumed, "second handshake resumed the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_session_resumes_after_the_ticket_is_read() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(&[&rustls::version::TLS13], &[]),
        &rec,
        WAIT,
    )
    .await;
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let connector = TlsConnector::from(client_config(&pki().ca, &[]));
    let target = format!("localhost:{}", addr.port());
    let mut first = dialer.connect_tls(&target, &connector, None).await.unwrap();
    let mut buf = Vec::new();
    first.read_to_end(&mut buf).await.unwrap(); // receives the session tickets
    assert!(!first.get_ref().0.info().tls.unwrap().resumed);
    let second = dialer.connect_tls(&target, &connector, None).await.unwrap();
    let info = second.get_ref().0.info().tls.unwrap();
    assert_eq!(info.protocol_version, "1.3");
    assert!(info.resumed);
    // The server's entry says so too.
    let ev = rec
        .wait_for(
            |ev| {
                ev.iter()
                    .filter(|e| matches!(e, Recorded::TlsHandshakeDone { tls: Some(_), .. }))
                    .count()
                    >= 2
            },
            WAIT,
        )
        .unwrap();
    let resumed: Vec<bool> = ev
        .iter()
        .filter_map(|e| match e {
            Recorded::TlsHandshakeDone { tls: Some(t), .. } => Some(t.resumed),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, [false, true]);
}

/// Every failure: reported with its error, counted, nothing left tracked, and the server
/// still serves a good client afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_reported_counted_and_leave_nothing() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(rustls::DEFAULT_VERSIONS, &[b"h2"]),
        &rec,
        WAIT,
    )
    .await;
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new().category("tls-out").hook(rec.clone()),
    );
    let target = format!("localhost:{}", addr.port());
    let good = || TlsConnector::from(client_config(&pki().ca, &[b"h2"]));

    // 1. Plain bytes instead of a ClientHello.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let err = nth_server_failure(&rec, 1, WAIT);
    assert_eq!(err.kind, io::ErrorKind::InvalidData, "{err:?}");
    drop(raw);

    // 2. A client that hangs up in the middle of its ClientHello.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    drop(raw);
    let err = nth_server_failure(&rec, 2, WAIT);
    assert_eq!(err.kind, io::ErrorKind::UnexpectedEof, "{err:?}");

    // 3. A client that does not trust the server's CA.
    let untrusted = TlsConnector::from(client_config(&pki().other_ca, &[b"h2"]));
    let e = dialer
        .connect_tls(&target, &untrusted, None)
        .await
        .expect_err("untrusted");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let err = nth_server_failure(&rec, 3, WAIT);
    assert!(err.message.contains("alert"), "the client's alert: {err:?}");

    // 4. A client that asks for another name.
    let e = dialer
        .connect_tls(&target, &good(), Some("wrong.example"))
        .await
        .expect_err("wrong name");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    let err = nth_server_failure(&rec, 4, WAIT);
    assert!(err.message.contains("alert"), "the client's alert: {err:?}");

    // 5. No ALPN protocol in common.
    let no_alpn = TlsConnector::from(client_config(&pki().ca, &[b"spdy/1"]));
    let e = dialer
        .connect_tls(&target, &no_alpn, None)
        .await
        .expect_err("no ALPN in common");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    let err = nth_server_failure(&rec, 5, WAIT);
    assert_eq!(err.kind, io::ErrorKind::InvalidData, "{err:?}");

    // The server keeps serving.
    let mut ok = dialer
        .connect_tls(&target, &good(), None)
        .await
        .expect("a good client still works");
    let mut hello = Vec::new();
    ok.read_to_end(&mut hello).await.unwrap();
    assert_eq!(hello, b"hello");
    drop(ok);

    tokio::time::timeout(WAIT, tracker.drained())
        .await
        .expect("nothing left tracked");
    let ev = rec.events();
    let failed = ev
        .iter()
        .filter(|e| e.name() == "tls_handshake_done" && e.error().is_some())
        .count();
    assert_eq!(failed, 8, "five on the server, three on the client");
    let stats = tracker.stats();
    let server = stats.get("tls-in", Role::Server).unwrap();
    let client = stats.get("tls-out", Role::Client).unwrap();
    assert_eq!(
        (server.tls_handshake_failed, client.tls_handshake_failed),
        (5, 3)
    );
    assert_eq!((server.opened, server.closed), (6, 6));
    // A failed connection's close carries its handshake error.
    for e in &ev {
        if let Recorded::TlsHandshakeDone {
            id,
            error: Some(err),
            ..
        } = e
        {
            let close = ev
                .iter()
                .find(|c| c.name() == "close" && c.id() == Some(*id))
                .expect("closed");
            assert_eq!(close.error(), Some(err), "{id}");
        }
    }
}

/// A server that gives up on a slow handshake (a timeout drops the accept future) reports the
/// handshake as cancelled, counts it, and the connection leaves the tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_handshake_is_reported_and_counted() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(rustls::DEFAULT_VERSIONS, &[]),
        &rec,
        Duration::from_millis(100),
    )
    .await;
    // Connects and says nothing.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = nth_server_failure(&rec, 1, WAIT);
    assert_eq!(err.kind, io::ErrorKind::Other);
    assert!(err.message.contains("cancelled"), "{err:?}");
    // The server dropped the connection.
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, silent.read_to_end(&mut buf))
        .await
        .expect("server hung up")
        .unwrap_or(0);
    assert_eq!(n, 0);
    tokio::time::timeout(WAIT, tracker.drained())
        .await
        .expect("nothing left tracked");
    assert_eq!(tracker.stats().total().tls_handshake_failed, 1);
    assert_eq!(rec.count("tls_handshake_start"), 1);
    assert_eq!(rec.count("tls_handshake_done"), 1);
}

/// What the server's read sees after the client's `misbehave`, and the server connection's
/// `on_close` error: the TLS layer's own error, recorded by the TLS stream wrapper although
/// the socket below saw no error at all.
async fn server_error_after_handshake(
    misbehave: impl AsyncFnOnce(ClientTlsStream<tokio::net::TcpStream>),
) -> (io::Error, RecordedError) {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(
        &tracker,
        inner,
        ListenerConfig::new().category("tls-in").hook(rec.clone()),
    );
    // No TLS 1.3 session tickets after the handshake: a client dropping its stream with them
    // unread would make its kernel send a reset instead of a FIN.
    let mut config = (*server_config(rustls::DEFAULT_VERSIONS, &[])).clone();
    config.send_tls13_tickets = 0;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let id = tls.id();
        let mut buf = Vec::new();
        let err = tls.read_to_end(&mut buf).await.unwrap_err();
        (id, err)
    });
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("tls-out"));
    let connector = TlsConnector::from(client_config(&pki().ca, &[]));
    let tls = dialer
        .connect_tls(&addr.to_string(), &connector, Some("localhost"))
        .await
        .unwrap();
    misbehave(tls).await;
    let (id, err) = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    let closed = rec
        .wait_for(
            |ev| ev.iter().any(|e| e.name() == "close" && e.id() == Some(id)),
            WAIT,
        )
        .expect("server close");
    let on_close = closed
        .iter()
        .find(|e| e.name() == "close" && e.id() == Some(id))
        .and_then(|e| e.error().cloned())
        .expect("on_close carries the TLS layer's error");
    tokio::time::timeout(WAIT, tracker.drained())
        .await
        .expect("nothing left tracked");
    (err, on_close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_without_close_notify_reaches_on_close() {
    // Dropping the stream closes TCP without sending close_notify.
    let (err, on_close) = server_error_after_handshake(async |tls| drop(tls)).await;
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(on_close.kind, io::ErrorKind::UnexpectedEof);
    assert_eq!(on_close.message, err.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_reaches_on_close() {
    let (err, on_close) = server_error_after_handshake(async |mut tls| {
        // An application-data record whose ciphertext is garbage, written under TLS.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend([0x5a; 0x20]);
        tls.get_mut().0.write_all(&record).await.unwrap();
        // Keep the connection open until the server has given up on it.
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, tls.get_mut().0.read_to_end(&mut buf)).await;
    })
    .await;
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert_eq!(on_close.kind, io::ErrorKind::InvalidData);
    assert_eq!(on_close.message, err.to_string());
}
