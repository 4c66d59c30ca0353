//! The SNI shows the same on both entries of a TLS connection over rustls' blocking streams,
//! and in the client's `on_tls_handshake_start`: the name as sent (lowercase, no trailing dot,
//! none for an IP address or with SNI turned off), which is what the server entry reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;

use conntrack_core::{
    ConnectionInfo, DialerConfig, ListenerConfig, Recorded, RecordingHook, Tracker,
};
use conntrack_std::tls::{TlsAcceptor, TlsConnector};
use conntrack_std::{Dialer, Listener};
use rustls::{ClientConfig, ServerConfig};

fn configs(enable_sni: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, mut client) = conntrack_testkit::tls::self_signed(
        &["localhost", "127.0.0.1", "::1"],
        rustls::DEFAULT_VERSIONS,
    );
    client.enable_sni = enable_sni;
    (Arc::new(server), Arc::new(client))
}

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
    let inner = TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
    let srv = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .expect("server handshake");
        let info = tls.info();
        tls.write_all(b"hello").unwrap();
        tls.get_mut().1.send_close_notify();
        tls.flush().unwrap();
        info
    });
    let dialer = Dialer::new(
        &tracker,
        DialerConfig::new().category("out").hook(rec.clone()),
    );
    let tcp = dialer.connect(addr.to_string()).unwrap();
    let mut tls = TlsConnector::from(client)
        .connect(server_name, tcp)
        .expect("client handshake");
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"hello");
    let started = rec
        .events()
        .into_iter()
        .find_map(|e| match e {
            Recorded::TlsHandshakeStart { server_name, .. } => Some(server_name),
            _ => None,
        })
        .expect("handshake start");
    (srv.join().unwrap(), tls.info(), started)
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
