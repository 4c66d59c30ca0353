//! The phase timings a traced response carries (`RequestTrace` in its extensions,
//! `RequestTrace::timings`): they add up, a reused connection's have no DNS/connect/TLS phase,
//! and an HTTPS request's have a TLS phase.
#![cfg(all(feature = "hyper", feature = "tls"))]

#[path = "support/pki.rs"]
mod pki;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conntrack_core::{DialerConfig, RecordingHook, RequestTimings, RequestTrace, Tracker};
use conntrack_tokio::hyper::{HttpsConnector, RequestBody, TracedClient};
use conntrack_tokio::Dialer;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

type Body = Empty<Bytes>;

/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(300);

async fn handle(req: Request<Incoming>) -> Result<Response<String>, Infallible> {
    if req.uri().path() == "/slow" {
        tokio::time::sleep(SLOW).await;
    }
    Ok(Response::new("x".repeat(10_000)))
}

/// A hyper HTTP/1 server on loopback, over TLS when given a config.
async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    serve(tls, Duration::ZERO).await
}

/// [`server`], reading the end of each TLS handshake (the client's `Finished`) `late`: its
/// session tickets then go out that much after the client began sending its request.
async fn serve(tls: Option<Arc<rustls::ServerConfig>>, late: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let svc = hyper::service::service_fn(handle);
                let _ = match acceptor {
                    Some(a) => match a.accept(LateSecondRead::new(stream, late)).await {
                        Ok(tls) => http.serve_connection(TokioIo::new(tls), svc).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), svc).await,
                };
            });
        }
    });
    addr
}

/// A server socket whose second read (after the `ClientHello`) waits `late` first.
struct LateSecondRead {
    inner: TcpStream,
    reads: usize,
    late: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LateSecondRead {
    fn new(inner: TcpStream, late: Duration) -> Self {
        LateSecondRead {
            inner,
            reads: 0,
            late: (!late.is_zero()).then(|| Box::pin(tokio::time::sleep(late))),
        }
    }
}

impl AsyncRead for LateSecondRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.reads == 1 {
            if let Some(late) = self.late.as_mut() {
                ready!(late.as_mut().poll(cx));
                self.late = None;
            }
        }
        let before = buf.filled().len();
        let res = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.reads += 1;
        }
        Poll::Ready(res)
    }
}

impl AsyncWrite for LateSecondRead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A dialer that resolves every name to 127.0.0.1.
fn loopback_dialer(tracker: &Tracker) -> Dialer {
    Dialer::new(tracker, DialerConfig::new()).with_resolver(|_host: String, port: u16| async move {
        Ok::<_, io::Error>(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    })
}

/// hyper-util's client over the HTTPS connector on [`loopback_dialer`].
fn https_client(
    tracker: &Tracker,
    tls: Arc<rustls::ClientConfig>,
) -> Client<HttpsConnector, RequestBody<Body>> {
    let https = HttpsConnector::from_dialer(loopback_dialer(tracker), tls);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Sends a GET, reads the body to its end, and returns the timings with the wall time the
/// test measured around the whole request.
async fn timed_get<C>(client: &TracedClient<C, Body>, uri: &str) -> (RequestTimings, Duration)
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let start = Instant::now();
    let res = client.get(uri.parse().unwrap()).await.unwrap();
    let trace = res
        .extensions()
        .get::<RequestTrace>()
        .cloned()
        .expect("the response carries its trace");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 10_000);
    let wall = start.elapsed();
    (trace.timings(), wall)
}

/// Every phase non-negative and in order, the total within the wall time the test measured.
fn check_adds_up(t: &RequestTimings, wall: Duration) {
    let wait = t.wait.expect("wait");
    let written = t.request_written.expect("request written");
    let first = t.first_byte.expect("first byte");
    let total = t.total.expect("total once the body ended");
    assert!(
        wait <= written && written <= first && first <= total,
        "{t:?}"
    );
    let dial =
        t.dns.unwrap_or_default() + t.connect.unwrap_or_default() + t.tls.unwrap_or_default();
    assert!(
        dial <= wait,
        "the dial happens while the request waits: {t:?}"
    );
    assert!(
        total <= wall + Duration::from_millis(5),
        "{t:?} vs wall {wall:?}"
    );
    // The line a user logs.
    let line = t.to_string();
    assert!(line.contains("wait ") && line.contains("total "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_timings_add_up_and_a_reused_connection_has_no_dial_phases() {
    let addr = server(None).await;
    let tracker = Tracker::builder().hook(RecordingHook::new()).build();
    let client: Client<Dialer, RequestBody<Body>> =
        Client::builder(TokioExecutor::new()).build(loopback_dialer(&tracker));
    let client = TracedClient::new(&tracker, client);
    let uri = format!("http://timings.test:{}/", addr.port());

    let (first, wall) = timed_get(&client, &uri).await;
    check_adds_up(&first, wall);
    assert_eq!(first.reused, Some(false));
    assert!(first.dns.is_some() && first.connect.is_some(), "{first:?}");
    assert_eq!(first.tls, None);
    assert!(first.to_string().ends_with("new connection"), "{first}");

    // hyper-util puts an HTTP/1 connection back in its pool from a spawned task once the
    // connection is ready for another request, a moment after the body ended: a request sent
    // before that dials a second connection. So pause first, and allow a bounded number of
    // attempts; whatever happens, a reused connection must show no dial phases and a new one
    // must show them.
    let mut reused_seen = false;
    for attempt in 1..=5u64 {
        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        let (later, wall) = timed_get(&client, &uri).await;
        check_adds_up(&later, wall);
        match later.reused {
            Some(true) => {
                assert_eq!((later.dns, later.connect, later.tls), (None, None, None));
                reused_seen = true;
                break;
            }
            Some(false) => assert!(later.dns.is_some() && later.connect.is_some(), "{later:?}"),
            None => panic!("no got_conn: {later:?}"),
        }
    }
    assert!(reused_seen, "no request reused the pooled connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_request_has_a_tls_phase() {
    let (server_tls, client_tls) = pki::localhost_configs(&[b"http/1.1"]);
    let addr = server(Some(server_tls)).await;
    let tracker = Tracker::builder().hook(RecordingHook::new()).build();
    let client = TracedClient::new(&tracker, https_client(&tracker, client_tls));
    let (t, wall) = timed_get(&client, &format!("https://localhost:{}/", addr.port())).await;
    check_adds_up(&t, wall);
    assert!(t.tls.is_some(), "{t:?}");
    assert!(t.to_string().contains("tls "), "{t}");
}

/// A TLS 1.3 server sends its session tickets when it has read the end of the handshake, here
/// late (after the client began its request) and long before a slow response: they arrive on
/// the connection's socket, but they are not the response's first byte. The TLS layer reports
/// the application's data (`Connection::record_app_read`), and that is what the request
/// watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_response_begins_at_its_first_byte_not_at_a_session_ticket() {
    let (server_tls, client_tls) = pki::localhost_configs(&[b"http/1.1"]);
    assert!(
        server_tls.send_tls13_tickets > 0,
        "the server sends tickets"
    );
    let addr = serve(Some(server_tls), Duration::from_millis(100)).await;
    let tracker = Tracker::new();
    let rec = RecordingHook::new();
    let client = TracedClient::new(&tracker, https_client(&tracker, client_tls)).hook(rec.clone());
    let (t, wall) = timed_get(&client, &format!("https://localhost:{}/slow", addr.port())).await;
    check_adds_up(&t, wall);
    let written = t.request_written.expect("written");
    let first = t.first_byte.expect("first byte");
    assert!(
        first >= written + SLOW - Duration::from_millis(20),
        "the first byte came with the response, {SLOW:?} after the request: {t}"
    );
    let tls = tracker
        .connections()
        .into_iter()
        .find_map(|c| c.tls)
        .expect("a TLS connection");
    assert_eq!(tls.protocol_version, "1.3");
    let names = rec.names();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        at("got_conn") < at("wrote_headers")
            && at("wrote_headers") < at("wrote_request")
            && at("wrote_request") < at("got_first_response_byte"),
        "{names:?}"
    );
}
