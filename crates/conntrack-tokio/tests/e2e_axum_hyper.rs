//! End to end: axum served on the tracked `Listener`, hyper-util's client on a tracked
//! connector (the `Dialer`, or `TrackedConnector` over hyper-util's `HttpConnector`), one
//! tracker for both.
#![cfg(all(feature = "axum", feature = "hyper"))]

use std::future::IntoFuture;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::post;
use axum::Router;
use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Role, Tracker};
use conntrack_tokio::{
    hyper::connection_id, Dialer, Listener, TrackedConnectInfo, TrackedConnector,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::Connect, Client};
use hyper_util::rt::TokioExecutor;

const REQUESTS: usize = 50;

/// Echoes the body, and says which server connection it came over.
async fn echo(
    ConnectInfo(conn): ConnectInfo<TrackedConnectInfo>,
    body: Bytes,
) -> ([(&'static str, String); 1], Bytes) {
    ([("x-server-conn", conn.id.as_u64().to_string())], body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_and_hyper_client_on_one_tracker() {
    let tracker = Tracker::new();
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("client"));
    axum_server_and_hyper_client(tracker, dialer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_and_hyper_client_on_http_connector() {
    let tracker = Tracker::new();
    let connector = TrackedConnector::new(&tracker, DialerConfig::new().category("client"));
    axum_server_and_hyper_client(tracker, connector).await;
}

/// `HttpConnector`'s error comes back to the caller; the hooks see its `io::ErrorKind`, the
/// dial is counted as failed and nothing is tracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connector_failure_is_reported_and_counted() {
    let tracker = Tracker::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let config = DialerConfig::new().category("client").on_dial(move |ev| {
        let _ = tx.send((
            ev.target.to_string(),
            ev.connection.is_some(),
            ev.error.map(std::io::Error::kind),
        ));
    });
    let connector = TrackedConnector::new(&tracker, config);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    // A loopback port with nothing listening on it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = client
        .get(format!("http://{closed}/").parse().unwrap())
        .await
        .expect_err("nothing listens there");
    assert!(err.is_connect(), "{err:?}");
    let (target, connected, kind) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(target, closed.to_string());
    assert!(!connected);
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused));
    let stats = tracker.stats();
    let c = stats.get("client", Role::Client).unwrap();
    assert_eq!((c.failed, c.opened), (1, 0));
    assert!(tracker.is_empty());
}

async fn axum_server_and_hyper_client<C>(tracker: Tracker, connector: C)
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("server"));
    let app = Router::new().route("/echo", post(echo));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .into_future(),
    );

    let client: Client<C, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut client_ids = Vec::new();
    let mut server_ids = Vec::new();
    for i in 0..REQUESTS {
        let body = Bytes::from(vec![b'a' + (i % 26) as u8; 100 + i * 37]);
        let req = hyper::Request::post(format!("http://{addr}/echo"))
            .body(Full::new(body.clone()))
            .unwrap();
        let res = client.request(req).await.expect("request");
        let cid = connection_id(&res).expect("response carries the client connection id");
        let sid: u64 = res.headers()["x-server-conn"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got, body);
        client_ids.push(cid);
        server_ids.push(sid);
    }

    // Ids match the tracker's entries, with the right roles and categories. (A pooled
    // connection may have closed since it served its response: look in the history too.)
    let find = |id: ConnectionId| {
        tracker
            .get(id)
            .or_else(|| {
                tracker
                    .recently_closed()
                    .into_iter()
                    .find(|c| c.info.id == id)
                    .map(|c| c.info)
            })
            .unwrap_or_else(|| panic!("connection {id} is neither live nor recently closed"))
    };
    for cid in &client_ids {
        let c = find(*cid);
        assert_eq!((c.role, &*c.category), (Role::Client, "client"));
        assert_eq!(c.target.as_deref(), Some(addr.to_string().as_str()));
    }
    let live_or_closed: Vec<ConnectionId> = tracker
        .connections()
        .iter()
        .map(|c| c.id)
        .chain(tracker.recently_closed().iter().map(|c| c.info.id))
        .collect();
    for sid in &server_ids {
        let id = live_or_closed
            .iter()
            .copied()
            .find(|i| i.as_u64() == *sid)
            .expect("server entry");
        let s = find(id);
        assert_eq!((s.role, &*s.category), (Role::Server, "server"));
    }

    // Stop both; every entry goes.
    drop(client);
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), tracker.drained())
        .await
        .expect("drained");
    assert!(tracker.is_empty());
    // Once both sides are done, what each side wrote is what the other read (before that, a
    // write can reach the peer a moment before the writer's counter moves).
    let stats = tracker.stats();
    let s = stats.get("server", Role::Server).unwrap();
    let c = stats.get("client", Role::Client).unwrap();
    assert!(c.write_bytes > 0);
    assert_eq!(s.read_bytes, c.write_bytes, "server read = client wrote");
    assert_eq!(c.read_bytes, s.write_bytes, "client read = server wrote");
    assert_eq!(s.opened, c.opened, "one server entry per client connection");
}
