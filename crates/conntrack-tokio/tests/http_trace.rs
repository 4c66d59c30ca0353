//! `TracedClient` against real servers on loopback: the exact httptrace event sequences of a
//! new connection, a reused one, `Expect: 100-continue`, 103 Early Hints, a server closing
//! mid-response and a refused connection; and per-request isolation of hooks.
#![cfg(feature = "hyper")]

mod http_common;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use conntrack_core::trace::TraceExt;
use conntrack_core::{ConnectionId, Recorded, RecordingHook, Tracker};
use conntrack_tokio::hyper::{RequestBody, TracedClient};
use conntrack_tokio::Dialer;
use http_body_util::{BodyExt, Full};
use http_common::{loopback_dialer, names};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Barrier;

const WAIT: Duration = Duration::from_secs(10);

/// A name that the test resolver maps to 127.0.0.1, so the dial has DNS events.
const HOST: &str = "app.test";

type Body = Full<Bytes>;

/// A dialer resolving every name to 127.0.0.1.
fn dialer(tracker: &Tracker) -> Dialer {
    loopback_dialer(tracker, "client")
}

fn traced_client<C>(tracker: &Tracker, connector: C) -> TracedClient<C, Body>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client: Client<C, RequestBody<Body>> =
        Client::builder(TokioExecutor::new()).build(connector);
    TracedClient::new(tracker, client)
}

/// A hyper server (HTTP/1 and HTTP/2) on loopback: `/` answers "hello", `/echo` echoes the
/// body (reading it sends `100 Continue` to a request that expects it), `/pair` answers once
/// two `/pair` requests are in.
async fn hyper_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pair = Arc::new(Barrier::new(2));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let pair = Arc::clone(&pair);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&pair)));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn handle(req: Request<Incoming>, pair: Arc<Barrier>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/pair" {
        pair.wait().await;
    }
    if req.uri().path() == "/echo" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes);
        return Ok(Response::new(Full::new(body.unwrap_or_default())));
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// A raw TCP server that reads one request head and writes `reply`, then closes (`close`) or
/// waits for the client to close.
async fn raw_server(reply: &'static [u8], close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(reply).await;
        if close {
            let _ = stream.shutdown().await;
            return;
        }
        while let Ok(1..) = stream.read(&mut buf).await {}
    });
    addr
}

fn uri(addr: SocketAddr, path: &str) -> hyper::Uri {
    format!("http://{HOST}:{}{path}", addr.port())
        .parse()
        .unwrap()
}

/// The event names from `got_conn` on (the HTTP part of a request's events).
fn from_got_conn(events: &[Recorded]) -> Vec<&'static str> {
    names(events)
        .into_iter()
        .skip_while(|n| *n != "got_conn")
        .collect()
}

fn got_conn(events: &[Recorded]) -> (ConnectionId, bool, bool, Duration) {
    events
        .iter()
        .find_map(|e| match e {
            Recorded::GotConn {
                connection,
                reused,
                was_idle,
                idle_time,
                ..
            } => Some((connection.id, *reused, *was_idle, *idle_time)),
            _ => None,
        })
        .expect("got_conn")
}

fn has(name: &'static str) -> impl FnMut(&[Recorded]) -> bool {
    move |ev| ev.iter().any(|e| e.name() == name)
}

async fn wait(rec: &RecordingHook, name: &'static str) -> Vec<Recorded> {
    let rec = rec.clone();
    tokio::task::spawn_blocking(move || rec.wait_for(has(name), WAIT))
        .await
        .unwrap()
        .unwrap_or_else(|ev| panic!("no {name} in {:?}", names(&ev)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connection_then_reused_after_a_pause() {
    let addr = hyper_server().await;
    let tracker = Tracker::new();
    let client = traced_client(&tracker, dialer(&tracker));

    let first = RecordingHook::new();
    let res = client
        .get(uri(addr, "/"))
        .traced(first.clone())
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello");
    let events = first.events();
    assert_eq!(
        names(&events),
        [
            "get_conn",
            "dns_start",
            "dns_done",
            "connect_start",
            "connect_done",
            "dial",
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "got_first_response_byte",
            "put_idle_conn",
        ]
    );
    let Recorded::GetConn { host_port, request } = &events[0] else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(*host_port, format!("{HOST}:{}", addr.port()));
    assert_eq!(&*request.method, "GET");
    let fields: Vec<(Vec<u8>, Vec<u8>)> = events
        .iter()
        .filter_map(|e| match e {
            Recorded::WroteHeaderField { name, value, .. } => Some((name.clone(), value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        fields,
        [(
            b"host".to_vec(),
            format!("{HOST}:{}", addr.port()).into_bytes()
        )]
    );
    let (id, reused, was_idle, idle) = got_conn(&events);
    assert!(!reused && !was_idle && idle.is_zero());
    assert!(events.iter().all(|e| e.error().is_none()), "{events:?}");
    let info = tracker.get(id).expect("the connection is pooled");
    assert_eq!((info.requests, info.in_flight), (1, 0));

    // A known pause, then a second request: the pooled connection, idle for about the pause.
    let pause = Duration::from_millis(300);
    tokio::time::sleep(pause).await;
    let second = RecordingHook::new();
    let res = client
        .get(uri(addr, "/"))
        .traced(second.clone())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let events = second.events();
    assert_eq!(
        names(&events),
        [
            "get_conn",
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "got_first_response_byte",
            "put_idle_conn",
        ]
    );
    let (id2, reused, was_idle, idle) = got_conn(&events);
    assert_eq!(id2, id);
    assert!(reused && was_idle);
    assert!(
        idle >= pause - Duration::from_millis(50) && idle < pause + Duration::from_secs(5),
        "idle_time {idle:?} for a pause of {pause:?}"
    );
    assert_eq!(tracker.get(id).unwrap().requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue() {
    let addr = hyper_server().await;
    let tracker = Tracker::new();
    // A long timeout: the body must go out on the 100, not on the timer.
    let client = traced_client(&tracker, dialer(&tracker)).expect_continue_timeout(WAIT * 6);
    let rec = RecordingHook::new();
    let req = Request::post(uri(addr, "/echo"))
        .header("expect", "100-continue")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let res = client.request(req).traced(rec.clone()).await.unwrap();
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "payload"
    );
    let events = rec.events();
    let http = from_got_conn(&events);
    assert_eq!(
        http,
        [
            "got_conn",
            "wrote_headers",
            "wait_100_continue",
            "got_first_response_byte",
            "got_100_continue",
            "got_1xx_response",
            "wrote_request",
            "put_idle_conn",
        ]
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Recorded::Got1xxResponse { status: 100, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_before_200() {
    let addr = raw_server(
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
    )
    .await;
    let tracker = Tracker::new();
    let client = traced_client(&tracker, dialer(&tracker));
    let rec = RecordingHook::new();
    let res = client
        .get(uri(addr, "/"))
        .traced(rec.clone())
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    let events = rec.events();
    let http = from_got_conn(&events);
    assert_eq!(
        http,
        [
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "got_first_response_byte",
            "got_1xx_response",
            "put_idle_conn",
        ]
    );
    let hints = events
        .iter()
        .find_map(|e| match e {
            Recorded::Got1xxResponse {
                status, headers, ..
            } => Some((*status, headers.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        hints,
        (
            103,
            vec![(b"link".to_vec(), b"</style.css>; rel=preload".to_vec())]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_mid_response() {
    let addr = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
        true,
    )
    .await;
    let all = RecordingHook::new();
    let tracker = Tracker::builder().hook(all.clone()).build();
    let client = traced_client(&tracker, dialer(&tracker));
    let rec = RecordingHook::new();
    let res = client
        .get(uri(addr, "/"))
        .traced(rec.clone())
        .await
        .unwrap();
    // The body fails, and that error is the reason the connection is not put back.
    let err = res.into_body().collect().await.unwrap_err();
    let events = rec.events();
    // (The connection's close, which this request's hooks may see while it lasts, races with
    // the body's error: it is checked below.)
    let mut http = from_got_conn(&events);
    http.retain(|n| *n != "close");
    assert_eq!(
        http,
        [
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "got_first_response_byte",
            "put_idle_conn",
        ]
    );
    let put = events.iter().find(|e| e.name() == "put_idle_conn").unwrap();
    assert_eq!(
        put.error().map(|e| e.kind),
        Some(io::ErrorKind::UnexpectedEof),
        "{put:?} for {err:?}"
    );
    let (id, ..) = got_conn(&events);
    // The connection closes: `on_close` for it.
    let closed = tokio::task::spawn_blocking(move || {
        all.wait_for(
            |ev| {
                ev.iter()
                    .any(|e| matches!(e, Recorded::Close { connection, .. } if connection.id == id))
            },
            WAIT,
        )
    })
    .await
    .unwrap();
    assert!(closed.is_ok(), "no close of {id:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_before_the_response() {
    // Reads the request head and closes without a byte of response.
    let addr = raw_server(b"", true).await;
    let tracker = Tracker::new();
    let client = traced_client(&tracker, dialer(&tracker));
    let rec = RecordingHook::new();
    let err = client
        .get(uri(addr, "/"))
        .traced(rec.clone())
        .await
        .unwrap_err();
    let events = rec.events();
    let mut http = from_got_conn(&events);
    http.retain(|n| *n != "close");
    assert_eq!(
        http,
        [
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "put_idle_conn"
        ],
        "{err:?}"
    );
    let put = events.iter().find(|e| e.name() == "put_idle_conn").unwrap();
    assert!(put.error().is_some(), "{put:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let tracker = Tracker::new();
    let client = traced_client(&tracker, dialer(&tracker));
    let rec = RecordingHook::new();
    let err = client
        .get(uri(addr, "/"))
        .traced(rec.clone())
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let events = rec.events();
    assert_eq!(
        names(&events),
        [
            "get_conn",
            "dns_start",
            "dns_done",
            "connect_start",
            "connect_done",
            "dial"
        ]
    );
    let done = &events[4];
    assert_eq!(
        done.error().map(|e| e.kind),
        Some(io::ErrorKind::ConnectionRefused),
        "{done:?}"
    );
}

/// The request id of every request event, and the connection of every connection event.
fn request_uris(events: &[Recorded]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e.request().map(|r| r.uri.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_see_only_their_own_events() {
    let addr = hyper_server().await;
    let all = RecordingHook::new();
    let tracker = Tracker::builder().hook(all.clone()).build();
    let client = traced_client(&tracker, dialer(&tracker));
    let (a, b) = (RecordingHook::new(), RecordingHook::new());
    let (ua, ub) = (uri(addr, "/pair?req=a"), uri(addr, "/pair?req=b"));
    let (ra, rb) = tokio::join!(
        async {
            let res = client.get(ua.clone()).traced(a.clone()).await.unwrap();
            res.into_body().collect().await.unwrap();
        },
        async {
            let res = client.get(ub.clone()).traced(b.clone()).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
    );
    let ((), ()) = (ra, rb);
    let (ea, eb) = (a.events(), b.events());
    for (events, own) in [(&ea, &ua), (&eb, &ub)] {
        let uris = request_uris(events);
        assert!(!uris.is_empty());
        assert!(uris.iter().all(|u| *u == own.to_string()), "{uris:?}");
        // Each sees one dial: the connection its own request got.
        let dials: Vec<_> = events
            .iter()
            .filter(|e| e.name() == "dial")
            .map(Recorded::id)
            .collect();
        let (id, ..) = got_conn(events);
        assert_eq!(dials, [Some(id)], "{:?}", names(events));
    }
    assert_ne!(got_conn(&ea).0, got_conn(&eb).0);

    // A later request without a hook, on one of the pooled connections: neither earlier
    // request's hook hears of it, nor of the connections closing afterwards.
    let (na, nb) = (ea.len(), eb.len());
    let res = client.get(uri(addr, "/?req=c")).await.unwrap();
    res.into_body().collect().await.unwrap();
    let ids = [got_conn(&ea).0, got_conn(&eb).0];
    drop(client);
    let closed = tokio::task::spawn_blocking(move || {
        all.wait_for(
            |ev| {
                ids.iter().all(|id| {
                    ev.iter().any(
                        |e| matches!(e, Recorded::Close { connection, .. } if connection.id == *id),
                    )
                })
            },
            WAIT,
        )
    })
    .await
    .unwrap();
    assert!(closed.is_ok(), "the pooled connections did not close");
    assert_eq!((a.events().len(), b.events().len()), (na, nb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hook_and_scope_hook_both_see_the_request() {
    let addr = hyper_server().await;
    let tracker = Tracker::new();
    let own = RecordingHook::new();
    let client = traced_client(&tracker, dialer(&tracker)).hook(own.clone());
    let scope = RecordingHook::new();
    let res = client
        .get(uri(addr, "/"))
        .traced(scope.clone())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let expected = names(&scope.events());
    assert!(expected.contains(&"dial") && expected.contains(&"put_idle_conn"));
    assert_eq!(names(&own.events()), expected);
    // Without a scope, the client's hook alone. (The request events only: if hyper-util
    // starts a dial before the first connection is back in its pool, that dial belongs to
    // this request too.)
    own.clear();
    let res = client.get(uri(addr, "/")).await.unwrap();
    res.into_body().collect().await.unwrap();
    let events: Vec<Recorded> = wait(&own, "put_idle_conn")
        .await
        .into_iter()
        .filter(|e| e.request().is_some())
        .collect();
    assert_eq!(
        names(&events),
        [
            "get_conn",
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "got_first_response_byte",
            "put_idle_conn",
        ]
    );
}

/// The request is reported written while the server is still waiting to answer: the
/// connection is known to the request before hyper-util writes to it, on a new and on a
/// pooled connection (not only learned once the response is in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_is_reported_before_the_response() {
    const REQUESTS: usize = 3;
    let own = RecordingHook::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = own.clone();
    let answered = Arc::new(AtomicUsize::new(0));
    let all_answered = Arc::new(tokio::sync::Notify::new());
    let server = tokio::spawn(async move {
        // Every connection hyper-util opens is served (it may dial a spare one).
        let mut conns = Vec::new();
        while answered.load(SeqCst) < REQUESTS {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = all_answered.notified() => break,
                () = tokio::time::sleep(WAIT) => break,
            };
            let (mut stream, _) = accepted.unwrap();
            let (gate, answered) = (gate.clone(), Arc::clone(&answered));
            let all_answered = Arc::clone(&all_answered);
            conns.push(tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return true,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    // Answer only once the client reported this request written.
                    let i = answered.load(SeqCst) + 1;
                    let gate = gate.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        gate.wait_for(
                            |ev| ev.iter().filter(|e| e.name() == "wrote_request").count() >= i,
                            WAIT,
                        )
                    })
                    .await
                    .unwrap();
                    if written.is_err() {
                        return false;
                    }
                    if answered.fetch_add(1, SeqCst) + 1 == REQUESTS {
                        all_answered.notify_one();
                    }
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                }
            }));
        }
        conns
    });
    let tracker = Tracker::new();
    let client = traced_client(&tracker, dialer(&tracker)).hook(own.clone());
    for _ in 0..REQUESTS {
        let res = client.get(uri(addr, "/")).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    drop(client);
    for conn in server.await.unwrap() {
        assert!(
            conn.await.unwrap(),
            "a request was not reported written in time"
        );
    }
    let reused: Vec<bool> = own
        .events()
        .iter()
        .filter_map(|e| match e {
            Recorded::GotConn { reused, .. } => Some(*reused),
            _ => None,
        })
        .collect();
    // The first on a new connection; the others on a pooled one (unless hyper-util's spare
    // dial won the race for one of them).
    assert_eq!(reused.len(), REQUESTS);
    assert!(!reused[0] && reused[1..].contains(&true), "{reused:?}");
}

/// With no hook anywhere, requests still count as exchanges on their connection (from the
/// response to the end of its body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_are_counted_without_hooks() {
    let addr = hyper_server().await;
    let tracker = Tracker::new();
    let client = traced_client(&tracker, dialer(&tracker));
    let res = client.get(uri(addr, "/")).await.unwrap();
    let id = conntrack_tokio::hyper::connection_id(&res).unwrap();
    let info = tracker.get(id).unwrap();
    assert_eq!((info.requests, info.in_flight), (1, 1));
    res.into_body().collect().await.unwrap();
    let info = tracker.get(id).unwrap();
    assert_eq!((info.requests, info.in_flight), (1, 0));
    tokio::time::sleep(Duration::from_millis(300)).await; // a known pause: the second reuses it
    let res = client.get(uri(addr, "/")).await.unwrap();
    assert_eq!(conntrack_tokio::hyper::connection_id(&res), Some(id));
    res.into_body().collect().await.unwrap();
    let info = tracker.get(id).unwrap();
    assert_eq!((info.requests, info.in_flight), (2, 0));
}

/// A URI with user info (`http://user:secret@host/`): the password reaches no hook, no
/// request record and no header field; the `host` field reported is the one sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_info_in_the_uri_is_never_reported() {
    let addr = hyper_server().await;
    let tracker = Tracker::new();
    let client = traced_client(&tracker, dialer(&tracker));
    let rec = RecordingHook::new();
    let with_password: hyper::Uri = format!("http://user:secret@{HOST}:{}/", addr.port())
        .parse()
        .unwrap();
    let res = client.get(with_password).traced(rec.clone()).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    let events = wait(&rec, "put_idle_conn").await;
    let shown = format!("{events:?}");
    assert!(!shown.contains("secret"), "{shown}");
    let host: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Recorded::WroteHeaderField { name, value, .. } if name == b"host" => {
                Some(String::from_utf8_lossy(value).into_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(host, [format!("{HOST}:{}", addr.port())]);
    let uris: Vec<_> = events
        .iter()
        .filter_map(Recorded::request)
        .map(|r| r.uri.to_string())
        .collect();
    assert!(
        uris.iter()
            .all(|u| *u == format!("http://{HOST}:{}/", addr.port())),
        "{uris:?}"
    );
    let recent = tracker.recent_requests();
    assert!(!format!("{recent:?}").contains("secret"), "{recent:?}");
}

/// A connector whose connections carry their `ConnectionId` as an extra and nothing else (as a
/// custom connector built on the public API would): the tracked `Dialer` underneath, its
/// stream wrapped so that hyper-util sees only the id.
#[derive(Clone)]
struct IdOnly(Dialer);

struct IdOnlyIo(TokioIo<conntrack_tokio::Tracked<tokio::net::TcpStream>>);

impl hyper_util::client::legacy::connect::Connection for IdOnlyIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new().extra(self.0.inner().id())
    }
}

impl hyper::rt::Read for IdOnlyIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for IdOnlyIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower_service::Service<hyper::Uri> for IdOnly {
    type Response = IdOnlyIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<IdOnlyIo, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower_service::Service::<hyper::Uri>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let fut = tower_service::Service::call(&mut self.0, uri);
        Box::pin(async move { Ok(IdOnlyIo(fut.await?)) })
    }
}

/// A connector that gives only the `ConnectionId` (no hand-off extra): every traced request,
/// the first and the later ones on a pooled connection, still gets its connection (`got_conn`,
/// read back from hyper-util's capture after each poll: the one its response names) and counts
/// as an exchange on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_giving_only_the_id_still_reports_each_connection() {
    let addr = hyper_server().await;
    let tracker = Tracker::new();
    let client = traced_client(&tracker, IdOnly(dialer(&tracker)));
    let mut ids = Vec::new();
    for i in 0..4 {
        let rec = RecordingHook::new();
        let res = client
            .get(uri(addr, "/"))
            .traced(rec.clone())
            .await
            .unwrap();
        let named = conntrack_tokio::hyper::connection_id(&res).expect("the response's id");
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello");
        let events = wait(&rec, "put_idle_conn").await;
        let names = from_got_conn(&events);
        assert!(
            names.contains(&"got_first_response_byte"),
            "request {i}: {names:?}"
        );
        let (id, ..) = got_conn(&events);
        assert_eq!(id, named, "request {i}");
        ids.push(id);
    }
    // A pooled connection may be back in the pool only after the next request looked for one:
    // the requests are spread over one or a few connections, each counting its own.
    ids.sort_unstable();
    ids.dedup();
    let (requests, in_flight) = ids.iter().fold((0, 0), |(r, f), id| {
        let info = tracker.get(*id).expect("pooled");
        (r + info.requests, f + info.in_flight)
    });
    assert_eq!((requests, in_flight), (4, 0), "{ids:?}");
}
