//! TLS handshake tracing over rustls' blocking streams on real loopback sockets: TLS 1.3 with
//! ALPN and SNI shows the same info on both entries, a 1.2-only server shows "1.2", a second
//! connection resumes the session, and a failed handshake is reported and counted.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use conntrack_core::{DialerConfig, ListenerConfig, Role, TlsInfo, Tracker};
use conntrack_std::tls::{TlsAcceptor, TlsConnector};
use conntrack_std::{Dialer, Listener};
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

/// One TLS connection: the server writes "hello" and closes; returns (server info, client info).
fn exchange(
    tracker: &Tracker,
    server: &Arc<ServerConfig>,
    client: &TlsConnector,
) -> (std::sync::Arc<TlsInfo>, std::sync::Arc<TlsInfo>) {
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = inner.local_addr().unwrap().port();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("in"));
    let acceptor = TlsAcceptor::from(Arc::clone(server));
    let srv = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut tls = acceptor.accept(tcp).expect("server handshake");
        let info = tls
            .get_ref()
            .0
            .info()
            .tls
            .expect("server entry has TLS info");
        tls.write_all(b"hello").unwrap();
        tls.get_mut().1.send_close_notify();
        tls.flush().unwrap();
        info
    });
    let dialer = Dialer::new(tracker, DialerConfig::new().category("out"));
    let tcp = dialer.connect(format!("localhost:{port}")).unwrap();
    let mut tls = client.connect("localhost", tcp).expect("client handshake");
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).unwrap(); // also receives TLS 1.3 session tickets
    assert_eq!(buf, b"hello");
    let info = tls.get_ref().0.info();
    assert!(info.timings.tls_handshake.is_some());
    (
        srv.join().unwrap(),
        info.tls.expect("client entry has TLS info"),
    )
}

#[test]
fn tls13_alpn_sni_same_on_both_sides_then_resumed() {
    let tracker = Tracker::new();
    let (server, client) = configs(&[&rustls::version::TLS13], b"h2");
    let connector = TlsConnector::from(client);
    let (s, c) = exchange(&tracker, &server, &connector);
    assert_eq!(c.protocol_version, "1.3");
    assert!(c.cipher_suite.starts_with("TLS_") && !c.cipher_suite.starts_with("TLS13_"));
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
    conntrack_testkit::tls::assert_self_signed_chain(&c, &s);
    let (s2, c2) = exchange(&tracker, &server, &connector);
    assert!(
        s2.resumed && c2.resumed,
        "the second handshake resumed the session"
    );
    // A resumed session still knows the chain it was first given.
    conntrack_testkit::tls::assert_self_signed_chain(&c2, &s2);
    assert!(tracker.is_empty());
}

#[test]
fn tls12_only_server_shows_1_2() {
    let tracker = Tracker::new();
    let (server, client) = configs(&[&rustls::version::TLS12], b"http/1.1");
    let (s, c) = exchange(&tracker, &server, &TlsConnector::from(client));
    assert_eq!(
        (s.protocol_version.as_str(), c.protocol_version.as_str()),
        ("1.2", "1.2")
    );
    assert!(
        c.cipher_suite.starts_with("TLS_ECDHE_"),
        "{}",
        c.cipher_suite
    );
}

#[test]
fn garbage_fails_the_handshake_and_is_counted() {
    let tracker = Tracker::new();
    let (server, _) = configs(rustls::DEFAULT_VERSIONS, b"h2");
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("in"));
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let (tcp, _) = listener.accept().unwrap();
    let err = TlsAcceptor::from(server).accept(tcp).expect_err("not TLS");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(tracker.is_empty(), "the failed stream is gone");
    assert_eq!(
        tracker
            .stats()
            .get("in", Role::Server)
            .unwrap()
            .tls_handshake_failed,
        1
    );
    assert!(
        tracker.recently_closed()[0].error.is_some(),
        "the close carries the handshake error"
    );
}

/// The server's read error after the client's `misbehave`, and the server connection's
/// `on_close` error: the TLS layer's own error, recorded by the TLS stream although the
/// socket below saw none.
fn server_error_after_handshake(
    misbehave: impl FnOnce(conntrack_std::tls::ClientTlsStream<std::net::TcpStream>),
) -> (std::io::Error, conntrack_core::RecordedError) {
    use conntrack_core::RecordingHook;
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let (server, client) = configs(&[&rustls::version::TLS13], b"h2");
    // No session tickets after the handshake: a client dropping its stream with them unread
    // would make its kernel send a reset instead of a FIN.
    let mut server = (*server).clone();
    server.send_tls13_tickets = 0;
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = inner.local_addr().unwrap().port();
    let listener = Listener::new(
        &tracker,
        inner,
        ListenerConfig::new().category("in").hook(rec.clone()),
    );
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let srv = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut tls = acceptor.accept(tcp).expect("server handshake");
        let id = tls.id();
        let mut buf = Vec::new();
        (id, tls.read_to_end(&mut buf).unwrap_err())
    });
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("out"));
    let tcp = dialer.connect(format!("127.0.0.1:{port}")).unwrap();
    misbehave(
        TlsConnector::from(client)
            .connect("localhost", tcp)
            .unwrap(),
    );
    let (id, err) = srv.join().unwrap();
    let events = rec
        .wait_for(
            |ev| ev.iter().any(|e| e.name() == "close" && e.id() == Some(id)),
            std::time::Duration::from_secs(10),
        )
        .expect("server close");
    let on_close = events
        .iter()
        .find(|e| e.name() == "close" && e.id() == Some(id))
        .and_then(|e| e.error().cloned())
        .expect("on_close carries the TLS layer's error");
    assert!(tracker.is_empty());
    (err, on_close)
}

#[test]
fn tls_layer_errors_after_the_handshake_reach_on_close() {
    // No close_notify: the client just drops its stream.
    let (err, on_close) = server_error_after_handshake(drop);
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(
        (on_close.kind, on_close.message),
        (err.kind(), err.to_string())
    );

    // A corrupt application-data record written under TLS.
    let (err, on_close) = server_error_after_handshake(|mut tls| {
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        record.extend([0x5a; 0x20]);
        tls.get_mut().0.write_all(&record).unwrap();
        // Until the server hangs up.
        let mut buf = Vec::new();
        let _ = tls.get_mut().0.read_to_end(&mut buf);
    });
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert_eq!(
        (on_close.kind, on_close.message),
        (err.kind(), err.to_string())
    );
}
