//! The timeline of an HTTP request, as Go's `httptrace` shows it: DNS, connect, TLS, got
//! connection (new or reused, idle for how long), headers and request written, first response
//! byte, connection put back; then a second request on the reused connection.
//!
//! ```text
//! cargo run -p conntrack-examples --example httptrace [-- URL]
//! ```
//!
//! Without a URL it starts a local server on loopback and traces requests to it. An
//! `https://` URL is verified against the system's CA bundle (`SSL_CERT_FILE`, or
//! `/etc/ssl/certs/ca-certificates.crt`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use conntrack_core::trace::TraceExt;
use conntrack_core::{Callbacks, DialerConfig, Tracker};
use conntrack_tokio::hyper::{HttpsConnector, TracedClient};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{pem::PemObject, CertificateDer};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A hook printing every event of one request with the time since the request began.
fn timeline(label: &'static str) -> Callbacks {
    let start = Arc::new(Mutex::new(None::<Instant>));
    let at = move || {
        let mut s = start.lock().unwrap();
        let t0 = *s.get_or_insert_with(Instant::now);
        format!("{label} {:>9.3} ms", t0.elapsed().as_secs_f64() * 1000.0)
    };
    let at = Arc::new(at);
    macro_rules! on {
        ($cb:ident, $method:ident, |$ev:ident| $fmt:expr) => {{
            let at = Arc::clone(&at);
            $cb.$method(move |$ev| println!("{}  {}", at(), $fmt))
        }};
    }
    let cb = Callbacks::new();
    let cb = on!(cb, on_get_conn, |ev| format!("get conn {}", ev.host_port));
    let cb = on!(cb, on_dns_start, |ev| format!("dns start {}", ev.host));
    let cb = on!(cb, on_dns_done, |ev| format!(
        "dns done {:?}{}",
        ev.addrs,
        ev.error.map(|e| format!(" error: {e}")).unwrap_or_default()
    ));
    let cb = on!(cb, on_connect_start, |ev| format!(
        "connect start {}",
        ev.addr
    ));
    let cb = on!(cb, on_connect_done, |ev| format!(
        "connect done {}{}",
        ev.addr,
        ev.error.map(|e| format!(" error: {e}")).unwrap_or_default()
    ));
    let cb = on!(cb, on_tls_handshake_start, |ev| format!(
        "tls handshake start {}",
        ev.server_name.unwrap_or("")
    ));
    let cb = on!(cb, on_tls_handshake_done, |ev| match (ev.tls, ev.error) {
        (_, Some(e)) => format!("tls handshake failed: {e}"),
        (Some(tls), None) => format!(
            "tls handshake done {} {} alpn={}",
            tls.protocol_version,
            tls.cipher_suite,
            tls.alpn
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        ),
        (None, None) => "tls handshake done".to_owned(),
    });
    let cb = on!(cb, on_got_conn, |ev| format!(
        "got conn #{} reused={} was_idle={} idle_time={:?}",
        ev.connection.id, ev.reused, ev.was_idle, ev.idle_time
    ));
    let cb = on!(cb, on_wrote_header_field, |ev| format!(
        "wrote header {}: {}",
        String::from_utf8_lossy(ev.name),
        String::from_utf8_lossy(ev.value)
    ));
    let cb = on!(cb, on_wrote_headers, |_ev| "wrote headers");
    let cb = on!(cb, on_wait_100_continue, |_ev| "wait 100 continue");
    let cb = on!(cb, on_wrote_request, |ev| match ev.error {
        Some(e) => format!("wrote request, error: {e}"),
        None => "wrote request".to_owned(),
    });
    let cb = on!(cb, on_got_1xx_response, |ev| format!(
        "got {} response",
        ev.status
    ));
    let cb = on!(cb, on_got_first_response_byte, |_ev| {
        "got first response byte"
    });
    on!(cb, on_put_idle_conn, |ev| match ev.error {
        Some(e) => format!("connection not put back: {e}"),
        None => "put idle conn".to_owned(),
    })
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    let path = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_owned());
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = CertificateDer::pem_file_iter(&path) {
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let app = Router::new().route("/", get(|| async { "hello from the local server\n" }));
            tokio::spawn(async move { axum::serve(listener, app).await });
            println!("no URL given: tracing requests to a local server on {addr}\n");
            format!("http://localhost:{}/", addr.port())
        }
    };
    let uri: hyper::Uri = url.parse()?;

    let tracker = Tracker::new();
    let https = HttpsConnector::new(
        &tracker,
        DialerConfig::new().category("httptrace"),
        tls_config()?,
    );
    let client = TracedClient::<_, Empty<Bytes>>::new(
        &tracker,
        Client::builder(TokioExecutor::new()).build(https),
    );

    for (label, pause) in [
        ("first ", Duration::ZERO),
        ("second", Duration::from_millis(100)),
    ] {
        tokio::time::sleep(pause).await;
        let res = client.get(uri.clone()).traced(timeline(label)).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        println!("{label} -> {status}, {} body bytes\n", body.len());
    }
    for conn in tracker.connections() {
        println!(
            "connection #{}: {} -> {}, {} requests, {:?}",
            conn.id, conn.local_addr, conn.remote_addr, conn.requests, conn.state
        );
    }
    Ok(())
}
