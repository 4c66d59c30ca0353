//! A tracker shutdown drives the servers' own graceful shutdown (`tracker.shutdown_signal()`)
//! and loses nothing: on axum, on a hyper-util server and on tonic (HTTP/1 allowed), with responses being produced and
//! written when it begins (64 KiB, 1 MiB streamed slowly, `204`; HTTP/1.1 keep-alive and
//! HTTP/2), every client receives its whole response and then a clean close, idle keep-alive
//! connections close at once, and the report counts them. An upgraded connection keeps
//! working through the grace period and is aborted at the deadline.
//!
//! Only the server side is tracked; the clients are plain sockets (HTTP/1, read to the end of
//! stream: a reset would fail the read) and hyper's own HTTP/2 client connection.
#![cfg(all(feature = "axum", feature = "hyper", feature = "tonic"))]

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use conntrack_core::{
    render, CloseReason, ConnState, ConnectionInfo, ListenerConfig, ShutdownReport, Tracker,
};
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::{Listener, TrackedConnectInfo};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// Generous bound for anything that should happen promptly.
const WAIT: Duration = Duration::from_secs(15);
/// The grace period of the lossless scenario: far longer than it needs.
const GRACE: Duration = Duration::from_secs(30);
/// The grace period without the signal, which the HTTP/2 connections last out.
const UNWIRED_GRACE: Duration = Duration::from_secs(3);
const SIZE_64K: usize = 64 * 1024;
const SIZE_1M: usize = 1024 * 1024;
/// The 1 MiB body goes out in chunks of this size, paced.
const CHUNK: usize = 64 * 1024;

/// The byte at `i` of every response body: a pattern a lost or doubled chunk would break.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

type Body = BoxBody<Bytes, Infallible>;

/// What the handlers share with the test: they report what they entered, and the held ones
/// wait for `release`.
#[derive(Clone)]
struct Gate {
    entered: mpsc::UnboundedSender<&'static str>,
    release: watch::Receiver<bool>,
}

impl Gate {
    async fn wait(&self) {
        let mut r = self.release.clone();
        let _ = r.wait_for(|go| *go).await;
    }
}

/// A body fed by a channel: the 1 MiB response, written while it is produced.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// The application, the same for both servers.
async fn respond(path: &str, gate: Gate) -> http::Response<Body> {
    let full = |b: Vec<u8>| Full::new(Bytes::from(b)).boxed();
    match path {
        "/hello" => http::Response::new(full(b"hello".to_vec())),
        "/64k" => {
            let _ = gate.entered.send("64k");
            gate.wait().await;
            http::Response::new(full(pattern(SIZE_64K)))
        }
        "/204" => {
            let _ = gate.entered.send("204");
            gate.wait().await;
            http::Response::builder()
                .status(204)
                .body(Empty::new().boxed())
                .unwrap()
        }
        "/1m" => {
            // The first chunk goes out at once; the rest, paced, once the test releases it.
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                let body = Bytes::from(pattern(SIZE_1M));
                let _ = tx.send(body.slice(..CHUNK)).await;
                gate.wait().await;
                for at in (CHUNK..SIZE_1M).step_by(CHUNK) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if tx.send(body.slice(at..at + CHUNK)).await.is_err() {
                        return;
                    }
                }
            });
            http::Response::new(ChannelBody(rx).boxed())
        }
        _ => http::Response::builder()
            .status(404)
            .body(Empty::new().boxed())
            .unwrap(),
    }
}

/// Which server serves the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Axum,
    HyperUtil,
    Tonic,
    /// axum given no shutdown signal: the tracker closes HTTP/1 connections itself, idle ones
    /// at once and busy ones once their last response has been written; it leaves HTTP/2
    /// ones (multiplexed: hyper buffers their frames) to the deadline.
    AxumUnwired,
}

/// Serves the application with `server` on a tracked listener, wired to the tracker's
/// shutdown signal; returns the address and the server task (it ends after the graceful
/// shutdown).
async fn start(
    server: Server,
    tracker: &Tracker,
    gate: Gate,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("http"));
    let task = match server {
        Server::AxumUnwired => {
            let app = Router::new()
                .fallback(move |req: axum::extract::Request| {
                    let gate = gate.clone();
                    async move { respond(req.uri().path(), gate).await }
                })
                .layer(ExchangeLayer::new(tracker));
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
            )
            .into_future();
            tokio::spawn(async move { serve.await.unwrap() })
        }
        Server::Axum => {
            let app = Router::new()
                .fallback(move |req: axum::extract::Request| {
                    let gate = gate.clone();
                    async move { respond(req.uri().path(), gate).await }
                })
                .layer(ExchangeLayer::new(tracker));
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
            )
            // The one line.
            .with_graceful_shutdown(tracker.shutdown_signal())
            .into_future();
            tokio::spawn(async move { serve.await.unwrap() })
        }
        Server::Tonic => {
            let mut incoming = listener.incoming();
            let layer = incoming.exchange_layer();
            let app = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
                let gate = gate.clone();
                async move {
                    let res = respond(req.uri().path(), gate).await;
                    Ok::<_, Infallible>(res.map(tonic::body::Body::new))
                }
            });
            let serve = tonic::transport::Server::builder()
                .accept_http1(true)
                .layer(layer)
                // The one line.
                .serve_with_incoming_shutdown(app, incoming, tracker.shutdown_signal());
            tokio::spawn(async move { serve.await.unwrap() })
        }
        Server::HyperUtil => {
            let tracker = tracker.clone();
            tokio::spawn(async move {
                use hyper_util::server::conn::auto;
                use hyper_util::server::graceful::GracefulShutdown;
                use tower::Layer;
                let graceful = GracefulShutdown::new();
                let builder = auto::Builder::new(TokioExecutor::new());
                // The one line: one signal, kept across the accept loop.
                let mut signal = pin!(tracker.shutdown_signal());
                loop {
                    let stream = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                        () = &mut signal => break,
                    };
                    let gate = gate.clone();
                    let app = tower::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let gate = gate.clone();
                            async move { Ok::<_, Infallible>(respond(req.uri().path(), gate).await) }
                        },
                    );
                    let svc = ExchangeLayer::for_connection(&tracker, stream.id()).layer(app);
                    let conn = builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            hyper_util::service::TowerToHyperService::new(svc),
                        )
                        .into_owned();
                    tokio::spawn(graceful.watch(conn));
                }
                // New connections are refused from now on, not left in the backlog.
                drop(listener);
                graceful.shutdown().await;
            })
        }
    };
    (addr, task)
}

/// A parsed HTTP/1 response read to the end of stream.
#[derive(Debug)]
struct H1Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Splits one HTTP/1 response off `raw` (head, then a body by `content-length`, chunked, or
/// none), or `None` if `raw` does not hold a whole one. Returns the rest.
fn parse_h1(raw: &[u8]) -> Option<(H1Response, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let lower = head.to_ascii_lowercase();
    let header = |name: &str| {
        lower
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let mut rest = &raw[end..];
    let body = if let Some(len) = header("content-length") {
        let len: usize = len.trim().parse().unwrap();
        if rest.len() < len {
            return None;
        }
        let b = rest[..len].to_vec();
        rest = &rest[len..];
        b
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut b = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            rest = &rest[line_end + 2..];
            if rest.len() < size + 2 {
                return None;
            }
            b.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
            if size == 0 {
                break;
            }
        }
        b
    } else {
        Vec::new()
    };
    Some((H1Response { status, head, body }, rest))
}

/// One HTTP/1.1 keep-alive request on a new connection, read to the end of stream: the whole
/// response, then a clean close (a reset fails the read). `started` is told once the body's
/// first bytes have arrived.
async fn h1_request(
    addr: SocketAddr,
    path: &'static str,
    started: mpsc::UnboundedSender<&'static str>,
) -> H1Response {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let mut told = false;
    loop {
        let n = s
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("{path}: the connection failed instead of closing: {e}"));
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if !told {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                if raw.len() > end + 4 {
                    told = true;
                    let _ = started.send(path);
                }
            }
        }
    }
    let (res, rest) = parse_h1(&raw)
        .unwrap_or_else(|| panic!("{path}: incomplete response ({} bytes)", raw.len()));
    assert!(rest.is_empty(), "{path}: bytes after the response");
    res
}

/// An idle HTTP/1.1 keep-alive connection: one quick request, then it waits. `ready` is told
/// once the response has arrived; returns when the server closes it (cleanly, or this fails).
async fn h1_idle(addr: SocketAddr, ready: mpsc::UnboundedSender<&'static str>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0; 1024];
    while parse_h1(&raw).is_none() {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response");
        raw.extend_from_slice(&buf[..n]);
    }
    let (res, _) = parse_h1(&raw).unwrap();
    assert_eq!((res.status, &res.body[..]), (200, &b"hello"[..]));
    let _ = ready.send("h1 idle");
    let n = s
        .read(&mut buf)
        .await
        .expect("an idle keep-alive connection is closed cleanly");
    assert_eq!(n, 0, "nothing more is sent on an idle connection");
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 connection (prior knowledge) and a receiver of how its connection task ended.
async fn h2_connect(addr: SocketAddr) -> (H2Sender, tokio::sync::oneshot::Receiver<String>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let res = conn.await;
        let _ = tx.send(match res {
            Ok(()) => "clean".to_owned(),
            Err(e) => format!("failed: {e:?}"),
        });
    });
    (sender, rx)
}

/// One HTTP/2 request: the status and the whole body; `started` is told once its first data
/// frame has arrived.
async fn h2_request(
    mut sender: H2Sender,
    path: &'static str,
    started: mpsc::UnboundedSender<&'static str>,
) -> (u16, Vec<u8>) {
    sender.ready().await.unwrap();
    let req = http::Request::get(format!("http://localhost{path}"))
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|e| panic!("h2 {path}: body failed: {e}"));
        if let Ok(data) = frame.into_data() {
            if out.is_empty() && !data.is_empty() {
                let _ = started.send(path);
            }
            out.extend_from_slice(&data);
        }
    }
    (status, out)
}

/// Receives `n` messages from `rx` (bounded in time), returning them sorted.
async fn receive(
    rx: &mut mpsc::UnboundedReceiver<&'static str>,
    n: usize,
    what: &str,
) -> Vec<&'static str> {
    let mut got = Vec::new();
    while got.len() < n {
        match timeout(WAIT, rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            _ => panic!("{what}: got only {got:?}"),
        }
    }
    got.sort_unstable();
    got
}

async fn lossless_shutdown(server: Server) {
    let tracker = Tracker::new();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let gate = Gate {
        entered: entered_tx,
        release: release_rx,
    };
    let (addr, server_task) = start(server, &tracker, gate).await;

    // Two idle keep-alive connections, HTTP/1.1 and HTTP/2, each after one request.
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let h1_idle = tokio::spawn(h1_idle(addr, ready_tx.clone()));
    let (mut h2_idle, h2_idle_end) = h2_connect(addr).await;
    let (_, hello) = h2_request(h2_idle.clone(), "/hello", ready_tx.clone()).await;
    assert_eq!(hello, b"hello");
    receive(&mut ready, 2, "idle connections ready").await;
    // (`ready` was told "/hello" by the HTTP/2 request and "h1 idle" by the HTTP/1 one.)

    // Four busy connections: three HTTP/1.1 ones, one request each, and one HTTP/2 connection
    // with the three requests at once.
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let h1 = ["/64k", "/204", "/1m"].map(|p| tokio::spawn(h1_request(addr, p, started_tx.clone())));
    let wired = server != Server::AxumUnwired;
    let grace = if wired { GRACE } else { UNWIRED_GRACE };
    let (h2_busy, h2_busy_end) = h2_connect(addr).await;
    let mut h2_busy_end = Some(h2_busy_end);
    let h2 = ["/64k", "/204", "/1m"]
        .map(|p| tokio::spawn(h2_request(h2_busy.clone(), p, started_tx.clone())));
    let busy = 4;
    // The held handlers have been entered, and the 1 MiB bodies are being written.
    assert_eq!(
        receive(&mut entered, 4, "handlers entered").await,
        ["204", "204", "64k", "64k"]
    );
    assert_eq!(
        receive(&mut started, 2, "1 MiB bodies started").await,
        ["/1m", "/1m"]
    );
    let before = tracker.connections();
    assert_eq!(before.len(), busy + 2, "{before:?}");
    assert_eq!(
        before
            .iter()
            .filter(|c| c.state == ConnState::Active)
            .count(),
        busy,
        "{before:?}"
    );

    let shutdown = tokio::spawn({
        let tracker = tracker.clone();
        async move { tracker.shutdown(grace, tokio::time::sleep).await }
    });
    // The idle connections close at once, while the busy ones are still held.
    timeout(WAIT, h1_idle)
        .await
        .expect("the idle HTTP/1.1 connection closes at once")
        .unwrap();
    let mut h2_idle_end = Some(h2_idle_end);
    if wired {
        let end = timeout(WAIT, h2_idle_end.take().unwrap())
            .await
            .expect("the idle HTTP/2 connection closes at once")
            .unwrap();
        assert_eq!(end, "clean", "{server:?}: idle HTTP/2 connection");
        assert!(
            h2_idle.ready().await.is_err(),
            "the idle HTTP/2 connection is closed"
        );
    }
    // A connection made now is refused, not left waiting: by the kernel once the server has
    // dropped its listener, or accepted and closed at once by the tracked listener (counted
    // as rejected) while a server without the signal still accepts.
    match timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("bounded")
    {
        Err(_) => {}
        Ok(mut late) => {
            let read = timeout(Duration::from_secs(5), late.read(&mut [0u8; 1]))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{server:?}: a connection made after the shutdown began was left waiting"
                    )
                });
            assert!(matches!(read, Ok(0) | Err(_)), "{server:?}: {read:?}");
        }
    }
    // (The server's end of the HTTP/2 one goes once it reads the client's close; without the
    // signal it stays to the deadline.)
    let left = if wired { busy } else { busy + 1 };
    let start = std::time::Instant::now();
    while tracker.len() != left {
        assert!(
            start.elapsed() < WAIT,
            "{server:?}: only the busy ones are left: {:?}",
            tracker.connections()
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tracker
            .connections()
            .iter()
            .filter(|c| c.in_flight > 0)
            .count(),
        busy
    );

    // The handlers answer now, after the shutdown began; the 1 MiB bodies go on. The server's
    // connection tasks were woken by its shutdown signal, but nothing outside shows when each
    // has run and turned keep-alive off (which puts `Connection: close` on its answer): on a
    // loaded machine the test's own task could get here first. A bounded pause lets them run.
    if wired {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    release.send(true).unwrap();
    let want = |p: &str| match p {
        "/64k" => (200, pattern(SIZE_64K)),
        "/204" => (204, Vec::new()),
        _ => (200, pattern(SIZE_1M)),
    };
    for (path, task) in ["/64k", "/204", "/1m"].into_iter().zip(h1) {
        let res = timeout(WAIT, task)
            .await
            .expect("HTTP/1.1 response")
            .unwrap();
        let (status, body) = want(path);
        assert_eq!(
            res.status, status,
            "{server:?} HTTP/1.1 {path}: {}",
            res.head
        );
        assert!(
            res.body == body,
            "{server:?} HTTP/1.1 {path}: {} of {} bytes",
            res.body.len(),
            body.len()
        );
        if path != "/1m" && wired {
            // Answered during the graceful shutdown: the server says it closes.
            assert!(
                res.head.to_ascii_lowercase().contains("connection: close"),
                "{server:?} HTTP/1.1 {path}: {}",
                res.head
            );
        }
    }
    for (path, task) in ["/64k", "/204", "/1m"].into_iter().zip(h2) {
        let (status, body) = timeout(WAIT, task).await.expect("HTTP/2 response").unwrap();
        let (want_status, want_body) = want(path);
        assert_eq!(status, want_status, "{server:?} HTTP/2 {path}");
        assert!(
            body == want_body,
            "{server:?} HTTP/2 {path}: {} of {} bytes",
            body.len(),
            want_body.len()
        );
    }
    if wired {
        let end = timeout(WAIT, h2_busy_end.take().unwrap())
            .await
            .expect("HTTP/2 close")
            .unwrap();
        assert_eq!(end, "clean", "{server:?}: busy HTTP/2 connection");
    }

    let report: ShutdownReport = timeout(grace + WAIT, shutdown)
        .await
        .expect("shutdown")
        .unwrap();
    let closed = tracker.recently_closed();
    assert_eq!(closed.len(), busy + 2);
    for c in &closed {
        assert_eq!(c.info.in_flight, 0, "{server:?}: {c:?}");
    }
    if wired {
        assert!(report.drained, "{server:?}: {report:?}");
        assert!(report.still_open.is_empty(), "{server:?}: {report:?}");
        assert_eq!(
            (report.closed_idle, report.closed_busy),
            (2, busy),
            "{server:?}: {report:?}"
        );
        timeout(WAIT, server_task)
            .await
            .expect("the server ends after its graceful shutdown")
            .unwrap();
        for c in &closed {
            assert_ne!(c.reason, CloseReason::ShutdownDeadline, "{server:?}: {c:?}");
        }
    } else {
        // The two HTTP/2 connections, their responses written, were left to the deadline.
        assert!(!report.drained, "{report:?}");
        assert_eq!(
            (report.closed_idle, report.closed_busy),
            (1, 3),
            "{report:?}"
        );
        assert_eq!(report.still_open.len(), 2, "{report:?}");
        assert!(
            report.still_open.iter().all(|c| c.in_flight == 0),
            "{report:?}"
        );
        let at_deadline = closed
            .iter()
            .filter(|c| c.reason == CloseReason::ShutdownDeadline)
            .count();
        assert_eq!(at_deadline, 2, "{closed:?}");
        for end in [h2_idle_end.take().unwrap(), h2_busy_end.take().unwrap()] {
            timeout(WAIT, end)
                .await
                .expect("closed at the deadline")
                .unwrap();
        }
        server_task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_shutdown_loses_no_response() {
    lossless_shutdown(Server::Axum).await;
}

/// Without the signal the tracker closes the HTTP/1 connections itself and still cuts no
/// response short (an exchange ends once its response has been written); it leaves the HTTP/2
/// ones, whose frames hyper buffers, to the deadline, their responses whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwired_axum_shutdown_loses_no_response() {
    lossless_shutdown(Server::AxumUnwired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_shutdown_loses_no_response() {
    lossless_shutdown(Server::Tonic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_shutdown_loses_no_response() {
    lossless_shutdown(Server::HyperUtil).await;
}

/// The handler of `/up`: `101 Switching Protocols`, then an echo of the upgraded connection.
async fn upgrade(req: axum::extract::Request) -> http::Response<axum::body::Body> {
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0; 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    http::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(axum::body::Body::empty())
        .unwrap()
}

/// Waits (bounded) until the tracker's one connection satisfies `pred`.
async fn until(tracker: &Tracker, pred: impl Fn(&ConnectionInfo) -> bool) -> ConnectionInfo {
    let start = std::time::Instant::now();
    loop {
        let c = tracker.connections().pop().expect("the server connection");
        if pred(&c) {
            return c;
        }
        assert!(start.elapsed() < WAIT, "stuck: {c:?}");
        tokio::task::yield_now().await;
    }
}

async fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).await?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connection_keeps_working_until_the_deadline() {
    const GRACE: Duration = Duration::from_secs(2);
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("ws"));
    let app = Router::new()
        .route("/up", axum::routing::get(upgrade))
        .layer(ExchangeLayer::new(&tracker));
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .with_graceful_shutdown(tracker.shutdown_signal())
        .into_future(),
    );

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /up HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed during the 101's head"
        );
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(echo(&mut s, b"before").await.unwrap(), b"before");
    // The 101's exchange has ended (its response was written); the connection is upgraded.
    let info = until(&tracker, |c| c.in_flight == 0).await;
    assert_eq!(
        (info.state, info.requests),
        (ConnState::Upgraded, 1),
        "{info:?}"
    );
    // Every view shows the state.
    assert!(render::text_table(std::slice::from_ref(&info)).contains("upgraded"));
    assert_eq!(serde_json::to_value(&info).unwrap()["state"], "upgraded");
    let page = render::html(
        &render::Snapshot::of(&tracker),
        &render::HtmlOptions::default(),
    );
    assert!(page.contains("<td>upgraded</td>"), "{page}");

    let shutdown = tokio::spawn({
        let tracker = tracker.clone();
        async move { tracker.shutdown(GRACE, tokio::time::sleep).await }
    });
    // The server stops at once (the upgraded connection is no longer hyper's) ...
    timeout(WAIT, server)
        .await
        .expect("axum's graceful shutdown ends")
        .unwrap()
        .unwrap();
    assert!(tracker.is_shutting_down());
    // ... while the upgraded connection keeps working through the grace period.
    for i in 0..5 {
        let msg = format!("during {i}");
        assert_eq!(
            echo(&mut s, msg.as_bytes())
                .await
                .expect("echo during the grace period"),
            msg.as_bytes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tracker.len(), 1, "still open during the grace period");
    let report = timeout(WAIT, shutdown).await.expect("shutdown").unwrap();
    assert!(!report.drained, "{report:?}");
    assert!(report.elapsed >= GRACE, "{report:?}");
    assert_eq!(report.still_open.len(), 1, "{report:?}");
    assert_eq!(report.still_open[0].id, info.id);
    assert_eq!(report.still_open[0].state, ConnState::Upgraded);
    assert_eq!(
        (report.closed_idle, report.closed_busy),
        (0, 0),
        "{report:?}"
    );
    // Aborted at the deadline: the client sees the connection end.
    let mut b = [0; 16];
    let end = timeout(WAIT, s.read(&mut b))
        .await
        .expect("the client sees the close");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    let closed = tracker.recently_closed();
    assert_eq!(closed[0].info.id, info.id);
    assert_eq!(closed[0].reason, CloseReason::ShutdownDeadline);
}
