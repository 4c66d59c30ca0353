//! The SNI shows the same on both entries of a TLS connection over futures-rustls (on smol and
//! on async-std),
//! and in the client's `on_tls_handshake_start`: the name as sent (lowercase, no trailing dot,
//! none for an IP address or with SNI turned off), which is what the server entry reads.

use std::net::SocketAddr;
use std::sync::Arc;

use conntrack_async_std::tls::{TlsAcceptor, TlsConnector};
use conntrack_async_std::Listener;
use conntrack_core::{
    ConnectionInfo, DialerConfig, ListenerConfig, Recorded, RecordingHook, Tracker,
};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use rustls::{ClientConfig, ServerConfig};

fn configs(enable_sni: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, mut client) = conntrack_testkit::tls::self_signed(
        &["localhost", "127.0.0.1", "::1"],
        rustls::DEFAULT_VERSIONS,
    );
    client.enable_sni = enable_sni;
    (Arc::new(server), Arc::new(client))
}

/// The test, on one runtime: its `block_on`, TCP listener and tracked dialer.
macro_rules! sni_tests {
    ($m:ident, $block_on:path, $listener:ty, $dialer:ty) => {
        mod $m {
            use super::*;
            use $block_on as block_on;
            type TcpListener = $listener;
            type Dialer = $dialer;

            /// One connection to `ip` asking for `server_name`: the (server, client) entries, both live,
            /// and the SNI of the client's `on_tls_handshake_start`.
            fn connect(
                ip: &str,
                server_name: &str,
                enable_sni: bool,
            ) -> (ConnectionInfo, ConnectionInfo, Option<String>) {
                let (server, client) = configs(enable_sni);
                let tracker = Tracker::new();
                let rec = RecordingHook::new();
                let inner =
                    block_on(TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), 0))).unwrap();
                let addr = inner.local_addr().unwrap();
                let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
                let srv = std::thread::spawn(move || {
                    block_on(async move {
                        let (tcp, _) = listener.accept().await.unwrap();
                        let mut tls = TlsAcceptor::from(server)
                            .accept(tcp)
                            .await
                            .expect("server handshake");
                        let info = tls.get_ref().0.info();
                        tls.write_all(b"hello").await.unwrap();
                        tls.close().await.unwrap();
                        info
                    })
                });
                let dialer = Dialer::new(
                    &tracker,
                    DialerConfig::new().category("out").hook(rec.clone()),
                );
                let (tls, buf) = block_on(async {
                    let tcp = dialer.connect(&addr.to_string()).await.unwrap();
                    let mut tls = TlsConnector::from(client)
                        .connect(server_name, tcp)
                        .await
                        .expect("client handshake");
                    let mut buf = Vec::new();
                    tls.read_to_end(&mut buf).await.unwrap();
                    (tls, buf)
                });
                assert_eq!(buf, b"hello");
                let started = rec
                    .events()
                    .into_iter()
                    .find_map(|e| match e {
                        Recorded::TlsHandshakeStart { server_name, .. } => Some(server_name),
                        _ => None,
                    })
                    .expect("handshake start");
                let client_info = tls.get_ref().0.info();
                (srv.join().unwrap(), client_info, started)
            }

            #[test]
            fn sni_is_the_same_on_both_entries() {
                for (ip, asked, enable_sni, expected) in [
                    ("127.0.0.1", "localhost", true, Some("localhost")),
                    ("127.0.0.1", "localhost.", true, Some("localhost")),
                    ("127.0.0.1", "LocalHost", true, Some("localhost")),
                    ("127.0.0.1", "LOCALHOST.", true, Some("localhost")),
                    ("127.0.0.1", "127.0.0.1", true, None),
                    ("::1", "::1", true, None),
                    ("127.0.0.1", "localhost", false, None),
                ] {
                    let (server, client, started) = connect(ip, asked, enable_sni);
                    let case = format!("{asked:?} (SNI {})", if enable_sni { "on" } else { "off" });
                    let server_sni = server.tls.expect("server TLS").server_name.clone();
                    let client_sni = client.tls.expect("client TLS").server_name.clone();
                    assert_eq!(server_sni.as_deref(), expected, "server entry, {case}");
                    assert_eq!(client_sni.as_deref(), expected, "client entry, {case}");
                    assert_eq!(started.as_deref(), expected, "handshake start, {case}");
                }
            }
        }
    };
}

sni_tests!(
    on_smol,
    smol::block_on,
    smol::net::TcpListener,
    conntrack_async_std::smol::Dialer
);
sni_tests!(
    on_async_std,
    async_std::task::block_on,
    async_std::net::TcpListener,
    conntrack_async_std::async_std::Dialer
);
