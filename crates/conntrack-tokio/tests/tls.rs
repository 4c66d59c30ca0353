//! TLS handshake tracing over tokio-rustls on real loopback sockets: what is negotiated shows
//! on both entries, and every kind of failed handshake is reported, counted and leaves nothing
//! tracked, while the accept loop keeps serving.
#![cfg(feature = "tls")]

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use conntrack_core::{
    DialerConfig, ListenerConfig, Recorded, RecordingHook, Role, TlsInfo, Tracker,
};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

struct Cert {
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

/// A self-signed certificate for "localhost" (generated once per test binary).
fn cert() -> &'static Cert {
    static CERT: OnceLock<Cert> = OnceLock::new();
    CERT.get_or_init(|| {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        Cert {
            der: cert.der().clone(),
            key: signing_key.serialize_der(),
        }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let c = cert();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![c.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn client_config(trusted: CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A tracked TLS server: accepts, handshakes, writes "hello" and closes; handshake failures
/// do not stop the loop. Returns the address.
async fn serve(
    tracker: &Tracker,
    config: Arc<ServerConfig>,
    rec: &RecordingHook,
) -> std::net::SocketAddr {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let mut listener = Listener::new(
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
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

fn tls_done(
    ev: &[Recorded],
    role_ids: &[conntrack_core::ConnectionId],
) -> Vec<(Option<TlsInfo>, Option<io::ErrorKind>)> {
    ev.iter()
        .filter_map(|e| match e {
            Recorded::TlsHandshakeDone { id, tls, error, .. } if role_ids.contains(id) => {
                Some((tls.clone(), error.as_ref().map(|e| e.kind)))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_with_alpn_and_sni_shows_the_same_info_on_both_sides() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(rustls::DEFAULT_VERSIONS, &[b"h2", b"http/1.1"]),
        &rec,
    )
    .await;
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new().category("tls-out").hook(rec.clone()),
    );
    let connector = TlsConnector::from(client_config(cert().der.clone(), &[b"h2"]));
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
        ctls.cipher_suite.starts_with("TLS_") && !ctls.cipher_suite.starts_with("TLS13_"),
        "{}",
        ctls.cipher_suite
    );
    assert_eq!(ctls.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(ctls.server_name.as_deref(), Some("localhost"));
    assert!(!ctls.resumed);
    assert_eq!(ctls.peer_certificates.as_ref().map(|p| p.count), Some(1));
    assert!(client.timings.tls_handshake.is_some() && client.timings.dns.is_some());

    // The server's entry, from its handshake-done event.
    let ev = rec
        .wait_for(
            |ev| {
                ev.iter()
                    .filter(|e| e.name() == "tls_handshake_done")
                    .count()
                    >= 2
            },
            WAIT,
        )
        .unwrap();
    let server_ids: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Recorded::Accept {
                connection: Some(c),
                ..
            } => Some(c.id),
            _ => None,
        })
        .collect();
    let done = tls_done(&ev, &server_ids);
    let stls = done[0].0.clone().expect("server side negotiated");
    assert_eq!(
        (
            &stls.protocol_version,
            &stls.cipher_suite,
            &stls.alpn,
            &stls.server_name
        ),
        (
            &ctls.protocol_version,
            &ctls.cipher_suite,
            &ctls.alpn,
            &ctls.server_name
        ),
        "same TLS info on both entries"
    );
    assert_eq!(
        rec.names()
            .iter()
            .filter(|n| **n == "tls_handshake_start")
            .count(),
        2
    );
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
    )
    .await;
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let connector = TlsConnector::from(client_config(cert().der.clone(), &[]));
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
        info.cipher_suite.starts_with("TLS_ECDHE_"),
        "{}",
        info.cipher_suite
    );
    assert!(!info.resumed);
    // Same client config: the session is resumed.
    let second = dialer
        .connect_tls(&target, &connector, Some("localhost"))
        .await
        .unwrap();
    assert!(
        second.get_ref().0.info().tls.unwrap().resumed,
        "second handshake resumed the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_session_resumes_after_the_ticket_is_read() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(&[&rustls::version::TLS13], &[]),
        &rec,
    )
    .await;
    let dialer = Dialer::new(&tracker, DialerConfig::new());
    let connector = TlsConnector::from(client_config(cert().der.clone(), &[]));
    let target = format!("localhost:{}", addr.port());
    let mut first = dialer.connect_tls(&target, &connector, None).await.unwrap();
    let mut buf = Vec::new();
    first.read_to_end(&mut buf).await.unwrap(); // receives the session tickets
    let second = dialer.connect_tls(&target, &connector, None).await.unwrap();
    let info = second.get_ref().0.info().tls.unwrap();
    assert_eq!(info.protocol_version, "1.3");
    assert!(info.resumed);
}

/// Every failure: reported with the error, counted, nothing left tracked, and the server
/// still serves a good client afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_reported_counted_and_leave_nothing() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let addr = serve(
        &tracker,
        server_config(rustls::DEFAULT_VERSIONS, &[b"h2"]),
        &rec,
    )
    .await;
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new().category("tls-out").hook(rec.clone()),
    );
    let target = format!("localhost:{}", addr.port());
    let good = || TlsConnector::from(client_config(cert().der.clone(), &[b"h2"]));

    // 1. Garbage bytes instead of a ClientHello.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink).await; // the server gives up on us
    drop(raw);

    // 2. A client that hangs up in the middle of its ClientHello.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    drop(raw);

    // 3. An untrusted certificate (the client trusts another one).
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .unwrap()
        .cert
        .der()
        .clone();
    let untrusted = TlsConnector::from(client_config(other, &[b"h2"]));
    let e = dialer
        .connect_tls(&target, &untrusted, None)
        .await
        .expect_err("untrusted");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

    // 4. A wrong server name.
    let e = dialer
        .connect_tls(&target, &good(), Some("wrong.example"))
        .await
        .expect_err("wrong name");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

    // 5. No common ALPN protocol.
    let no_alpn = TlsConnector::from(client_config(cert().der.clone(), &[b"spdy/1"]));
    let e = dialer
        .connect_tls(&target, &no_alpn, None)
        .await
        .expect_err("no ALPN in common");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::InvalidData
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::UnexpectedEof
        ),
        "{e}"
    );

    // The server keeps serving.
    let mut ok = dialer
        .connect_tls(&target, &good(), None)
        .await
        .expect("a good client still works");
    let mut hello = Vec::new();
    ok.read_to_end(&mut hello).await.unwrap();
    assert_eq!(hello, b"hello");
    drop(ok);

    // Server side: five failed handshakes, one good one; client side: three failed, one good.
    let ev = rec
        .wait_for(
            |ev| {
                ev.iter()
                    .filter(|e| e.name() == "tls_handshake_done")
                    .count()
                    >= 10
            },
            WAIT,
        )
        .unwrap_or_else(|ev| {
            panic!(
                "handshake events: {:?}",
                ev.iter().map(Recorded::name).collect::<Vec<_>>()
            )
        });
    let failed: Vec<_> = ev
        .iter()
        .filter(|e| e.name() == "tls_handshake_done" && e.error().is_some())
        .collect();
    assert_eq!(failed.len(), 8, "{failed:?}");
    tokio::time::timeout(WAIT, tracker.drained())
        .await
        .expect("nothing left tracked");
    let stats = tracker.stats();
    assert_eq!(
        stats
            .get("tls-in", Role::Server)
            .unwrap()
            .tls_handshake_failed,
        5
    );
    assert_eq!(
        stats
            .get("tls-out", Role::Client)
            .unwrap()
            .tls_handshake_failed,
        3
    );
    // A failed connection's close carries the handshake error.
    let closes_with_error = ev
        .iter()
        .filter(|e| e.name() == "close" && e.error().is_some())
        .count();
    assert!(closes_with_error >= 8, "{closes_with_error}");
}
