//! Failed TLS handshakes over futures-rustls, on smol and on async-std, as
//! `crates/conntrack-tokio/tests/tls.rs` checks them on tokio: garbage, a hang-up
//! mid-ClientHello, an untrusted CA, a wrong name and no common ALPN protocol, each reported
//! with its error on both sides, counted, carried by `on_close`, leaving nothing tracked, while
//! the accept loop keeps serving.
//!
//! Certificates: a test CA and a "localhost" leaf it signs, made with rcgen; the server
//! presents the chain (leaf, CA) and clients trust the CA. "Untrusted" is a client trusting
//! another CA, "wrong name" a client asking for another name: real verification failures.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use conntrack_async_std::tls::{TlsAcceptor, TlsConnector};
use conntrack_async_std::Listener;
use conntrack_core::{
    ConnectionId, DialerConfig, ListenerConfig, Recorded, RecordedError, RecordingHook, Role,
    Tracker,
};
use futures_lite::future::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

const WAIT: Duration = Duration::from_secs(10);

struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
    /// A CA that signed nothing the server presents.
    other_ca: CertificateDer<'static>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let issuer = ca("conntrack test CA");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca: issuer.der().clone(),
        leaf: leaf.der().clone(),
        key: key.serialize_der(),
        other_ca: ca("another CA").der().clone(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(p: &Pki, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![p.leaf.clone(), p.ca.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key.clone())),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn client_config(trusted: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Ids of the server side's connections (from `on_accept`).
fn server_ids(ev: &[Recorded]) -> HashSet<ConnectionId> {
    ev.iter()
        .filter_map(|e| match e {
            Recorded::Accept {
                connection: Some(c),
                ..
            } => Some(c.id),
            _ => None,
        })
        .collect()
}

/// The server side's failed handshakes, in order.
fn server_failures(ev: &[Recorded]) -> Vec<RecordedError> {
    let ids = server_ids(ev);
    ev.iter()
        .filter_map(|e| match e {
            Recorded::TlsHandshakeDone {
                id,
                error: Some(err),
                ..
            } if ids.contains(id) => Some(err.clone()),
            _ => None,
        })
        .collect()
}

/// Waits for the `n`th failed server handshake and returns its error.
fn nth_server_failure(rec: &RecordingHook, n: usize) -> RecordedError {
    let ev = rec
        .wait_for(|ev| server_failures(ev).len() >= n, WAIT)
        .unwrap_or_else(|ev| panic!("server failures: {:?}", server_failures(&ev)));
    server_failures(&ev)[n - 1].clone()
}

/// The test, on one runtime: its `block_on`, TCP types and tracked dialer.
macro_rules! failure_tests {
    ($m:ident, $block_on:path, $listener:ty, $stream:ty, $dialer:ty) => {
        mod $m {
            use super::*;
            use $block_on as block_on;
            type TcpListener = $listener;
            type TcpStream = $stream;
            type Dialer = $dialer;

            /// A tracked TLS server: an accept loop on its own thread that handshakes each connection
            /// on a thread of its own, writes "hello" and closes. Failed handshakes do not stop the loop
            /// (which ends with the test process). Returns the address.
            fn serve(
                tracker: &Tracker,
                config: Arc<ServerConfig>,
                rec: &RecordingHook,
            ) -> std::net::SocketAddr {
                let inner = block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
                let addr = inner.local_addr().unwrap();
                let listener = Listener::new(
                    tracker,
                    inner,
                    ListenerConfig::new().category("tls-in").hook(rec.clone()),
                );
                let acceptor = TlsAcceptor::from(config);
                std::thread::spawn(move || {
                    // Bounded in count; the test process ends it.
                    for _ in 0..1000 {
                        let Ok((tcp, _)) = block_on(listener.accept()) else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        std::thread::spawn(move || {
                            block_on(async move {
                                if let Ok(mut tls) = acceptor.accept(tcp).await {
                                    let _ = tls.write_all(b"hello").await;
                                    let _ = tls.close().await;
                                }
                            });
                        });
                    }
                });
                addr
            }

            #[test]
            fn failed_handshakes_are_reported_counted_and_leave_nothing() {
                let p = pki();
                let tracker = Tracker::new();
                let rec = RecordingHook::new();
                let addr = serve(&tracker, server_config(&p, &[b"h2"]), &rec);
                let dialer = Dialer::new(
                    &tracker,
                    DialerConfig::new().category("tls-out").hook(rec.clone()),
                );
                let target = format!("localhost:{}", addr.port());
                let dial = |connector: &TlsConnector, name: &str| {
                    block_on(async {
                        let tcp = dialer.connect(&target).await.expect("tcp");
                        connector.connect(name, tcp).await
                    })
                };

                // 1. Plain bytes instead of a ClientHello.
                let mut raw = block_on(TcpStream::connect(addr)).unwrap();
                block_on(raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")).unwrap();
                let err = nth_server_failure(&rec, 1);
                assert_eq!(err.kind, io::ErrorKind::InvalidData, "{err:?}");
                drop(raw);

                // 2. A client that hangs up in the middle of its ClientHello.
                let mut raw = block_on(TcpStream::connect(addr)).unwrap();
                block_on(raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])).unwrap();
                drop(raw);
                let err = nth_server_failure(&rec, 2);
                assert_eq!(err.kind, io::ErrorKind::UnexpectedEof, "{err:?}");

                // 3. A client that does not trust the server's CA.
                let e = dial(&client_config(&p.other_ca, &[b"h2"]), "localhost")
                    .expect_err("untrusted");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                assert!(e.to_string().contains("UnknownIssuer"), "{e}");
                let err = nth_server_failure(&rec, 3);
                assert!(err.message.contains("alert"), "the client's alert: {err:?}");

                // 4. A client that asks for another name.
                let good = client_config(&p.ca, &[b"h2"]);
                let e = dial(&good, "wrong.example").expect_err("wrong name");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                assert!(e.to_string().contains("not valid for name"), "{e}");
                let err = nth_server_failure(&rec, 4);
                assert!(err.message.contains("alert"), "the client's alert: {err:?}");

                // 5. No ALPN protocol in common.
                let e =
                    dial(&client_config(&p.ca, &[b"spdy/1"]), "localhost").expect_err("no ALPN");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                let err = nth_server_failure(&rec, 5);
                assert_eq!(err.kind, io::ErrorKind::InvalidData, "{err:?}");

                // The server keeps serving.
                let mut ok = dial(&good, "localhost").expect("a good client still works");
                let mut hello = Vec::new();
                block_on(ok.read_to_end(&mut hello)).unwrap();
                assert_eq!(hello, b"hello");
                drop(ok);

                rec.wait_for(
                    |ev| ev.iter().filter(|e| e.name() == "close").count() >= 10,
                    WAIT,
                )
                .unwrap_or_else(|ev| {
                    panic!(
                        "closes: {:?}",
                        ev.iter().map(Recorded::name).collect::<Vec<_>>()
                    )
                });
                // The close hooks have run; the totals count a close just after: wait for both, bounded.
                let deadline = std::time::Instant::now() + WAIT;
                while !(tracker.is_empty() && tracker.stats().total().closed == 10) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "left: {:?}, {:?}",
                        tracker.connections(),
                        tracker.stats().total()
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
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

            /// A server that gives up on a slow handshake (a timer drops the accept future)
            /// reports it as cancelled, counts it, and the connection leaves the tracker.
            #[test]
            fn a_cancelled_handshake_is_reported_and_counted() {
                let p = pki();
                let tracker = Tracker::new();
                let rec = RecordingHook::new();
                let inner = block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
                let addr = inner.local_addr().unwrap();
                let listener = Listener::new(
                    &tracker,
                    inner,
                    ListenerConfig::new().category("tls-in").hook(rec.clone()),
                );
                let acceptor = TlsAcceptor::from(server_config(&p, &[]));
                let server = std::thread::spawn(move || {
                    block_on(async move {
                        let (tcp, _) = listener.accept().await.unwrap();
                        let done = async { Some(acceptor.accept(tcp).await) }
                            .or(async {
                                smol::Timer::after(Duration::from_millis(100)).await;
                                None
                            })
                            .await;
                        assert!(done.is_none(), "a silent client's handshake cannot finish");
                    });
                });
                // Connects and says nothing.
                let mut silent = block_on(TcpStream::connect(addr)).unwrap();
                let err = nth_server_failure(&rec, 1);
                assert_eq!(err.kind, io::ErrorKind::Other);
                assert!(err.message.contains("cancelled"), "{err:?}");
                server.join().unwrap();
                // The server dropped the connection: end of stream (or a reset), bounded.
                let mut buf = Vec::new();
                let n = block_on(
                    async { silent.read_to_end(&mut buf).await.unwrap_or(0) }.or(async {
                        smol::Timer::after(WAIT).await;
                        panic!("the server did not hang up")
                    }),
                );
                assert_eq!(n, 0);
                rec.wait_for(|ev| ev.iter().any(|e| e.name() == "close"), WAIT)
                    .expect("the server side closes");
                assert!(tracker.is_empty(), "left: {:?}", tracker.connections());
                assert_eq!(tracker.stats().total().tls_handshake_failed, 1);
                assert_eq!(rec.count("tls_handshake_start"), 1);
                assert_eq!(rec.count("tls_handshake_done"), 1);
            }
        }
    };
}

failure_tests!(
    on_smol,
    smol::block_on,
    smol::net::TcpListener,
    smol::net::TcpStream,
    conntrack_async_std::smol::Dialer
);
failure_tests!(
    on_async_std,
    async_std::task::block_on,
    async_std::net::TcpListener,
    async_std::net::TcpStream,
    conntrack_async_std::async_std::Dialer
);
