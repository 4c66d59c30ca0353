//! tonic's server on a tracked listener: connections are tracked, `Connected` forwards (so the
//! peer address reaches handlers), and entries go when the server stops.
#![cfg(all(feature = "tonic", feature = "hyper"))]

use std::convert::Infallible;
use std::time::Duration;

use conntrack_core::{ListenerConfig, RecordingHook, Role, Tracker};
use conntrack_tokio::Listener;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::transport::server::TcpConnectInfo;
use tonic::transport::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_serves_on_a_tracked_listener() {
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(
        &tracker,
        inner,
        ListenerConfig::new().category("grpc").hook(rec.clone()),
    );

    // Any tower service will do for tonic's server; no protobuf needed to show the transport.
    let svc = tower::service_fn(|req: http::Request<tonic::body::Body>| async move {
        let peer = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let body = format!("peer={}", peer.map(|p| p.to_string()).unwrap_or_default());
        Ok::<_, Infallible>(http::Response::new(tonic::body::Body::new(body)))
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .accept_http1(true)
            .serve_with_incoming_shutdown(svc, listener.incoming(), async move {
                let _ = stop_rx.await;
            }),
    );

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = client
        .get(format!("http://{addr}/any.Service/Call").parse().unwrap())
        .await
        .unwrap();
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        body.starts_with("peer=127.0.0.1:"),
        "Connected forwards the peer address: {body}"
    );

    let servers: Vec<_> = tracker
        .connections()
        .into_iter()
        .filter(|c| c.role == Role::Server)
        .collect();
    assert_eq!(servers.len(), 1);
    assert_eq!(&*servers[0].category, "grpc");
    assert_eq!(
        servers[0].remote_addr.to_string(),
        body.trim_start_matches("peer=")
    );
    // The server's write is counted when its write call returns, which can be just after the
    // client has the bytes: wait for it (bounded).
    let id = servers[0].id;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = tracker.get(id).expect("still open");
        if info.read_bytes > 0 && info.write_bytes > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    drop(client);
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), tracker.drained())
        .await
        .expect("drained");
    assert_eq!(rec.names(), ["accept", "close"]);
}
