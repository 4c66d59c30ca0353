//! Server-side request state: `ExchangeLayer` marks each request on the connection it arrived
//! on, so a server entry shows its requests and its state (new, active, idle), and a handler
//! reads its own connection. axum (plain and over TLS with hyper's `serve_connection`) and
//! tonic. Each client is one kept-alive HTTP/1 connection (hyper's own client connection), so
//! every request goes over the same server connection.
#![cfg(all(
    feature = "axum",
    feature = "tonic",
    feature = "hyper",
    feature = "tls"
))]

#[path = "support/pki.rs"]
mod pki;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Router};
use conntrack_core::{
    ConnState, ConnectionId, ConnectionInfo, ConnectionRef, ListenerConfig, Role, Tracker,
};
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{Dialer, Listener, TrackedConnectInfo};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, Mutex};

/// The single server entry of the tracker.
fn server_entry(tracker: &Tracker) -> ConnectionInfo {
    let servers: Vec<_> = tracker
        .connections()
        .into_iter()
        .filter(|c| c.role == Role::Server)
        .collect();
    assert_eq!(servers.len(), 1, "one server connection: {servers:?}");
    servers.into_iter().next().unwrap()
}

/// Waits (bounded) until the server entry satisfies `pred`: an exchange ends when the server
/// has sent the response body to its end, just after the client has read it.
async fn server_entry_until(
    tracker: &Tracker,
    pred: impl Fn(&ConnectionInfo) -> bool,
) -> ConnectionInfo {
    let start = Instant::now();
    loop {
        let e = server_entry(tracker);
        if pred(&e) {
            return e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server entry stuck: {e:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// A keep-alive HTTP/1 client on one tracked connection.
async fn one_connection(
    tracker: &Tracker,
    addr: std::net::SocketAddr,
) -> SendRequest<Empty<Bytes>> {
    let dialer = Dialer::new(
        tracker,
        conntrack_core::DialerConfig::new().category("client"),
    );
    let tcp = dialer.connect_addr(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_text(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> String {
    sender.ready().await.unwrap();
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_connection_counts_requests_and_shows_its_state() {
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http"));

    // The slow handler waits for the test's word.
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<()>(1);
    let release: Arc<Mutex<Option<oneshot::Receiver<()>>>> = Arc::new(Mutex::new(None));
    let (release_tx, release_rx) = oneshot::channel();
    *release.lock().await = Some(release_rx);
    let app = Router::new()
        .route(
            "/me",
            get(|Extension(conn): Extension<ConnectionRef>| async move {
                let info = conn.info();
                format!("{} {} {}", info.id, info.remote_addr, info.requests)
            }),
        )
        .route(
            "/slow",
            get(move || {
                let (entered, release) = (entered_tx.clone(), Arc::clone(&release));
                async move {
                    let _ = entered.send(()).await;
                    if let Some(rx) = release.lock().await.take() {
                        let _ = rx.await;
                    }
                    "slow"
                }
            }),
        )
        .layer(ExchangeLayer::new(&tracker));
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );

    let mut client = one_connection(&tracker, addr).await;
    // The handler reads its own connection: id, peer, and this request counted.
    let me = get_text(&mut client, "/me").await;
    let server = server_entry(&tracker);
    let client_entry = tracker
        .connections()
        .into_iter()
        .find(|c| c.role == Role::Client)
        .unwrap();
    assert_eq!(
        me,
        format!("{} {} 1", server.id, client_entry.local_addr),
        "the handler's own connection"
    );

    // Two more requests on the kept-alive connection: three in all, idle after them.
    for _ in 0..2 {
        get_text(&mut client, "/me").await;
    }
    let idle = server_entry_until(&tracker, |e| e.in_flight == 0 && e.requests == 3).await;
    assert_eq!(idle.state, ConnState::Idle);
    assert!(idle.exchange_idle_for.is_some());

    // During a slow handler: active.
    let slow = tokio::spawn(async move {
        let text = get_text(&mut client, "/slow").await;
        (text, client) // the connection stays open for the checks below
    });
    entered_rx.recv().await.unwrap();
    let active = server_entry(&tracker);
    assert_eq!(
        (active.state, active.in_flight, active.requests),
        (ConnState::Active, 1, 4)
    );
    release_tx.send(()).unwrap();
    let (text, client) = slow.await.unwrap();
    assert_eq!(text, "slow");
    let after = server_entry_until(&tracker, |e| e.in_flight == 0).await;
    assert_eq!((after.state, after.requests), (ConnState::Idle, 4));
    drop(client);
}

/// hyper's `serve_connection` over TLS, the layer fixed to the connection: the handler sees
/// its connection's TLS details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_reads_its_tls_connection() {
    let (server_config, client_config) = pki::localhost_configs(&[b"http/1.1"]);
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("https"));
    let acceptor = TlsAcceptor::from(server_config);
    let t = tracker.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let id: ConnectionId = tcp.id();
        let tls = acceptor.accept(tcp).await.unwrap();
        let app = Router::new()
            .route(
                "/tls",
                get(|Extension(conn): Extension<ConnectionRef>| async move {
                    let info = conn.info();
                    let tls = info.tls.expect("TLS details");
                    format!("{} {} {}", info.id, tls.protocol_version, info.requests)
                }),
            )
            .layer(ExchangeLayer::for_connection(&t, id));
        let svc = hyper_util::service::TowerToHyperService::new(app);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), svc)
            .await;
    });

    let dialer = Dialer::new(&tracker, conntrack_core::DialerConfig::new());
    let connector = TlsConnector::from(client_config);
    let tls = dialer
        .connect_tls(&format!("localhost:{}", addr.port()), &connector, None)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/tls")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let server = server_entry(&tracker);
    assert_eq!(body, format!("{} 1.3 1", server.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_server_connection_counts_requests() {
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("grpc"));
    let mut incoming = listener.incoming();
    let layer = incoming.exchange_layer();
    let svc = tower::service_fn(|req: http::Request<tonic::body::Body>| async move {
        let conn = req.extensions().get::<ConnectionRef>().cloned();
        let body = match conn {
            Some(c) => format!("{} {}", c.id(), c.info().requests),
            None => "no connection".to_owned(),
        };
        Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::new(body)))
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(layer)
            .serve_with_incoming_shutdown(svc, incoming, async move {
                let _ = stop_rx.await;
            }),
    );

    let mut client = one_connection(&tracker, addr).await;
    let mut last = String::new();
    for _ in 0..3 {
        last = get_text(&mut client, "/any.Service/Call").await;
    }
    let entry = server_entry_until(&tracker, |e| e.in_flight == 0 && e.requests == 3).await;
    assert_eq!(
        last,
        format!("{} 3", entry.id),
        "the handler's own connection"
    );
    assert_eq!(entry.state, ConnState::Idle);
    drop(client);
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
