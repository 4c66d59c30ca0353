//! Failed TLS handshakes over futures-rustls, on smol and on async-std, as
//! `crates/conntrack-tokio/tests/tls.rs` checks them on tokio: garbage, a hang-up
//! mid-ClientHello, an untrusted CA, a wrong name and no common ALPN protocol, each reported
//! with its error on both sides, counted, carried by `on_close`, leaving nothing tracked, while
//! the accept loop keeps serving.
//!
//! Certificates: a test CA and a "localhost" leaf it signs, made with rcgen; the server
//! presents the chain (leaf, CA) and clients trust the CA. "Untrusted" is a client trusting
//! another CA, "wrong name" a client asking for another name: real verification failures.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use conntrack_async_std::tls::{TlsAcceptor, TlsConnector};
use conntrack_async_std::Listener;
use conntrack_core::{DialerConfig, ListenerConfig, Recorded, RecordingHook, Role, Tracker};
use conntrack_testkit::tls::{client_config, nth_server_failure, pki, server_config};
use futures_lite::future::FutureExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use rustls::ServerConfig;

const WAIT: Duration = Duration::from_secs(10);

/// A connector trusting `trusted` and offering `alpn`.
fn connector(trusted: &rustls::pki_types::CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    TlsConnector::from(client_config(trusted, alpn))
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
                let addr = serve(
                    &tracker,
                    server_config(rustls::DEFAULT_VERSIONS, &[b"h2"]),
                    &rec,
                );
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
                let err = nth_server_failure(&rec, 1, WAIT);
                assert_eq!(err.kind, io::ErrorKind::InvalidData, "{err:?}");
                drop(raw);

                // 2. A client that hangs up in the middle of its ClientHello.
                let mut raw = block_on(TcpStream::connect(addr)).unwrap();
                block_on(raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])).unwrap();
                drop(raw);
                let err = nth_server_failure(&rec, 2, WAIT);
                assert_eq!(err.kind, io::ErrorKind::UnexpectedEof, "{err:?}");

                // 3. A client that does not trust the server's CA.
                let e =
                    dial(&connector(&p.other_ca, &[b"h2"]), "localhost").expect_err("untrusted");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                assert!(e.to_string().contains("UnknownIssuer"), "{e}");
                let err = nth_server_failure(&rec, 3, WAIT);
                assert!(err.message.contains("alert"), "the client's alert: {err:?}");

                // 4. A client that asks for another name.
                let good = connector(&p.ca, &[b"h2"]);
                let e = dial(&good, "wrong.example").expect_err("wrong name");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                assert!(e.to_string().contains("not valid for name"), "{e}");
                let err = nth_server_failure(&rec, 4, WAIT);
                assert!(err.message.contains("alert"), "the client's alert: {err:?}");

                // 5. No ALPN protocol in common.
                let e = dial(&connector(&p.ca, &[b"spdy/1"]), "localhost").expect_err("no ALPN");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                let err = nth_server_failure(&rec, 5, WAIT);
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
                // The close hooks have run; the totals count a close just after them.
                assert!(
                    conntrack_testkit::drained_within(&tracker, WAIT),
                    "left: {:?}",
                    tracker.connections()
                );
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
                let tracker = Tracker::new();
                let rec = RecordingHook::new();
                let inner = block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
                let addr = inner.local_addr().unwrap();
                let listener = Listener::new(
                    &tracker,
                    inner,
                    ListenerConfig::new().category("tls-in").hook(rec.clone()),
                );
                let acceptor = TlsAcceptor::from(server_config(rustls::DEFAULT_VERSIONS, &[]));
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
                let err = nth_server_failure(&rec, 1, WAIT);
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
