//! A `TracedClient` request with no hook anywhere is in flight on its connection from the
//! moment hyper-util hands the connection to it until its response body ends: while it waits
//! for a slow answer (2.5 s here) the connection shows `in_flight == 1`, an idle timeout of
//! 1 s does not close it, and a shutdown started during the wait lets it finish, on HTTP/1 and
//! on HTTP/2 (prior knowledge).
#![cfg(feature = "hyper")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conntrack_core::{ConnState, DialerConfig, Role, Tracker};
use conntrack_tokio::hyper::TracedClient;
use conntrack_tokio::Dialer;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const ANSWER_AFTER: Duration = Duration::from_millis(2500);

/// An untracked hyper server answering every request after [`ANSWER_AFTER`].
async fn slow_server(h2: bool) -> SocketAddr {
    server(h2, ANSWER_AFTER, b"late").await
}

/// An untracked hyper server answering every request with `body` after `delay`.
async fn server(h2: bool, delay: Duration, body: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body))))
                    });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    addr
}

fn client(tracker: &Tracker, config: DialerConfig, h2: bool) -> TracedClient<Dialer, Empty<Bytes>> {
    let dialer = Dialer::new(tracker, config);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(h2);
    TracedClient::new(tracker, builder.build(dialer)).http2_only(h2)
}

/// The only client connection of `tracker`, polled (bounded) until it exists and has an
/// exchange in flight.
async fn in_flight_connection(tracker: &Tracker) -> conntrack_core::ConnectionInfo {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let conns = tracker.connections();
        if let Some(c) = conns
            .iter()
            .find(|c| c.role == Role::Client && c.in_flight > 0)
        {
            return c.clone();
        }
        assert!(Instant::now() < deadline, "no request in flight: {conns:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn survives_idle_timeout(h2: bool) {
    let tracker = Tracker::new();
    let policies = tokio::spawn({
        let tracker = tracker.clone();
        async move { tracker.run_policies(tokio::time::sleep).await }
    });
    let addr = slow_server(h2).await;
    let client = client(
        &tracker,
        DialerConfig::new()
            .category("upstream")
            .idle_timeout(Duration::from_secs(1)),
        h2,
    );
    let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let request = tokio::spawn({
        let client = client.clone();
        async move {
            let res = client.get(uri).await.expect("the slow answer arrives");
            res.into_body().collect().await.unwrap().to_bytes()
        }
    });
    let waiting = in_flight_connection(&tracker).await;
    assert_eq!(waiting.in_flight, 1, "h2={h2}: {waiting:?}");
    assert_eq!(waiting.state, ConnState::Active, "h2={h2}");
    // Past the idle timeout, still waiting for the answer: still open and in flight.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let later = tracker
        .get(waiting.id)
        .expect("not closed by the idle timeout");
    assert_eq!(later.in_flight, 1, "h2={h2}: {later:?}");
    let body = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(&body[..], b"late", "h2={h2}");
    let after = tracker.get(waiting.id).expect("open, idle in the pool");
    assert_eq!(after.in_flight, 0, "h2={h2}");
    assert_eq!(after.requests, 1, "h2={h2}");
    policies.abort();
}

async fn survives_shutdown(h2: bool) {
    let tracker = Tracker::new();
    let addr = slow_server(h2).await;
    let client = client(&tracker, DialerConfig::new().category("upstream"), h2);
    let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let request = tokio::spawn({
        let client = client.clone();
        async move {
            let res = client.get(uri).await.expect("the slow answer arrives");
            res.into_body().collect().await.unwrap().to_bytes()
        }
    });
    let waiting = in_flight_connection(&tracker).await;
    assert_eq!(waiting.in_flight, 1, "h2={h2}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = tracker
        .shutdown(Duration::from_secs(5), tokio::time::sleep)
        .await;
    let body = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(&body[..], b"late", "h2={h2}");
    assert!(report.drained, "h2={h2}: {report:?}");
    assert!(report.still_open.is_empty(), "h2={h2}: {report:?}");
    assert!(
        report.elapsed >= ANSWER_AFTER - Duration::from_millis(600),
        "the shutdown waited for the answer: {report:?}"
    );
    let closed = tracker.recently_closed();
    let c = closed
        .iter()
        .find(|c| c.info.id == waiting.id)
        .expect("the connection closed after its exchange");
    assert_eq!(c.reason.to_string(), "shutdown", "h2={h2}: {c:?}");
}

#[tokio::test]
async fn no_hook_request_survives_idle_timeout_http1() {
    survives_idle_timeout(false).await;
}

#[tokio::test]
async fn no_hook_request_survives_idle_timeout_http2() {
    survives_idle_timeout(true).await;
}

#[tokio::test]
async fn no_hook_request_survives_shutdown_http1() {
    survives_shutdown(false).await;
}

#[tokio::test]
async fn no_hook_request_survives_shutdown_http2() {
    survives_shutdown(true).await;
}

/// Three requests with no hook share one HTTP/2 connection, each in flight from its hand-off
/// (`in_flight == 3`, counted once each); cancelling them (their futures dropped while they
/// wait for the answer) ends every exchange: the connection stays open with nothing in flight.
#[tokio::test]
async fn no_hook_cancelled_requests_leave_nothing_in_flight_http2() {
    let tracker = Tracker::new();
    let addr = slow_server(true).await;
    let client = client(&tracker, DialerConfig::new().category("upstream"), true);
    let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            let uri = uri.clone();
            tokio::spawn(async move { client.get(uri).await.map(|_| ()) })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let id = loop {
        let conns = tracker.connections();
        if let [c] = &conns[..] {
            if c.in_flight == 3 {
                break c.id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "three requests in flight: {conns:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for r in &requests {
        r.abort();
    }
    for r in requests {
        assert!(r.await.unwrap_err().is_cancelled());
    }
    let info = tracker.get(id).expect("the connection stays open");
    assert_eq!(info.in_flight, 0, "{info:?}");
    assert_eq!(info.requests, 3, "{info:?}");
    assert_eq!(info.state, ConnState::Idle, "{info:?}");
}

/// A hook that counts `on_got_conn` (so requests are watched).
struct CountGotConn(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl conntrack_core::Hook for CountGotConn {
    fn on_got_conn(&self, _: &conntrack_core::GotConnEvent<'_>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Many requests at once from tasks on several threads (which share the client's captures of
/// hyper-util's hand-off, one per thread slot): each is counted exactly once as an exchange
/// on its connection, none stays in flight, and with a hook each gets its `got_conn`.
async fn concurrent_requests_are_counted_exactly(h2: bool, hook: bool) {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tracker = if hook {
        Tracker::builder()
            .hook(CountGotConn(std::sync::Arc::clone(&got)))
            .build()
    } else {
        Tracker::new()
    };
    let addr = server(h2, Duration::ZERO, b"ok").await;
    let client = client(&tracker, DialerConfig::new().category("upstream"), h2);
    let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (client, uri, barrier) = (client.clone(), uri.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..EACH {
                    let res = client.get(uri.clone()).await.unwrap();
                    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("bounded")
            .unwrap();
    }
    // The client connections, open or closed (hyper-util may let one go).
    let clients: Vec<_> = tracker
        .connections()
        .into_iter()
        .chain(tracker.recently_closed().into_iter().map(|c| c.info))
        .filter(|c| c.role == Role::Client)
        .collect();
    let requests: u64 = clients.iter().map(|c| c.requests).sum();
    assert_eq!(
        requests,
        (TASKS * EACH) as u64,
        "h2={h2} hook={hook}: {clients:?}"
    );
    assert!(clients.iter().all(|c| c.in_flight == 0), "{clients:?}");
    if hook {
        assert_eq!(got.load(std::sync::atomic::Ordering::SeqCst), TASKS * EACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http1_requests_are_counted_exactly() {
    concurrent_requests_are_counted_exactly(false, false).await;
    concurrent_requests_are_counted_exactly(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http2_requests_are_counted_exactly() {
    concurrent_requests_are_counted_exactly(true, false).await;
    concurrent_requests_are_counted_exactly(true, true).await;
}
