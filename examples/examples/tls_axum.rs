//! axum over TLS (tokio-rustls) on a tracked listener, HTTPS clients over tracked TLS dials,
//! and the connection table with the TLS details of every connection.
//!
//! ```text
//! cargo run -p conntrack-examples --example tls_axum
//! ```
//!
//! The server is the accept loop a TLS server needs anyway (axum's `serve` knows nothing of
//! TLS): accept on the tracked `Listener`, then per connection a task that runs the reported
//! handshake (with a time limit) and serves the axum `Router` with hyper. A plain-HTTP client
//! knocking on the TLS port shows what a failed handshake looks like.

use std::sync::Arc;
use std::time::Duration;

use axum::{routing::get, Router};
use conntrack_core::{render, ConnectionInfo, DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a client gets to finish its handshake; a stalled one is reported as cancelled.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
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

    // The server: tracked accept, reported handshake, hyper serving the axum router.
    let inner = TcpListener::bind("127.0.0.1:0").await?;
    let addr = inner.local_addr()?;
    let config = ListenerConfig::new()
        .category("https-in")
        .on_tls_handshake_done(|ev| {
            if let Some(err) = ev.error {
                println!(
                    "server: handshake with {} failed after {:?}: {err}",
                    ev.connection.remote_addr, ev.duration
                );
            }
        });
    let listener = Listener::new(&tracker, inner, config);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let app = Router::new().route("/", get(|| async { "hello over TLS" }));
    tokio::spawn(async move {
        loop {
            // An accept error is reported to the hooks and counted; keep accepting.
            let Ok((tcp, _peer)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return; // reported (error or cancelled) and counted; the entry goes with `tcp`
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });

    // A plain-HTTP client on the TLS port: the server reports and counts the failed handshake.
    let mut plain = tokio::net::TcpStream::connect(addr).await?;
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink).await; // the server hangs up
    drop(plain);

    // HTTPS clients: three tracked TLS dials, two requests on each kept-alive connection. The
    // second and third handshakes resume the session from the tickets the first one received.
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("https-out"));
    let connector = TlsConnector::from(Arc::new(client));
    let target = format!("localhost:{}", addr.port());
    let mut open = Vec::new();
    for _ in 0..3 {
        let tls = dialer.connect_tls(&target, &connector, None).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        for _ in 0..2 {
            let request = http::Request::get("/")
                .header(http::header::HOST, "localhost")
                .body(Empty::<Bytes>::new())?;
            sender.ready().await?; // the previous response is done with the connection
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            println!("client: {status} {}", String::from_utf8_lossy(&body));
        }
        open.push(sender); // keep-alive: the connections stay open for the table
    }

    let connections = tracker.connections();
    println!();
    print!("{}", render::text_table(&connections));
    println!();
    print!("{}", tls_table(&connections));
    let stats = tracker.stats();
    println!();
    println!(
        "failed handshakes: server {}, client {}",
        stats
            .get("https-in", conntrack_core::Role::Server)
            .map_or(0, |s| s.tls_handshake_failed),
        stats
            .get("https-out", conntrack_core::Role::Client)
            .map_or(0, |s| s.tls_handshake_failed),
    );
    Ok(())
}

/// The TLS details of each connection: version, cipher suite, ALPN, SNI, resumption,
/// handshake time, and the peer's leaf certificate where there is one (clients see the
/// server's).
fn tls_table(connections: &[ConnectionInfo]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<3} {:<9} {:<6} {:<4} {:<28} {:<8} {:<9} {:<7} {:<9} {}\n",
        "ID",
        "CATEGORY",
        "ROLE",
        "TLS",
        "CIPHER",
        "ALPN",
        "SNI",
        "RESUMED",
        "HANDSHAKE",
        "PEER CERT"
    );
    for c in connections {
        let Some(tls) = &c.tls else { continue };
        let peer = tls.peer_certificates.as_ref().map_or_else(
            || "-".to_string(),
            |p| {
                format!(
                    "{} cert(s), leaf {}",
                    p.count,
                    p.leaf_subject.as_deref().unwrap_or("?")
                )
            },
        );
        let _ = writeln!(
            out,
            "{:<3} {:<9} {:<6} {:<4} {:<28} {:<8} {:<9} {:<7} {:<9} {}",
            c.id.to_string(),
            c.category.to_string(),
            c.role.to_string(),
            tls.protocol_version,
            tls.cipher_suite,
            tls.alpn_str().unwrap_or_default(),
            tls.server_name.as_deref().unwrap_or("-"),
            if tls.resumed { "yes" } else { "no" },
            format!("{:.1?}", c.timings.tls_handshake.unwrap_or_default()),
            peer
        );
    }
    out
}
