//! Server requests phase by phase: axum over a tracked listener with `ExchangeLayer`, a hook
//! taking `on_server_exchange`, and raw TCP clients on loopback whose timing is the scenario
//! (a slow head, a slow upload, a slow reader, a keep-alive pause); each phase is measured
//! against what the client or the handler did.
#![cfg(feature = "axum")]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use conntrack_core::{
    Callbacks, ListenerConfig, Role, ServerExchangeEvent, ServerExchangeProgress, ServerPhase,
    Tracker,
};
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::{Listener, TrackedConnectInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[path = "support/phases.rs"]
mod phases;
use phases::{read_response, recording_tracker, Phases};

/// The big response's size.
const BIG: usize = 512 * 1024;

/// An axum server over a tracked listener whose accepted sockets have a small send buffer (so
/// a slow reader holds the response's writes back), and the channel of its exchanges.
async fn server() -> (SocketAddr, mpsc::UnboundedReceiver<Phases>, Tracker) {
    let (tracker, rx) = recording_tracker();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // Inherited by the accepted sockets; a fixed size also turns autotuning off.
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let inner = socket.listen(64).unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http"));
    let app = Router::new()
        .route("/fast", get(|| async { "ok" }))
        .route(
            "/items/{id}",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "slept"
            }),
        )
        .route(
            "/upload",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .route("/big", get(|| async { vec![b'x'; BIG] }))
        // Answers at once with the request's body as the response's: the body is read while
        // the response is written.
        .route(
            "/echo",
            post(
                |req: axum::extract::Request| async move { axum::body::Body::new(req.into_body()) },
            ),
        )
        .layer(ExchangeLayer::new(&tracker).timed_body());
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );
    (addr, rx, tracker)
}

/// Waits (bounded) until the one server connection's exchange in progress is in `phase`.
async fn in_phase(tracker: &Tracker, phase: ServerPhase) -> ServerExchangeProgress {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let server = tracker
            .connections()
            .into_iter()
            .find(|c| c.role == Role::Server);
        if let Some(x) = server.and_then(|c| c.exchange) {
            if x.phase == phase {
                return x;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never in {phase:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The next exchange (bounded wait).
async fn next(rx: &mut mpsc::UnboundedReceiver<Phases>) -> Phases {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an exchange within 10 s")
        .expect("the hook is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_head_is_the_request_head_phase() {
    let (addr, mut rx, _tracker) = server().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The head in three parts over 520 ms (a little over 500 ms: the server's first read
    // may complete a little after the first part was sent).
    s.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(260)).await;
    s.write_all(b"x-slow: 1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(260)).await;
    s.write_all(b"\r\n").await.unwrap();
    let (head, len) = read_response(&mut s, 4096, Duration::ZERO).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(len, 2);

    let p = next(&mut rx).await;
    assert!(p.head >= Duration::from_millis(500), "{p:?}");
    assert!(p.handler < Duration::from_millis(50), "{p:?}");
    assert!(p.completed, "{p:?}");
    assert_eq!((p.method.as_str(), p.version.as_str()), ("GET", "1.1"));
    assert_eq!(p.route.as_deref(), Some("/fast"));
    assert_eq!(p.status, Some(200));
    // On a new connection the waiting runs from the accept to the first byte: short here.
    assert!(
        p.waiting.is_some_and(|w| w < Duration::from_millis(200)),
        "{p:?}"
    );
    // The whole head was read, the response written.
    let sent = b"GET /fast HTTP/1.1\r\nhost: x\r\nx-slow: 1\r\n\r\n";
    assert_eq!(p.bytes_read, sent.len() as u64, "{p:?}");
    assert!(p.bytes_written > 2, "{p:?}");
    p.assert_adds_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_is_the_request_body_phase() {
    let (addr, mut rx, tracker) = server().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 8\r\n\r\nabcd")
        .await
        .unwrap();
    // The connection's record shows the exchange waiting for its body.
    let x = in_phase(&tracker, ServerPhase::RequestBody).await;
    assert_eq!((&*x.method, x.route.as_deref()), ("POST", Some("/upload")));
    assert_eq!(x.status, None);
    tokio::time::sleep(Duration::from_millis(420)).await;
    s.write_all(b"efgh").await.unwrap();
    let (head, _) = read_response(&mut s, 4096, Duration::ZERO).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let p = next(&mut rx).await;
    assert!(p.body.unwrap() >= Duration::from_millis(400), "{p:?}");
    // The handler's own time does not include the wait for the body.
    assert!(p.handler < Duration::from_millis(50), "{p:?}");
    assert!(p.head < Duration::from_millis(100), "{p:?}");
    assert_eq!(p.method, "POST");
    assert_eq!(p.route.as_deref(), Some("/upload"));
    p.assert_adds_up();
}

/// A handler that answers at once and streams the request's body back: the client's slow
/// upload happens after the response head, during the response write. The body waiting is
/// the handler's, before its response head; the phases still add up to the total (a wait
/// after the response head is not counted twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_read_after_the_response_head_is_not_counted_twice() {
    let (addr, mut rx, tracker) = server().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 8\r\n\r\nabcd")
        .await
        .unwrap();
    // The response head is out, the body's second half not yet sent.
    in_phase(&tracker, ServerPhase::ResponseWrite).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"efgh").await.unwrap();
    let mut got = Vec::new();
    let mut tmp = [0; 4096];
    while !got.ends_with(b"abcdefgh") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut tmp))
            .await
            .expect("the echo within 10 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));

    let p = next(&mut rx).await;
    assert_eq!(p.route.as_deref(), Some("/echo"));
    assert!(p.write >= Duration::from_millis(300), "{p:?}");
    assert!(p.body.unwrap() < Duration::from_millis(100), "{p:?}");
    p.assert_adds_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_handler_is_the_handler_phase() {
    let (addr, mut rx, tracker) = server().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /items/7 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let x = in_phase(&tracker, ServerPhase::Handler).await;
    assert_eq!(x.route.as_deref(), Some("/items/{id}"));
    let (head, _) = read_response(&mut s, 4096, Duration::ZERO).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let p = next(&mut rx).await;
    assert!(p.handler >= Duration::from_millis(200), "{p:?}");
    assert!(p.body.unwrap() < Duration::from_millis(50), "{p:?}");
    assert!(p.head < Duration::from_millis(100), "{p:?}");
    // The route template, not the path.
    assert_eq!(p.route.as_deref(), Some("/items/{id}"));
    p.assert_adds_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_the_response_write_phase() {
    let (addr, mut rx, tracker) = server().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Nothing read yet: the response waits for the reader.
    let x = in_phase(&tracker, ServerPhase::ResponseWrite).await;
    assert_eq!(x.status, Some(200));
    // 512 KiB in 8 KiB reads 16 ms apart: about a second.
    let (head, len) = read_response(&mut s, 8192, Duration::from_millis(16)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(len, BIG);

    let p = next(&mut rx).await;
    assert!(p.write >= Duration::from_millis(800), "{p:?}");
    // Ended: no exchange in progress any more.
    let server = tracker.get(p.id).expect("still open");
    assert!(server.exchange.is_none(), "{server:?}");
    assert!(p.handler < Duration::from_millis(100), "{p:?}");
    assert!(p.bytes_written >= BIG as u64, "{p:?}");
    p.assert_adds_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pause_is_the_waiting_phase() {
    let (addr, mut rx, _tracker) = server().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut s, 4096, Duration::ZERO).await;
    let first = next(&mut rx).await;
    first.assert_adds_up();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_req = b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n";
    s.write_all(second_req).await.unwrap();
    read_response(&mut s, 4096, Duration::ZERO).await;
    let second = next(&mut rx).await;
    assert_eq!(second.id, first.id, "one connection");
    assert!(
        second
            .waiting
            .is_some_and(|w| w >= Duration::from_millis(300)),
        "{second:?}"
    );
    assert!(second.head < Duration::from_millis(100), "{second:?}");
    // The second exchange's bytes are its own request and response.
    assert_eq!(second.bytes_read, second_req.len() as u64, "{second:?}");
    assert_eq!(second.bytes_written, first.bytes_written, "{second:?}");
    second.assert_adds_up();
}

/// An HTTP/2 client (prior knowledge, h2c) on one plain TCP connection.
async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<hyper::body::Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_concurrent_streams_each_get_their_phases() {
    use http_body_util::BodyExt;
    let (addr, mut rx, _tracker) = server().await;
    let client = h2_client(addr).await;
    let get = |path: &'static str| {
        let mut c = client.clone();
        async move {
            let req = http::Request::get(format!("http://x{path}"))
                .body(http_body_util::Full::default())
                .unwrap();
            let res = c.send_request(req).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            res.into_body().collect().await.unwrap().to_bytes()
        }
    };
    // Two streams at once on the one connection: a handler sleeping 200 ms and a fast one.
    let (slow, fast) = tokio::join!(get("/items/1"), get("/fast"));
    assert_eq!((&slow[..], &fast[..]), (&b"slept"[..], &b"ok"[..]));

    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|p| p.route.clone());
    let (fast, slow) = (&got[0], &got[1]);
    assert_eq!(fast.route.as_deref(), Some("/fast"));
    assert_eq!(slow.route.as_deref(), Some("/items/{id}"));
    assert_eq!(fast.id, slow.id, "one connection");
    for p in [fast, slow] {
        assert_eq!(p.version, "2");
        // A stream has no waiting phase, and its head starts at its HEADERS frame.
        assert_eq!(p.waiting, None, "{p:?}");
        assert_eq!(p.head, Duration::ZERO, "{p:?}");
        assert_eq!(p.status, Some(200));
        assert!(p.completed, "{p:?}");
        p.assert_adds_up();
    }
    assert!(slow.handler >= Duration::from_millis(200), "{slow:?}");
    assert!(fast.handler < Duration::from_millis(50), "{fast:?}");
}

#[cfg(feature = "tonic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_unary_and_failing_calls_record_their_grpc_status() {
    use http_body_util::BodyExt;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tracker = Tracker::builder()
        .hook(Callbacks::new().on_server_exchange(move |ev| {
            let _ = tx.send((Phases::of(ev), ev.grpc_status));
        }))
        .build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("grpc"));
    let mut incoming = listener.incoming();
    let layer = incoming.exchange_layer();
    // A gRPC-shaped service without protobuf: a unary answer with a `grpc-status: 0` trailer,
    // and a failure as tonic writes it (a trailers-only response: `grpc-status` in the head).
    let svc = tower::service_fn(|req: http::Request<tonic::body::Body>| async move {
        if req.uri().path().ends_with("/Fail") {
            return Ok(tonic::Status::not_found("no such thing").into_http());
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = http_body_util::Full::new(hyper::body::Bytes::from_static(b"\0\0\0\0\0"))
            .with_trailers(async move { Some(Ok(trailers)) });
        let mut res = http::Response::new(tonic::body::Body::new(body));
        res.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        Ok::<_, std::convert::Infallible>(res)
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .serve_with_incoming_shutdown(svc, incoming, async move {
                let _ = stop_rx.await;
            }),
    );

    let client = h2_client(addr).await;
    let mut statuses = Vec::new();
    for path in ["/pkg.Svc/Call", "/pkg.Svc/Fail"] {
        let mut c = client.clone();
        let req = http::Request::post(format!("http://x{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(hyper::body::Bytes::from_static(
                b"\0\0\0\0\0",
            )))
            .unwrap();
        let res = c.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
        let (p, grpc) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p.method.as_str(), p.version.as_str()), ("POST", "2"));
        assert_eq!(p.status, Some(200));
        assert!(p.completed, "{p:?}");
        p.assert_adds_up();
        statuses.push(grpc);
    }
    // OK (0) from the trailer, NOT_FOUND (5) from the trailers-only head.
    assert_eq!(statuses, [Some(0), Some(5)]);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// A hook that wants served exchanges but no client request events (as the metrics hook).
struct ServerOnly(mpsc::UnboundedSender<Phases>);

impl conntrack_core::Hook for ServerOnly {
    fn wants_request_events(&self) -> bool {
        false
    }
    fn wants_server_exchanges(&self) -> bool {
        true
    }
    fn on_server_exchange(&self, ev: &ServerExchangeEvent<'_>) {
        let _ = self.0.send(Phases::of(ev));
    }
}

/// Serves `/items/{id}` (sleeping 200 ms) on a tracked listener of `tracker`.
async fn sleepy_server(tracker: &Tracker) -> SocketAddr {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("http"));
    let app = Router::new()
        .route(
            "/items/{id}",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "slept"
            }),
        )
        .layer(ExchangeLayer::new(tracker));
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_are_timed_only_for_a_hook_that_wants_them() {
    // A hook wanting only connection events: the exchange is counted, not timed.
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let tracker = Tracker::builder()
        .hook(Callbacks::new().on_close(move |_| {
            let _ = closed_tx.send(());
        }))
        .build();
    let addr = sleepy_server(&tracker).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /items/1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // In the handler: in flight, with no exchange record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let server = loop {
        let c = tracker
            .connections()
            .into_iter()
            .find(|c| c.role == Role::Server && c.in_flight == 1);
        if let Some(c) = c {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "never in flight");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(server.exchange.is_none(), "{server:?}");
    read_response(&mut s, 4096, Duration::ZERO).await;
    drop(s);
    tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .unwrap();

    // A hook wanting server exchanges and no client request events gets them, untimed body
    // (the default layer): `request_body` is `None`, the handler has it all.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tracker = Tracker::builder().hook(ServerOnly(tx)).build();
    let addr = sleepy_server(&tracker).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /items/1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let x = in_phase(&tracker, ServerPhase::Handler).await;
    assert_eq!(x.route.as_deref(), Some("/items/{id}"));
    read_response(&mut s, 4096, Duration::ZERO).await;
    let p = next(&mut rx).await;
    assert_eq!(p.body, None, "{p:?}");
    assert!(p.handler >= Duration::from_millis(200), "{p:?}");
    p.assert_adds_up();
}
