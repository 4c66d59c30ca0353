//! The debug page's server waterfall blames the right phase: an axum server with
//! `ExchangeLayer` on a tracked listener whose tracker keeps recent requests and has no hook,
//! and raw TCP clients on loopback, run at once, each slow in its own way (a slow head, a slow
//! upload, a slow handler followed by a keep-alive pause, a slow reader). In the page's
//! picture, each request's longest bar is the phase its scenario made slow.
//!
//! With `CONNTRACK_SERVER_WATERFALL=<file.svg>` set, the test also writes the picture as a
//! standalone SVG, and the text format's table of the same requests beside it (`<file.txt>`):
//! the picture and the table in `docs/http-trace.md` come from here.
#![cfg(feature = "axum")]

#[path = "support/phases.rs"]
mod phases;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use conntrack_core::render::{self, HtmlOptions, Snapshot};
use conntrack_core::{ListenerConfig, Tracker};
use conntrack_tokio::exchange::ExchangeLayer;
use conntrack_tokio::{Listener, TrackedConnectInfo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The big response's size.
const BIG: usize = 512 * 1024;
/// How slow each scenario is.
const SLOW_HEAD: Duration = Duration::from_millis(250);
const SLOW_BODY: Duration = Duration::from_millis(250);
const HANDLER: Duration = Duration::from_millis(200);
const PAUSE: Duration = Duration::from_millis(300);

/// An axum server over a tracked listener whose accepted sockets have a small send buffer (so
/// a slow reader holds the response's writes back); its tracker keeps recent requests.
async fn server() -> (SocketAddr, Tracker) {
    let tracker = Tracker::builder().recent_requests(8).build();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let inner = socket.listen(64).unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http"));
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/fast", get(|| async { "ok" }))
        .route(
            "/items/{id}",
            get(|| async {
                tokio::time::sleep(HANDLER).await;
                "slept"
            }),
        )
        .route(
            "/upload",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .route("/big", get(|| async { vec![b'x'; BIG] }))
        .layer(ExchangeLayer::new(&tracker).timed_body());
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );
    (addr, tracker)
}

/// [`read_response`](phases::read_response)'s status line.
async fn read_status(s: &mut TcpStream, chunk: usize, pause: Duration) -> String {
    let (head, _) = phases::read_response(s, chunk, pause).await;
    head.lines().next().unwrap().to_owned()
}

const OK: &str = "HTTP/1.1 200 OK";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_row_shows_the_phase_its_client_or_handler_made_slow() {
    let (addr, tracker) = server().await;
    // The scenarios run at once; their sleeps are what the clients do, not waits.
    let slow_head = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(SLOW_HEAD).await;
        s.write_all(b"\r\n").await.unwrap();
        assert_eq!(read_status(&mut s, 4096, Duration::ZERO).await, OK);
    };
    let slow_upload = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 8\r\n\r\nabcd")
            .await
            .unwrap();
        tokio::time::sleep(SLOW_BODY).await;
        s.write_all(b"efgh").await.unwrap();
        assert_eq!(read_status(&mut s, 4096, Duration::ZERO).await, OK);
    };
    let handler_then_pause = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /items/7 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_status(&mut s, 4096, Duration::ZERO).await, OK);
        tokio::time::sleep(PAUSE).await;
        s.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_status(&mut s, 4096, Duration::ZERO).await, OK);
    };
    let slow_reader = async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // 512 KiB in 8 KiB reads 10 ms apart: well over half a second.
        assert_eq!(
            read_status(&mut s, 8192, Duration::from_millis(10)).await,
            OK
        );
    };
    tokio::join!(slow_head, slow_upload, handler_then_pause, slow_reader);

    // Each exchange ends when its response has been flushed, which may be just after its
    // client has read it (a bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tracker.recent_server_exchanges().len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            tracker.recent_server_exchanges()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let mut options = HtmlOptions::default();
    options.refresh_secs = None;
    let page = render::html(&Snapshot::of(&tracker), &options);
    let start = page
        .find("<svg id=\"server-waterfall\"")
        .expect("the server waterfall");
    let svg = &page[start..start + page[start..].find("</svg>").unwrap() + "</svg>".len()];
    let rows: Vec<&str> = svg.split("<g class=\"exchange\"").skip(1).collect();
    assert_eq!(rows.len(), 5, "{svg}");
    // What the clients did bounds each phase from below, less a little for the server's reads
    // (the first byte is taken when the server's read completes, the end when its flush does).
    let slack = Duration::from_millis(20);
    for (route, slowest, at_least) in [
        ("/hello", "request_head", SLOW_HEAD - slack),
        ("/upload", "request_body", SLOW_BODY - slack),
        ("/items/{id}", "handler", HANDLER),
        ("/fast", "waiting", PAUSE - slack),
        ("/big", "response_write", Duration::from_millis(400)),
    ] {
        let row = rows
            .iter()
            .find(|r| {
                r.contains(&format!("GET {route} 200 "))
                    || r.contains(&format!("POST {route} 200 "))
            })
            .unwrap_or_else(|| panic!("a row for {route}: {svg}"));
        let (phase, secs) = longest_bar(row);
        assert_eq!(phase, slowest, "{route}: {row}");
        assert!(secs >= at_least.as_secs_f64(), "{route}: {secs} s: {row}");
    }

    if let Ok(path) = std::env::var("CONNTRACK_SERVER_WATERFALL") {
        std::fs::write(&path, standalone(&page, svg)).unwrap();
        let text = render::text_server_exchanges(&tracker.recent_server_exchanges());
        std::fs::write(std::path::Path::new(&path).with_extension("txt"), text).unwrap();
    }
}

/// The phase of the row's longest bar, and its length in seconds (`data-secs`).
fn longest_bar(row: &str) -> (String, f64) {
    row.split("<rect class=\"phase\" data-phase=\"")
        .skip(1)
        .map(|r| {
            let phase = r.split('"').next().unwrap().to_owned();
            let secs: f64 = r
                .split("data-secs=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (phase, secs)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("a bar")
}

/// The page's picture as an SVG file of its own: the namespace, a white background and the
/// page's style.
fn standalone(page: &str, svg: &str) -> String {
    let style = page
        .split("<style>")
        .nth(1)
        .and_then(|s| s.split("</style>").next())
        .unwrap_or("");
    let open_end = svg.find('>').unwrap();
    format!(
        "{} xmlns=\"http://www.w3.org/2000/svg\" style=\"background:#fff\"><style>{style}</style>{}\n",
        &svg[..open_end],
        &svg[open_end + 1..]
    )
}
