//! Server requests phase by phase with tonic: a tonic server on a tracked listener
//! (`serve_with_incoming`) with the stream's `exchange_layer()` as a server layer, unary
//! methods served by `tonic::server::Grpc`, and a real tonic client (`tonic::client::Grpc`
//! over hyper-util's HTTP/2 client) on loopback. No protobuf: a hand-written codec carries
//! UTF-8 strings, which is all generated code adds on top of these two types.
#![cfg(all(feature = "tonic", feature = "hyper"))]

use std::time::Duration;

use bytes::BufMut;
use conntrack_core::{ListenerConfig, ServerPhase};
use conntrack_tokio::Listener;
use http::uri::PathAndQuery;
use hyper::body::Buf;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// A gRPC codec for UTF-8 strings (a message is the string's bytes).
#[derive(Debug, Clone, Copy, Default)]
struct StringCodec;

impl Codec for StringCodec {
    type Encode = String;
    type Decode = String;
    type Encoder = StringCodec;
    type Decoder = StringCodec;

    fn encoder(&mut self) -> Self::Encoder {
        StringCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        StringCodec
    }
}

impl Encoder for StringCodec {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for StringCodec {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// How long `/test.Greeter/Late` takes before it fails.
const LATE: Duration = Duration::from_millis(200);

/// The service as generated code would route it: one unary method per path, each served by
/// `tonic::server::Grpc`. `Hello` answers, `Missing` fails at once with `NOT_FOUND`, `Late`
/// fails with `UNAVAILABLE` after 200 ms.
async fn greeter(
    req: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible> {
    let mut grpc = tonic::server::Grpc::new(StringCodec);
    let res = match req.uri().path() {
        "/test.Greeter/Hello" => {
            let method = tower::service_fn(|r: tonic::Request<String>| async move {
                Ok::<_, Status>(tonic::Response::new(format!("hello {}", r.into_inner())))
            });
            grpc.unary(method, req).await
        }
        "/test.Greeter/Missing" => {
            let method = tower::service_fn(|r: tonic::Request<String>| async move {
                Err::<tonic::Response<String>, _>(Status::not_found(r.into_inner()))
            });
            grpc.unary(method, req).await
        }
        "/test.Greeter/Late" => {
            let method = tower::service_fn(|_: tonic::Request<String>| async move {
                tokio::time::sleep(LATE).await;
                Err::<tonic::Response<String>, _>(Status::unavailable("too late"))
            });
            grpc.unary(method, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    };
    Ok(res)
}

#[path = "support/phases.rs"]
mod phases;
use phases::{recording_tracker, Phases};

/// The next exchange (bounded wait).
async fn next(rx: &mut mpsc::UnboundedReceiver<Phases>) -> Phases {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an exchange within 10 s")
        .expect("the hook is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_calls_record_their_grpc_status() {
    let (tracker, mut rx) = recording_tracker();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("grpc"));
    // The wiring a user writes: the layer from the stream, before tonic takes the stream.
    // (With generated code and tonic's `router` feature:
    // `Server::builder().layer(layer).add_service(GreeterServer::new(g)).serve_with_incoming(incoming)`.)
    let mut incoming = listener.incoming();
    let layer = incoming.exchange_layer();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .serve_with_incoming_shutdown(tower::service_fn(greeter), incoming, async move {
                let _ = stop_rx.await;
            }),
    );

    // A tonic client over hyper-util's client, HTTP/2 with prior knowledge: one connection.
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<tonic::body::Body>();
    let client = tonic::client::Grpc::with_origin(http, format!("http://{addr}").parse().unwrap());
    let call = |path: &'static str, msg: &str| {
        let req = tonic::Request::new(msg.to_owned());
        let mut client = client.clone();
        async move {
            client.ready().await.unwrap();
            client
                .unary::<String, String, _>(req, PathAndQuery::from_static(path), StringCodec)
                .await
        }
    };

    // A unary call that succeeds: `grpc-status: 0` in the trailers.
    let res = call("/test.Greeter/Hello", "world").await.unwrap();
    assert_eq!(res.into_inner(), "hello world");
    let ok = next(&mut rx).await;
    assert_eq!(ok.grpc_status, Some(0), "{ok:?}");
    assert!(ok.completed, "{ok:?}");

    // A call failing at once: NOT_FOUND (5), in a trailers-only response's head.
    let err = call("/test.Greeter/Missing", "thing").await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "thing"));
    let missing = next(&mut rx).await;
    assert_eq!(missing.grpc_status, Some(5), "{missing:?}");

    // A call failing after 200 ms in its handler: UNAVAILABLE (14), the time in `handler`.
    let late_call = tokio::spawn(call("/test.Greeter/Late", "x"));
    // Meanwhile the connection's record shows the call in its handler.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let in_progress = loop {
        if let Some(x) = tracker.get(ok.id).and_then(|c| c.exchange) {
            break x;
        }
        assert!(tokio::time::Instant::now() < deadline, "never in progress");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(&*in_progress.method, "POST");
    assert_eq!(in_progress.phase, ServerPhase::Handler);
    let err = late_call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let late = next(&mut rx).await;
    assert_eq!(late.grpc_status, Some(14), "{late:?}");
    assert!(late.handler >= LATE, "{late:?}");

    for x in [&ok, &missing, &late] {
        // gRPC over HTTP/2: every call a `POST` stream answered `200` (the outcome is the gRPC
        // status), all on the client's one connection.
        assert_eq!(x.id, ok.id, "one connection: {x:?}");
        assert_eq!(x.category, "grpc");
        assert_eq!((x.method.as_str(), x.version.as_str()), ("POST", "2"));
        assert_eq!(x.status, Some(200), "{x:?}");
        // No route: tonic has no route template (axum's `MatchedPath`) to give, and the path
        // is the client's to choose (see docs/http-trace.md).
        assert_eq!(x.route, None, "{x:?}");
        // A stream: no waiting, its head the HEADERS frame; the body untimed by this layer.
        assert_eq!(x.waiting, None, "{x:?}");
        assert_eq!(x.head, Duration::ZERO, "{x:?}");
        assert_eq!(x.body, None, "{x:?}");
        x.assert_adds_up();
    }
    // The failures were answered whole too (a trailers-only response is a complete one).
    assert!(missing.completed && late.completed, "{missing:?} {late:?}");

    drop(client);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
