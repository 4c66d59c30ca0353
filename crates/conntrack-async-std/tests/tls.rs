//! TLS handshake tracing over futures-rustls on smol and on async-std, on real loopback sockets:
//! TLS 1.3 with ALPN and SNI shows the same info on both entries, a 1.2-only server shows
//! "1.2", a second connection resumes the session, and a failed handshake is reported and
//! counted. The same tests run on each runtime (`on_smol`, `on_async_std`).

use std::sync::Arc;

use conntrack_async_std::tls::{TlsAcceptor, TlsConnector};
use conntrack_async_std::Listener;
use conntrack_core::{DialerConfig, ListenerConfig, TlsInfo, Tracker};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

fn configs(
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[u8],
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (mut server, mut client) = conntrack_testkit::tls::self_signed(&["localhost"], versions);
    server.alpn_protocols = vec![alpn.to_vec()];
    client.alpn_protocols = vec![alpn.to_vec()];
    (Arc::new(server), Arc::new(client))
}

/// The tests, on one runtime: its `block_on`, TCP types and tracked dialer.
macro_rules! tls_tests {
    ($m:ident, $block_on:path, $listener:ty, $stream:ty, $dialer:ty) => {
        mod $m {
            use super::*;
            use $block_on as block_on;
            type TcpListener = $listener;
            type TcpStream = $stream;
            type Dialer = $dialer;

            /// One TLS connection: the server writes "hello" and closes; returns (server info, client info).
            async fn exchange(
                tracker: &Tracker,
                listener: &Listener<TcpListener>,
                addr: std::net::SocketAddr,
                acceptor: &TlsAcceptor,
                connector: &TlsConnector,
            ) -> (std::sync::Arc<TlsInfo>, std::sync::Arc<TlsInfo>) {
                let dialer = Dialer::new(tracker, DialerConfig::new().category("out"));
                let server = async {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let mut tls = acceptor.accept(tcp).await.expect("server handshake");
                    let info = tls
                        .get_ref()
                        .0
                        .info()
                        .tls
                        .expect("server entry has TLS info");
                    tls.write_all(b"hello").await.unwrap();
                    tls.close().await.unwrap();
                    info
                };
                let client = async {
                    let tcp = dialer
                        .connect(&format!("localhost:{}", addr.port()))
                        .await
                        .unwrap();
                    let mut tls = connector
                        .connect("localhost", tcp)
                        .await
                        .expect("client handshake");
                    let mut buf = Vec::new();
                    tls.read_to_end(&mut buf).await.unwrap(); // also receives TLS 1.3 session tickets
                    assert_eq!(buf, b"hello");
                    let info = tls.get_ref().0.info();
                    assert!(info.timings.tls_handshake.is_some());
                    info.tls.expect("client entry has TLS info")
                };
                futures_lite::future::zip(server, client).await
            }

            #[test]
            fn tls13_alpn_sni_same_on_both_sides_then_resumed() {
                block_on(async {
                    let tracker = Tracker::new();
                    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addr = inner.local_addr().unwrap();
                    let listener =
                        Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
                    let (server, client) = configs(&[&rustls::version::TLS13], b"h2");
                    let (acceptor, connector) =
                        (TlsAcceptor::from(server), TlsConnector::from(client));
                    let (s, c) = exchange(&tracker, &listener, addr, &acceptor, &connector).await;
                    assert_eq!(c.protocol_version, "1.3");
                    assert!(
                        c.cipher_suite.starts_with("TLS_") && !c.cipher_suite.starts_with("TLS13_")
                    );
                    assert_eq!(c.alpn.as_deref(), Some(&b"h2"[..]));
                    assert_eq!(c.server_name.as_deref(), Some("localhost"));
                    assert_eq!(
                        (
                            &s.protocol_version,
                            &s.cipher_suite,
                            &s.alpn,
                            &s.server_name
                        ),
                        (
                            &c.protocol_version,
                            &c.cipher_suite,
                            &c.alpn,
                            &c.server_name
                        )
                    );
                    assert!(!c.resumed && !s.resumed);
                    conntrack_testkit::tls::assert_self_signed_chain(&c, &s);
                    let (s2, c2) = exchange(&tracker, &listener, addr, &acceptor, &connector).await;
                    assert!(
                        s2.resumed && c2.resumed,
                        "the second handshake resumed the session"
                    );
                    // A resumed session still knows the chain it was first given.
                    conntrack_testkit::tls::assert_self_signed_chain(&c2, &s2);
                    tracker.drained().await;
                });
            }

            #[test]
            fn tls12_only_server_shows_1_2() {
                block_on(async {
                    let tracker = Tracker::new();
                    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addr = inner.local_addr().unwrap();
                    let listener = Listener::new(&tracker, inner, ListenerConfig::new());
                    let (server, client) = configs(&[&rustls::version::TLS12], b"http/1.1");
                    let (s, c) = exchange(
                        &tracker,
                        &listener,
                        addr,
                        &TlsAcceptor::from(server),
                        &TlsConnector::from(client),
                    )
                    .await;
                    assert_eq!(
                        (s.protocol_version.as_str(), c.protocol_version.as_str()),
                        ("1.2", "1.2")
                    );
                    assert!(
                        c.cipher_suite.starts_with("TLS_ECDHE_"),
                        "{}",
                        c.cipher_suite
                    );
                    tracker.drained().await;
                });
            }

            #[test]
            fn garbage_fails_the_handshake_and_is_counted() {
                block_on(async {
                    let tracker = Tracker::new();
                    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addr = inner.local_addr().unwrap();
                    let listener =
                        Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
                    let (server, _) = configs(rustls::DEFAULT_VERSIONS, b"h2");
                    let mut raw = TcpStream::connect(addr).await.unwrap();
                    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
                    let (tcp, _) = listener.accept().await.unwrap();
                    let err = TlsAcceptor::from(server)
                        .accept(tcp)
                        .await
                        .expect_err("not TLS");
                    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
                    assert!(tracker.is_empty(), "the failed stream is gone");
                    assert_eq!(
                        tracker
                            .stats()
                            .get("in", conntrack_core::Role::Server)
                            .unwrap()
                            .tls_handshake_failed,
                        1
                    );
                    assert_eq!(
                        tracker.recently_closed()[0]
                            .error
                            .as_deref()
                            .map(|e| e.contains("corrupt message")),
                        Some(true),
                        "the close carries the handshake error"
                    );
                });
            }

            /// The server's read error after the client's `misbehave`, and the error the server
            /// connection closed with: the TLS layer's own error, recorded by the TLS stream although the
            /// socket below saw none.
            fn server_error_after_handshake<F: std::future::Future<Output = ()>>(
                misbehave: impl FnOnce(conntrack_async_std::tls::ClientTlsStream<TcpStream>) -> F,
            ) -> (std::io::Error, String) {
                block_on(async {
                    let tracker = Tracker::new();
                    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addr = inner.local_addr().unwrap();
                    let listener =
                        Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
                    let (server, client) = configs(rustls::DEFAULT_VERSIONS, b"h2");
                    // No session tickets after the handshake: a client dropping its stream with them
                    // unread would make its kernel send a reset instead of a FIN.
                    let mut server = (*server).clone();
                    server.send_tls13_tickets = 0;
                    let acceptor = TlsAcceptor::from(Arc::new(server));
                    let server_side = async {
                        let (tcp, _) = listener.accept().await.unwrap();
                        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
                        let mut buf = Vec::new();
                        tls.read_to_end(&mut buf).await.unwrap_err()
                        // `tls` drops here: the server connection closes.
                    };
                    let client_side = async {
                        let dialer = Dialer::new(&tracker, DialerConfig::new().category("out"));
                        let tcp = dialer.connect(&addr.to_string()).await.unwrap();
                        let tls = TlsConnector::from(client)
                            .connect("localhost", tcp)
                            .await
                            .unwrap();
                        misbehave(tls).await;
                    };
                    let (err, ()) = futures_lite::future::zip(server_side, client_side).await;
                    assert!(tracker.is_empty());
                    let closed = tracker
                        .recently_closed()
                        .into_iter()
                        .find(|c| c.info.role == conntrack_core::Role::Server)
                        .expect("the server connection closed");
                    (
                        err,
                        closed.error.expect("closed with the TLS layer's error"),
                    )
                })
            }

            #[test]
            fn tls_layer_errors_after_the_handshake_reach_on_close() {
                // No close_notify: the client just drops its stream.
                let (err, closed) = server_error_after_handshake(|tls| async move { drop(tls) });
                assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
                assert_eq!(closed, err.to_string());

                // A corrupt application-data record written under TLS.
                let (err, closed) = server_error_after_handshake(|mut tls| async move {
                    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
                    record.extend([0x5a; 0x20]);
                    tls.get_mut().0.write_all(&record).await.unwrap();
                    // Until the server hangs up.
                    let mut buf = Vec::new();
                    let _ = tls.get_mut().0.read_to_end(&mut buf).await;
                });
                assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
                assert_eq!(closed, err.to_string());
            }
        }
    };
}

tls_tests!(
    on_smol,
    smol::block_on,
    smol::net::TcpListener,
    smol::net::TcpStream,
    conntrack_async_std::smol::Dialer
);
tls_tests!(
    on_async_std,
    async_std::task::block_on,
    async_std::net::TcpListener,
    async_std::net::TcpStream,
    conntrack_async_std::async_std::Dialer
);
