//! `TracedClient` at the edges of HTTP: `Expect: 100-continue` timings, an upgrade (`101`,
//! `CONNECT`), a body that runs to the connection's close, an
//! HTTP/1 connection handed to the next request before the previous response body is read,
//! and an HTTP/2 request body still going out after its response ended.
#![cfg(all(feature = "hyper", feature = "tls"))]

mod http_common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use conntrack_core::trace::TraceExt;
use conntrack_core::{Recorded, RecordingHook, RequestTrace, Tracker};
use conntrack_tokio::hyper::{HttpsConnector, RequestBody, TracedClient};
use conntrack_tokio::Dialer;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use http_common::{loopback_dialer, names};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;

/// A request body fed from a channel; it ends when the sender is dropped.
struct ChanBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn full(b: &'static [u8]) -> Body {
    Full::new(Bytes::from_static(b)).boxed()
}

fn traced<C>(tracker: &Tracker, connector: C) -> TracedClient<C, Body>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client: Client<C, RequestBody<Body>> =
        Client::builder(TokioExecutor::new()).build(connector);
    TracedClient::new(tracker, client)
}

async fn wait_for(rec: &RecordingHook, name: &'static str, limit: Duration) -> Vec<Recorded> {
    let rec = rec.clone();
    tokio::task::spawn_blocking(move || {
        rec.wait_for(|ev| ev.iter().any(|e| e.name() == name), limit)
    })
    .await
    .unwrap()
    .unwrap_or_else(|ev| panic!("no {name} in {:?}", names(&ev)))
}

/// The error `on_put_idle_conn` carried (`None`: the connection went back to the pool).
async fn put_idle_conn(rec: &RecordingHook) -> Option<conntrack_core::RecordedError> {
    let ev = wait_for(rec, "put_idle_conn", WAIT).await;
    ev.iter()
        .find_map(|e| match e {
            Recorded::PutIdleConn { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap()
}

/// Reads from `stream` into `buf` until `needle` is in it; false at end of stream.
async fn read_until(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut chunk = [0u8; 1024];
    while !buf.windows(needle.len()).any(|w| w == needle) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// `Expect: 100-continue`: the `100 Continue` is the first response byte for the hooks (as in
/// Go), but the timings' first byte is the server's answer after the body went out, so the
/// phases stay in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_timings_stay_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Reading the body sends `100 Continue`; the answer comes after it.
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    // The ring of recent requests is opt-in.
    let tracker = Tracker::builder().recent_requests(8).build();
    let client = traced(&tracker, loopback_dialer(&tracker, "client"));
    let rec = RecordingHook::new();
    let req = Request::post(format!("http://app.test:{}/echo", addr.port()))
        .header("expect", "100-continue")
        .body(full(b"payload"))
        .unwrap();
    let res = client.request(req).traced(rec.clone()).await.unwrap();
    let trace = res.extensions().get::<RequestTrace>().cloned().unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"payload");
    let ev = wait_for(&rec, "put_idle_conn", WAIT).await;
    assert!(names(&ev).contains(&"got_100_continue"), "{:?}", names(&ev));
    let t = trace.timings();
    let (wait, written, first, total) = (
        t.wait.unwrap(),
        t.request_written.unwrap(),
        t.first_byte.unwrap(),
        t.total.unwrap(),
    );
    assert!(
        wait <= written && written <= first && first <= total,
        "{t:?}"
    );
    // The answer came 20 ms after the body was read: the server's wait shows.
    assert!(first - written >= Duration::from_millis(15), "{t:?}");
    let recent = tracker.recent_requests();
    assert_eq!(recent.len(), 1);
    let wait_phase = recent[0].phases.wait.expect("a server wait phase");
    assert!(wait_phase >= Duration::from_millis(15), "{recent:?}");
}

/// A `101 Switching Protocols` answer: the connection leaves HTTP, so it is not reported as
/// going back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_not_put_back_in_the_pool() {
    let addr = raw_server(SWITCHING, false).await;
    let tracker = Tracker::new();
    let client = traced(&tracker, loopback_dialer(&tracker, "client"));
    let rec = RecordingHook::new();
    let req = Request::get(format!("http://app.test:{}/", addr.port()))
        .header("connection", "upgrade")
        .header("upgrade", "foo")
        .body(full(b""))
        .unwrap();
    let mut res = client.request(req).traced(rec.clone()).await.unwrap();
    assert_eq!(res.status(), 101);
    let upgraded = hyper::upgrade::on(&mut res).await.expect("upgraded");
    let put = put_idle_conn(&rec).await;
    let why = put.expect("an upgraded connection does not go back to the pool");
    assert!(why.message.contains("upgraded"), "{why:?}");
    drop(upgraded);
}

/// A `101` answer to an upgrade to the (made-up) protocol `foo`.
const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n";

/// A raw HTTP/1 server for one connection: reads a request head, writes `answer`, then holds
/// the connection until the client goes (an upgraded connection) or closes it (`close`).
async fn raw_server(answer: &'static [u8], close: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        if read_until(&mut s, &mut head, b"\r\n\r\n").await {
            let _ = s.write_all(answer).await;
            if !close {
                let _ = s.read(&mut [0u8; 16]).await;
            }
        }
    });
    addr
}

/// A `101` answer, or a `2xx` answer to `CONNECT`, marks the client's connection `upgraded`,
/// with a hook or without, as `ExchangeLayer` does on the server: a shutdown then counts it
/// busy (it gets the grace period) instead of closing it as idle.
async fn upgrade_marks_the_connection(connect: bool, hook: bool) {
    let answer: &'static [u8] = if connect {
        b"HTTP/1.1 200 OK\r\n\r\n"
    } else {
        SWITCHING
    };
    let addr = raw_server(answer, false).await;
    let tracker = Tracker::new();
    let client = traced(&tracker, loopback_dialer(&tracker, "client"));
    let req = if connect {
        Request::connect(format!("http://app.test:{}", addr.port()))
            .body(full(b""))
            .unwrap()
    } else {
        Request::get(format!("http://app.test:{}/", addr.port()))
            .header("connection", "upgrade")
            .header("upgrade", "foo")
            .body(full(b""))
            .unwrap()
    };
    let what = format!("connect={connect} hook={hook}");
    let fut = client.request(req);
    let mut res = if hook {
        fut.traced(RecordingHook::new()).await
    } else {
        fut.await
    }
    .unwrap();
    assert!(res.status() == 101 || res.status() == 200, "{what}");
    let upgraded = hyper::upgrade::on(&mut res).await.expect("upgraded");
    drop(res);
    let conns = tracker.connections();
    let conn = conns
        .iter()
        .find(|c| c.category.as_ref() == "client")
        .unwrap_or_else(|| panic!("{what}: the client connection, in {conns:?}"));
    assert_eq!(
        conn.state,
        conntrack_core::ConnState::Upgraded,
        "{what}: {conn:?}"
    );
    let report = tracker
        .shutdown(Duration::from_millis(200), tokio::time::sleep)
        .await;
    assert_eq!(report.closed_idle, 0, "{what}: {report:?}");
    assert!(
        report.still_open.iter().any(|c| c.id == conn.id),
        "{what}: the upgraded connection waited for the deadline: {report:?}"
    );
    drop(upgraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_protocols_marks_the_connection_upgraded() {
    upgrade_marks_the_connection(false, true).await;
    upgrade_marks_the_connection(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_tunnel_marks_the_connection_upgraded() {
    upgrade_marks_the_connection(true, true).await;
    upgrade_marks_the_connection(true, false).await;
}

/// An HTTP/1 response with neither `Content-Length` nor chunked encoding ends where the server
/// closes the connection: `put_idle_conn` says the connection does not go back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_runs_to_the_close_is_not_put_back_in_the_pool() {
    let addr = raw_server(b"HTTP/1.1 200 OK\r\n\r\nuntil-eof", true).await;
    let tracker = Tracker::new();
    let client = traced(&tracker, loopback_dialer(&tracker, "client"));
    let rec = RecordingHook::new();
    let req = Request::get(format!("http://app.test:{}/", addr.port()))
        .body(full(b""))
        .unwrap();
    let res = client.request(req).traced(rec.clone()).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"until-eof");
    let put = put_idle_conn(&rec).await;
    let why = put.expect("a connection closed by the server does not go back to the pool");
    assert!(why.message.contains("closes"), "{why:?}");
}

/// HTTP/1: hyper-util may hand a connection to the next request as soon as the previous
/// response has arrived, before its body is read. Ending the previous request then must not
/// take the next one's watch off the connection: the next request still hears
/// `wrote_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_request_leaves_the_next_ones_watch() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_body_tx, got_body_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        // A: answered at once, whole.
        if !read_until(&mut s, &mut buf, b"\r\n\r\n").await {
            return;
        }
        buf.clear();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        // B: its chunked body read to the end, then answered once the test says so.
        if !read_until(&mut s, &mut buf, b"\r\n0\r\n\r\n").await {
            return;
        }
        let _ = got_body_tx.send(());
        let _ = go_rx.await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        let _ = s.read(&mut [0u8; 16]).await;
    });
    let tracker = Tracker::new();
    let client = traced(&tracker, loopback_dialer(&tracker, "client"));
    let (rec_a, rec_b) = (RecordingHook::new(), RecordingHook::new());
    let uri = |path: &str| format!("http://app.test:{}{path}", addr.port());
    let req_a = Request::get(uri("/a")).body(full(b"")).unwrap();
    let res_a = client.request(req_a).traced(rec_a.clone()).await.unwrap();
    // hyper-util puts the connection back in its pool in the background once A's response is
    // in; there is no signal for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let req_b = Request::post(uri("/b")).body(ChanBody(rx).boxed()).unwrap();
    let b = {
        let (client, rec_b) = (client.clone(), rec_b.clone());
        tokio::spawn(async move {
            let res = client.request(req_b).traced(rec_b).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        })
    };
    let ev = wait_for(&rec_b, "wrote_headers", WAIT).await;
    let reused = ev.iter().find_map(|e| match e {
        Recorded::GotConn { reused, .. } => Some(*reused),
        _ => None,
    });
    assert_eq!(reused, Some(true), "B went over A's connection");
    drop(res_a); // A ends (its body never read)
    tx.send(Bytes::from_static(b"x")).await.unwrap();
    drop(tx);
    tokio::time::timeout(WAIT, got_body_rx)
        .await
        .expect("the server read B's body")
        .unwrap();
    wait_for(&rec_b, "wrote_request", WAIT).await;
    go_tx.send(()).unwrap();
    let body = tokio::time::timeout(WAIT, b).await.unwrap().unwrap();
    assert_eq!(&body[..], b"ok");
    let a_after_b: Vec<_> = rec_a
        .events()
        .iter()
        .filter_map(Recorded::request)
        .map(|r| r.uri.to_string())
        .collect();
    assert!(a_after_b.iter().all(|u| u.ends_with("/a")), "{a_after_b:?}");
}

/// HTTP/2 over TLS: the server answers before the request body is done; the body goes out after
/// the response ended. The request's hooks hear nothing more once it ended, and its timings
/// never put the request's end after its total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_reported_after_a_request_ends() {
    let (mut server_config, mut client_config) =
        conntrack_testkit::tls::self_signed(&["localhost"], rustls::DEFAULT_VERSIONS);
    server_config.alpn_protocols = vec![b"h2".to_vec()];
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, drained) = (acceptor.clone(), drained_tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let drained = drained.clone();
                    async move {
                        // Answer at once; read the body in the background.
                        tokio::spawn(async move {
                            let _ = req.into_body().collect().await;
                            let _ = drained.send(()).await;
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let tracker = Tracker::new();
    let https =
        HttpsConnector::from_dialer(loopback_dialer(&tracker, "client"), Arc::new(client_config));
    let client = traced(&tracker, https);
    let rec = RecordingHook::new();
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let req = Request::post(format!("https://localhost:{}/", addr.port()))
        .body(ChanBody(rx).boxed())
        .unwrap();
    let res = client.request(req).traced(rec.clone()).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let trace = res.extensions().get::<RequestTrace>().cloned().unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    let at_end = names(&rec.events());
    // The body goes out now, after the request ended.
    tx.send(Bytes::from_static(b"x")).await.unwrap();
    drop(tx);
    tokio::time::timeout(WAIT, drained_rx.recv())
        .await
        .expect("the server read the body");
    // The late body write has been made; give its report (if any) the time to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(names(&rec.events()), at_end);
    let t = trace.timings();
    let total = t.total.expect("ended");
    assert!(t.request_written.is_none_or(|w| w <= total), "{t:?}");
}

/// `Expect: 100-continue` answered with a final status and no `100`: as in Go, the held body
/// is not sent, the request counts as written (without it), and the connection is reported as
/// not going back to the pool; the client does not wait out its continue timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_answer_before_continue_leaves_the_body_unsent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (rest_tx, rest_rx) = oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        if !read_until(&mut s, &mut head, b"\r\n\r\n").await {
            return;
        }
        s.write_all(b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        // Whatever else the client sends, until it closes (bounded).
        let mut rest = head.split_off(head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
        let mut chunk = [0u8; 1024];
        let _ = tokio::time::timeout(WAIT, async {
            while let Ok(n @ 1..) = s.read(&mut chunk).await {
                rest.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let _ = rest_tx.send(rest);
    });
    let tracker = Tracker::new();
    let client = traced(&tracker, loopback_dialer(&tracker, "client"))
        .expect_continue_timeout(Duration::from_secs(30));
    let rec = RecordingHook::new();
    let req = Request::post(format!("http://app.test:{}/", addr.port()))
        .header("expect", "100-continue")
        .body(full(b"payload"))
        .unwrap();
    let res = tokio::time::timeout(WAIT, client.request(req).traced(rec.clone()))
        .await
        .expect("answered without waiting out the continue timeout")
        .unwrap();
    assert_eq!(res.status(), 417);
    res.into_body().collect().await.unwrap();
    let ev = wait_for(&rec, "put_idle_conn", WAIT).await;
    let n = names(&ev);
    assert!(n.contains(&"wait_100_continue"), "{n:?}");
    assert!(n.contains(&"wrote_request"), "{n:?}");
    assert!(!n.contains(&"got_100_continue"), "{n:?}");
    let put = ev
        .iter()
        .find_map(|e| match e {
            Recorded::PutIdleConn { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap();
    assert!(put.is_some(), "the connection does not go back to the pool");
    let rest = tokio::time::timeout(WAIT, rest_rx).await.unwrap().unwrap();
    assert!(
        !rest.windows(7).any(|w| w == b"payload"),
        "the body went out after the answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    tokio::time::timeout(WAIT, tracker.drained())
        .await
        .expect("the connection closes");
}

/// HTTP/2 with prior knowledge (hyper-util's `http2_only`, no ALPN): with the client told
/// (`TracedClient::http2_only`) or the request's version set to HTTP/2, the request is traced
/// as HTTP/2 from the start: an `Expect: 100-continue` body is not held back, nothing waits
/// for a `100 Continue`, and no `put_idle_conn` is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_traced_as_http2() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    for told in [true, false] {
        let tracker = Tracker::new();
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(true);
        let client: Client<Dialer, RequestBody<Body>> =
            builder.build(loopback_dialer(&tracker, "client"));
        let client = TracedClient::new(&tracker, client)
            .http2_only(told)
            .expect_continue_timeout(Duration::from_secs(30));
        let rec = RecordingHook::new();
        let mut req = Request::post(format!("http://app.test:{}/", addr.port()))
            .header("expect", "100-continue")
            .body(full(b"payload"))
            .unwrap();
        if !told {
            *req.version_mut() = http::Version::HTTP_2;
        }
        let res = tokio::time::timeout(WAIT, client.request(req).traced(rec.clone()))
            .await
            .expect("the body was not held for a 100 Continue")
            .unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"payload");
        let ev = rec.events();
        let n: Vec<_> = names(&ev)
            .into_iter()
            .skip_while(|n| *n != "got_conn")
            .collect();
        assert_eq!(
            n,
            [
                "got_conn",
                "wrote_headers",
                "wrote_request",
                "got_first_response_byte"
            ],
            "told: {told}"
        );
    }
}
