//! Blocking std with TLS: a tracked listener and dialer on loopback, rustls configs made from a
//! private CA, the handshake traced on both ends, a clean close, and the table with the TLS
//! details.
//!
//! ```text
//! cargo run -p conntrack-examples --example std_tls
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use conntrack_core::{render, DialerConfig, ListenerConfig, Tracker};
use conntrack_std::tls::{TlsAcceptor, TlsConnector};
use conntrack_std::{Dialer, Listener};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A CA, a `localhost` certificate signed by it, and the server and client configs.
fn configs() -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), Box<dyn std::error::Error>> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "example CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &ca)?;

    // One crypto provider, named explicitly (see docs/tls.md).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server_config, client_config) = configs()?;
    let tracker = Tracker::new();

    let listener = Listener::new(
        &tracker,
        TcpListener::bind("127.0.0.1:0")?,
        ListenerConfig::new().category("tls-in"),
    );
    let port = listener.local_addr()?.port();
    let acceptor = TlsAcceptor::from(server_config);
    let server = thread::spawn(move || -> io::Result<()> {
        let (tcp, _peer) = listener.accept()?;
        // The handshake is timed and reported; the entry gets the TLS details.
        let mut tls = acceptor.accept(tcp)?;
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line)?;
        tls.write_all(format!("hello, {}", line.trim()).as_bytes())?;
        // A clean close: close_notify, flushed; then wait for the client's before the socket
        // goes (read to the end: the peer's close_notify is a clean end of stream).
        tls.get_mut().1.send_close_notify();
        tls.flush()?;
        tls.read_to_end(&mut Vec::new())?;
        Ok(())
    });

    let dialer = Dialer::new(&tracker, DialerConfig::new().category("tls-out"));
    // std's call order: dial the TCP connection, then `connect(server_name, stream)`.
    let tcp = dialer.connect(format!("localhost:{port}"))?;
    let connector = TlsConnector::from(client_config);
    let mut tls = connector.connect("localhost", tcp)?;
    tls.write_all(b"std\n")?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply)?; // ends at the server's close_notify
    println!("{reply}");
    // Both ends are still open: the server waits for this side's close_notify.
    print!("{}", render::text_table(&tracker.connections()));

    tls.get_mut().1.send_close_notify();
    tls.flush()?;
    server.join().expect("server thread")?;
    Ok(())
}
