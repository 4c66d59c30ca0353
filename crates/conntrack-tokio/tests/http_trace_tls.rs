//! `TracedClient` over the tracked `HttpsConnector`, against a hyper server over rustls on
//! loopback: ALPN `h2` and `http/1.1`, the TLS hooks inside the request's trace, the
//! connection's `TlsInfo`, and the HTTP/2 hooks as documented.
#![cfg(all(feature = "hyper", feature = "tls"))]

#[path = "support/pki.rs"]
mod pki;

mod http_common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use conntrack_core::trace::TraceExt;
use conntrack_core::{DialerConfig, Recorded, RecordingHook, Tracker};
use conntrack_tokio::hyper::{HttpsConnector, RequestBody, TracedClient};
use http_body_util::{BodyExt, Full};
use http_common::{loopback_dialer, names};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = Full<Bytes>;

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let version = format!("{:?}", req.version());
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes);
    let mut out = version.into_bytes();
    out.extend_from_slice(&body.unwrap_or_default());
    Ok(Response::new(Full::new(Bytes::from(out))))
}

/// A hyper server over TLS on loopback, offering `h2` and `http/1.1`; answers with the HTTP
/// version it saw, then the request body.
async fn tls_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    addr
}

fn client(tracker: &Tracker, tls: Arc<rustls::ClientConfig>) -> TracedClient<HttpsConnector, Body> {
    let dialer = loopback_dialer(tracker, "https");
    let https = HttpsConnector::from_dialer(dialer, tls);
    let client: Client<HttpsConnector, RequestBody<Body>> =
        Client::builder(TokioExecutor::new()).build(https);
    TracedClient::new(tracker, client)
}

const DIAL: [&str; 8] = [
    "get_conn",
    "dns_start",
    "dns_done",
    "connect_start",
    "connect_done",
    "dial",
    "tls_handshake_start",
    "tls_handshake_done",
];

/// Two requests, the second after a known pause (as in the plain test): the events of each,
/// and the response bodies.
async fn two_requests(
    client: &TracedClient<HttpsConnector, Body>,
    addr: SocketAddr,
) -> [(Vec<Recorded>, Bytes); 2] {
    let uri: hyper::Uri = format!("https://localhost:{}/", addr.port())
        .parse()
        .unwrap();
    let mut out = Vec::new();
    for i in 0..2 {
        if i == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let rec = RecordingHook::new();
        let req = Request::post(uri.clone())
            .body(Full::new(Bytes::from_static(b" body")))
            .unwrap();
        let res = client.request(req).traced(rec.clone()).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        out.push((rec.events(), body));
    }
    out.try_into().unwrap()
}

fn got_conn(events: &[Recorded]) -> (conntrack_core::ConnectionInfo, bool, bool) {
    events
        .iter()
        .find_map(|e| match e {
            Recorded::GotConn {
                connection,
                reused,
                was_idle,
                ..
            } => Some((connection.clone(), *reused, *was_idle)),
            _ => None,
        })
        .expect("got_conn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_alpn_h2() {
    let (server, client_tls) = pki::localhost_configs(&[b"h2", b"http/1.1"]);
    let addr = tls_server(server).await;
    let tracker = Tracker::new();
    // No ALPN on the client config: the connector asks for h2 and http/1.1.
    let mut plain = (*client_tls).clone();
    plain.alpn_protocols.clear();
    let client = client(&tracker, Arc::new(plain));
    let [(first, body1), (second, body2)] = two_requests(&client, addr).await;
    assert_eq!(body1, "HTTP/2.0 body");
    assert_eq!(body2, "HTTP/2.0 body");

    // HTTP/2: got_conn, then the headers written as the stream opens, the request written once
    // the body is handed over, the first byte when the response's headers arrive; no
    // put_idle_conn (the connection is shared, never checked back in).
    let mut expected = DIAL.to_vec();
    expected.extend([
        "got_conn",
        "wrote_headers",
        "wrote_request",
        "got_first_response_byte",
    ]);
    assert_eq!(names(&first), expected);
    let (info, reused, _) = got_conn(&first);
    assert!(!reused);
    let tls = tracker.get(info.id).unwrap().tls.expect("TlsInfo set");
    assert_eq!(tls.alpn.as_deref(), Some(&b"h2"[..]));
    assert!(first.iter().any(|e| matches!(
        e,
        Recorded::TlsHandshakeDone { id, error: None, tls: Some(t), .. }
            if *id == info.id && t.alpn.as_deref() == Some(&b"h2"[..])
    )));

    assert_eq!(
        names(&second),
        [
            "get_conn",
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "got_first_response_byte"
        ]
    );
    let (info2, reused, was_idle) = got_conn(&second);
    assert_eq!(info2.id, info.id);
    assert!(reused && was_idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_alpn_http1() {
    let (server, client_tls) = pki::localhost_configs(&[b"h2", b"http/1.1"]);
    let addr = tls_server(server).await;
    let tracker = Tracker::new();
    let mut http1 = (*client_tls).clone();
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = client(&tracker, Arc::new(http1));
    let [(first, body1), (second, body2)] = two_requests(&client, addr).await;
    assert_eq!(body1, "HTTP/1.1 body");
    assert_eq!(body2, "HTTP/1.1 body");

    let mut expected = DIAL.to_vec();
    expected.extend([
        "got_conn",
        "wrote_headers",
        "wrote_request",
        "got_first_response_byte",
        "put_idle_conn",
    ]);
    assert_eq!(names(&first), expected);
    let (info, reused, _) = got_conn(&first);
    assert!(!reused);
    let tls = tracker.get(info.id).unwrap().tls.expect("TlsInfo set");
    assert_eq!(tls.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(tls.server_name.as_deref(), Some("localhost"));

    assert_eq!(
        names(&second),
        [
            "get_conn",
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "got_first_response_byte",
            "put_idle_conn",
        ]
    );
    let (info2, reused, was_idle) = got_conn(&second);
    assert_eq!(info2.id, info.id);
    assert!(reused && was_idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_refuses_http() {
    let (_, client_tls) = pki::localhost_configs(&[]);
    let rec = RecordingHook::new();
    let tracker = Tracker::builder().hook(rec.clone()).build();
    let https = HttpsConnector::new(&tracker, DialerConfig::new(), client_tls).https_only(true);
    let client: Client<HttpsConnector, Body> = Client::builder(TokioExecutor::new()).build(https);
    let err = client
        .get("http://127.0.0.1:9/".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // Refused before anything is dialed.
    assert!(rec.events().is_empty(), "{:?}", rec.names());
}
