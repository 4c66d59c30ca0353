//! Server requests phase by phase over TLS with ALPN `h2`: a tracked listener, the tracked
//! rustls acceptor, hyper-util's server (auto: HTTP/2 chosen by the client's preface) with
//! `ExchangeLayer`, and a client over rustls asking for `h2` that sends two concurrent
//! requests on its one connection. Each stream gets its own exchange and phases.
#![cfg(all(feature = "tls", feature = "server"))]

#[path = "support/pki.rs"]
mod pki;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use conntrack_core::ListenerConfig;
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::tls::TlsAcceptor;
use conntrack_tokio::Listener;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Barrier;
use tower::Layer;

#[path = "support/phases.rs"]
mod phases;
use phases::recording_tracker;

/// How long the slow stream's handler sleeps once both streams are in.
const SLOW: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_h2_concurrent_streams_each_get_their_phases() {
    let (server_config, client_config) = pki::localhost_configs(&[b"h2"]);
    let (tracker, mut rx) = recording_tracker();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("https"));
    let acceptor = TlsAcceptor::from(server_config);
    // Both handlers wait until the other stream is in its handler too: the streams overlap on
    // the one connection (a server serving them one after the other fails the wait). Then
    // `/slow` sleeps and `/fast` answers at once.
    let barrier = Arc::new(Barrier::new(2));
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let t = tracker.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let id = tcp.id();
        let tls = acceptor.accept(tcp).await.unwrap();
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let _ = accepted_tx.send((id, alpn));
        let handler = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let barrier = barrier.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), barrier.wait())
                    .await
                    .expect("both streams in their handlers at once");
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(SLOW).await;
                }
                let body = Full::new(Bytes::from(req.uri().path().to_owned()));
                Ok::<_, Infallible>(http::Response::new(body))
            }
        });
        let svc = ExchangeLayer::for_connection(&t, id).layer(handler);
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(
                TokioIo::new(tls),
                hyper_util::service::TowerToHyperService::new(svc),
            )
            .await;
    });

    // The client: rustls asking for `h2`, HTTP/2 over it, two requests at once.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |path: &'static str| {
        let mut c = sender.clone();
        async move {
            let req = http::Request::get(format!("https://localhost{path}"))
                .body(Full::<Bytes>::default())
                .unwrap();
            let res = c.send_request(req).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            res.into_body().collect().await.unwrap().to_bytes()
        }
    };
    let (slow, fast) = tokio::join!(get("/slow"), get("/fast"));
    assert_eq!((&slow[..], &fast[..]), (&b"/slow"[..], &b"/fast"[..]));

    let (id, server_alpn) = accepted_rx.await.unwrap();
    assert_eq!(server_alpn.as_deref(), Some(&b"h2"[..]));
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an exchange within 10 s")
            .expect("the hook is alive");
        got.push(p);
    }
    // The fast stream answers first, the slow one 200 ms later.
    let (fast, slow) = (&got[0], &got[1]);
    for p in [fast, slow] {
        assert_eq!(p.id, id, "both streams on the one TLS connection: {p:?}");
        assert_eq!(p.category, "https");
        assert_eq!((p.method.as_str(), p.version.as_str()), ("GET", "2"));
        assert_eq!(p.status, Some(200));
        assert!(p.completed, "{p:?}");
        // A stream: no waiting, its head is its HEADERS frame, no timed body.
        assert_eq!(p.waiting, None, "{p:?}");
        assert_eq!(p.head, Duration::ZERO, "{p:?}");
        assert_eq!(p.body, None, "{p:?}");
        p.assert_adds_up();
    }
    assert!(slow.handler >= SLOW, "{slow:?}");
    // The fast stream's handler waited only for the other stream to arrive.
    assert!(fast.handler < SLOW, "{fast:?}");

    // The connection's record: TLS, ALPN `h2`, two requests served, none in progress.
    let info = tracker.get(id).expect("still open");
    let tls = info.tls.as_ref().expect("TLS details");
    assert_eq!(tls.alpn.as_deref(), Some(&b"h2"[..]), "{info:?}");
    assert_eq!(tls.protocol_version, "1.3");
    assert_eq!(info.requests, 2, "{info:?}");
    assert!(info.exchange.is_none(), "{info:?}");
}

/// HTTP/1.1 over TLS: the first request's phases hold neither the TLS handshake nor the
/// client's pause before it. The connection's first read is the ClientHello, not the
/// request's first byte: a successful server handshake restarts the waiting, as an exchange's
/// end does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_http1_first_request_waits_from_the_handshake() {
    let (server_config, client_config) = pki::localhost_configs(&[b"http/1.1"]);
    let (tracker, mut rx) = recording_tracker();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("https"));
    let acceptor = TlsAcceptor::from(server_config);
    let t = tracker.clone();
    // The server's handshake ends (and the waiting restarts) when it has read the client's
    // last flight, after the client's handshake has ended: the pause starts after the server's.
    let (handshaken, server_handshaken) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let id = tcp.id();
        let tls = acceptor.accept(tcp).await.unwrap();
        let _ = handshaken.send(());
        let handler = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let svc = ExchangeLayer::for_connection(&t, id).layer(handler);
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(
                TokioIo::new(tls),
                hyper_util::service::TowerToHyperService::new(svc),
            )
            .await;
    });
    // 600 ms before the handshake, 300 ms between it and the request.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let tls = tokio_rustls::TlsConnector::from(client_config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    server_handshaken
        .await
        .expect("the server's handshake ends");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    let p = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an exchange within 10 s")
        .expect("the hook is alive");
    assert_eq!(p.version, "1.1");
    // Waiting: from the handshake's end to the request's first byte, the 300 ms pause only.
    let waiting = p.waiting.expect("HTTP/1 has a waiting phase");
    assert!(waiting >= Duration::from_millis(300), "{p:?}");
    assert!(waiting < Duration::from_millis(600), "{p:?}");
    // The head: the request's own bytes, sent at once.
    assert!(p.head < Duration::from_millis(100), "{p:?}");
    p.assert_adds_up();
}
