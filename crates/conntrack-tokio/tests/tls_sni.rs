//! The SNI shows the same on both entries of a TLS connection: the client entry reports the
//! name as sent on the wire (lowercase, no trailing dot, none for an IP address or with SNI
//! turned off), which is what the server entry reads.
#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conntrack_core::{
    ConnectionInfo, DialerConfig, ListenerConfig, Recorded, RecordingHook, Tracker,
};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

/// A server for a certificate valid for "localhost", 127.0.0.1 and ::1, and a client trusting
/// it, with SNI on or off.
fn configs(enable_sni: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, mut client) = conntrack_testkit::tls::self_signed(
        &["localhost", "127.0.0.1", "::1"],
        rustls::DEFAULT_VERSIONS,
    );
    client.enable_sni = enable_sni;
    (Arc::new(server), Arc::new(client))
}

/// One TLS connection to `ip` asking for `server_name`; the (server, client) entries' infos,
/// taken while both are live, and the SNI of the client's `on_tls_handshake_start`.
async fn connect(
    ip: &str,
    server_name: &str,
    enable_sni: bool,
) -> (ConnectionInfo, ConnectionInfo, Option<String>) {
    let (server, client) = configs(enable_sni);
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let inner = tokio::net::TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .await
        .unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
    let acceptor = TlsAcceptor::from(server);
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let info = tls.get_ref().0.info();
        tls.write_all(b"hello").await.unwrap();
        tls.shutdown().await.unwrap();
        info
    });
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new().category("out").hook(rec.clone()),
    );
    let tcp = dialer.connect(&addr.to_string()).await.unwrap();
    let mut tls = TlsConnector::from(client)
        .connect(server_name, tcp)
        .await
        .expect("client handshake");
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"hello");
    let client_info = tls.get_ref().0.info();
    let server_info = tokio::time::timeout(WAIT, srv).await.unwrap().unwrap();
    let started = rec
        .events()
        .into_iter()
        .find_map(|e| match e {
            Recorded::TlsHandshakeStart { server_name, .. } => Some(server_name),
            _ => None,
        })
        .expect("handshake start");
    (server_info, client_info, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_is_the_same_on_both_entries() {
    for (ip, asked, enable_sni, expected) in [
        ("127.0.0.1", "localhost", true, Some("localhost")),
        ("127.0.0.1", "localhost.", true, Some("localhost")),
        ("127.0.0.1", "LocalHost", true, Some("localhost")),
        ("127.0.0.1", "LOCALHOST.", true, Some("localhost")),
        ("127.0.0.1", "127.0.0.1", true, None),
        ("::1", "::1", true, None),
        ("127.0.0.1", "localhost", false, None),
    ] {
        let (server, client, started) = connect(ip, asked, enable_sni).await;
        let case = format!("{asked:?} (SNI {})", if enable_sni { "on" } else { "off" });
        let server_sni = server.tls.expect("server TLS").server_name.clone();
        let client_sni = client.tls.expect("client TLS").server_name.clone();
        assert_eq!(server_sni.as_deref(), expected, "server entry, {case}");
        assert_eq!(client_sni.as_deref(), expected, "client entry, {case}");
        assert_eq!(started.as_deref(), expected, "handshake start, {case}");
    }
}
