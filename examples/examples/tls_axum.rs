//! axum over TLS (tokio-rustls) on a tracked listener, a client making HTTPS requests over a
//! tracked TLS dial, and the connection table with its TLS column.
//!
//! ```text
//! cargo run -p conntrack-examples --example tls_axum
//! ```

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::{routing::get, Router};
use conntrack_core::{render, DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::tls::{ServerTlsStream, TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tracked listener plus the TLS handshake, as an axum listener. (Handshakes run one at a
/// time in the accept loop: fine for an example; a server would hand them to tasks.)
struct TlsListener {
    tcp: Listener<TcpListener>,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = ServerTlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            // A failed handshake is reported to the hooks and counted; keep serving.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.get_ref().local_addr()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A self-signed certificate for "localhost", made at startup.
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der())),
        )?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];

    let tracker = Tracker::new();
    let inner = TcpListener::bind("127.0.0.1:0").await?;
    let addr = inner.local_addr()?;
    let listener = TlsListener {
        tcp: Listener::new(&tracker, inner, ListenerConfig::new().category("https-in")),
        acceptor: TlsAcceptor::from(Arc::new(server)),
    };
    let app = Router::new().route("/", get(|| async { "hello over TLS\n" }));
    tokio::spawn(axum::serve(listener, app).into_future());

    let dialer = Dialer::new(&tracker, DialerConfig::new().category("https-out"));
    let connector = TlsConnector::from(Arc::new(client));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tls = dialer
            .connect_tls(&format!("localhost:{}", addr.port()), &connector, None)
            .await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = vec![0u8; 4096];
        let n = tls.read(&mut buf).await?;
        let response = String::from_utf8_lossy(&buf[..n]);
        println!("{}", response.lines().next().unwrap_or_default());
        open.push(tls); // keep-alive: the connections stay open for the table
    }

    println!();
    print!("{}", render::text_table(&tracker.connections()));
    for info in tracker.connections().iter().filter(|c| c.tls.is_some()) {
        let tls = info.tls.as_ref().unwrap();
        println!(
            "{:>3} {:<9} TLS {} {} alpn={} sni={} handshake={:?}",
            info.id,
            info.category,
            tls.protocol_version,
            tls.cipher_suite,
            tls.alpn_str().unwrap_or_default(),
            tls.server_name.as_deref().unwrap_or("-"),
            info.timings.tls_handshake.unwrap_or_default()
        );
    }
    Ok(())
}
