//! The plain connectors never put an `https://` request on the wire unencrypted: `Dialer` and
//! `TrackedConnector` refuse it before dialing, so a capture server on loopback sees nothing of
//! it (no connection, no header); the next plain `http://` request is the first thing it sees.
#![cfg(feature = "hyper")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use conntrack_core::{DialerConfig, Tracker};
use conntrack_tokio::hyper::ForTlsLayer;
use conntrack_tokio::{Dialer, TrackedConnector};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SECRET: &str = "Bearer s3cr3t-token";

/// A plain TCP server on loopback that sends back, for every connection it accepts, the bytes
/// of the request head it read, and answers `200 OK`.
fn capture_server() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            if tx.send(head).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

async fn refuses_https<C>(connector: C)
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let (addr, seen) = capture_server();
    let client: Client<C, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let https = http::Request::get(format!("https://user:pa55word@{addr}/private"))
        .header("authorization", SECRET)
        .body(Empty::new())
        .unwrap();
    let err = client
        .request(https)
        .await
        .expect_err("https must be refused");
    assert!(err.is_connect(), "{err:?}");
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut refused = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            refused = io.kind() == std::io::ErrorKind::InvalidInput
                && io.to_string().contains("plain TCP connector");
        }
        source = e.source();
    }
    assert!(refused, "a clear refusal: {err:?}");
    // The refusal names the URI, without its password.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        assert!(!e.to_string().contains("pa55word"), "{e}");
        source = e.source();
    }

    // The first connection the server ever sees is this plain request, not the https one.
    let http = http::Request::get(format!("http://{addr}/public"))
        .body(Empty::new())
        .unwrap();
    let res = client.request(http).await.unwrap();
    assert_eq!(res.status(), 200);
    let first = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("GET /public "), "{first}");
    assert!(!first.contains("s3cr3t"), "{first}");
    assert!(
        seen.try_recv().is_err(),
        "no other connection reached the server"
    );
}

#[tokio::test]
async fn dialer_refuses_https() {
    let tracker = Tracker::new();
    refuses_https(Dialer::new(&tracker, DialerConfig::new())).await;
    // Nothing was dialed for the refused request; the plain one was.
    assert_eq!(tracker.stats().total().opened, 1);
}

#[tokio::test]
async fn tracked_connector_refuses_https() {
    let tracker = Tracker::new();
    refuses_https(TrackedConnector::new(&tracker, DialerConfig::new())).await;
    assert_eq!(tracker.stats().total().opened, 1);
}

#[tokio::test]
async fn wrapped_http_connector_refuses_https() {
    let tracker = Tracker::new();
    let mut http = HttpConnector::new();
    // Even an inner connector that would let https through is covered by the wrapper's check.
    http.enforce_http(false);
    refuses_https(TrackedConnector::wrap(&tracker, http, DialerConfig::new())).await;
}

/// `ForTlsLayer` is the explicit opt-out for a TLS layer's inner connector: it dials an
/// `https://` URI (the layer on top would encrypt).
#[tokio::test]
async fn for_tls_layer_passes_https_to_the_layer_above() {
    use tower::ServiceExt;
    let tracker = Tracker::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inner = ForTlsLayer(Dialer::new(&tracker, DialerConfig::new()));
    let uri: http::Uri = format!("https://{addr}/").parse().unwrap();
    let (io, accepted) = tokio::join!(inner.oneshot(uri), listener.accept());
    let io = io.unwrap();
    accepted.unwrap();
    assert_eq!(tracker.len(), 1);
    drop(io);
    assert!(tracker.is_empty());
}
