//! The debug page's server-sent events over real HTTP on loopback: what each event carries, a
//! subscriber that does not read loses events and is told how many, and with nobody
//! subscribed nothing of ours is installed or running.
#![cfg(all(feature = "axum", feature = "hyper"))]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conntrack_core::{DialerConfig, ListenerConfig, Registration, Role, Tracker};
use conntrack_tokio::{DebugPage, Dialer, Listener};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// Serves `page` at `/debug` on an untracked loopback listener (so the page's own
/// connections are not events).
async fn serve(page: DebugPage) -> SocketAddr {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let app = axum::Router::new().nest("/debug", page.router());
    tokio::spawn(
        axum::serve(
            inner,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future(),
    );
    addr
}

/// A subscriber's stream, parsed into (event, data) pairs.
struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(WAIT, self.next_untimed())
            .await
            .expect("an event in time")
    }

    async fn next_untimed(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if name.is_empty() {
                    continue; // a comment
                }
                return (name, serde_json::from_str(&data).expect("JSON data"));
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The next event named `name`, skipping others (bounded: summaries keep coming).
    async fn next_named(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (n, v) = self.next().await;
            if n == name {
                return v;
            }
            assert!(Instant::now() < deadline, "no {name} event in time");
        }
    }
}

/// Subscribes to the events at `addr` (`query` after `events`), on a connection of its own
/// driven by a task.
async fn subscribe(addr: SocketAddr, query: &str) -> Events {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("/debug/events{query}"))
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-store");
    Events {
        body: res.into_body(),
        buf: String::new(),
    }
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn hooks_of(tracker: &Tracker) -> String {
    let debug = format!("{tracker:?}");
    let start = debug.find("hooks: ").expect("the hook count in Debug");
    debug[start..].split(',').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_tells_what_happens() {
    // Keeping recent requests: the `request` event reads them.
    let tracker = Tracker::builder().recent_requests(8).build();
    let page = DebugPage::new(&tracker).summary_every(Duration::from_millis(200));
    let addr = serve(page.clone()).await;
    let mut plain = subscribe(addr, "").await;
    let mut html = subscribe(addr, "?html=1").await;

    // A summary first, at once.
    for events in [&mut plain, &mut html] {
        let (name, summary) = events.next().await;
        assert_eq!(name, "summary");
        assert!(summary["at"].as_f64().unwrap() > 1.6e9, "{summary}");
        assert_eq!(summary["total_connections"], 0);
        assert_eq!(summary["dropped"], 0);
        assert!(summary["stats"]["categories"].is_array(), "{summary}");
    }
    assert_eq!(page.subscribers(), 2);

    // A real connection: dialed and accepted, then closed by the client.
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("api"));
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("db"));
    let (accepted, dialed) = tokio::join!(listener.accept(), dialer.connect_addr(target));
    let (server, client) = (accepted.unwrap().0, dialed.unwrap());
    let ids = [client.id().as_u64(), server.id().as_u64()];

    for events in [&mut plain, &mut html] {
        let mut opened = Vec::new();
        while opened.len() < 2 {
            opened.push(events.next_named("opened").await);
        }
        // The two registrations race (the accept can finish before the dial registers):
        // the client's record first, whatever the ids.
        opened.sort_by_key(|o| o["info"]["role"] != "client");
        assert_eq!(opened[0]["info"]["id"], ids[0]);
        assert_eq!(opened[1]["info"]["id"], ids[1]);
        assert_eq!(opened[0]["info"]["category"], "db");
        assert_eq!(opened[0]["info"]["role"], "client");
        assert_eq!(opened[0]["info"]["target"], target.to_string());
        assert_eq!(opened[1]["info"]["category"], "api");
        assert_eq!(opened[1]["info"]["role"], "server");
        assert_eq!(opened[1]["info"]["local_addr"], target.to_string());
    }
    drop(client);
    let closed = [plain.next_named("closed").await];
    assert_eq!(closed[0]["info"]["id"], ids[0]);
    assert_eq!(closed[0]["reason"], "closed_locally");
    // The server side sees the peer's close when it reads.
    let mut server = server;
    let mut buf = [0u8; 1];
    use tokio::io::AsyncReadExt;
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    drop(server);
    let mut html_closed = Vec::new();
    while html_closed.len() < 2 {
        html_closed.push(html.next_named("closed").await);
    }
    for c in &html_closed {
        let row = c["html"].as_str().unwrap();
        assert!(row.starts_with("<tr>") && row.ends_with("</tr>"), "{row}");
        assert!(row.contains(c["reason"].as_str().unwrap()), "{row}");
        assert!(c["closed_at"].as_f64().unwrap() >= c["info"]["established_at"].as_f64().unwrap());
        assert!(c.get("error").is_some());
    }
    // Only the page's own script asks for rows.
    let server_closed = plain.next_named("closed").await;
    for c in closed.iter().chain([&server_closed]) {
        assert!(c.get("html").is_none(), "{c}");
    }
    assert_eq!(server_closed["info"]["id"], ids[1]);
    assert_eq!(server_closed["reason"], "peer_closed");

    // A dial that fails.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(dialer.connect_addr(refused).await.is_err());
    let failed = plain.next_named("failed").await;
    assert_eq!(failed["role"], "client");
    assert_eq!(failed["category"], "db");
    assert_eq!(failed["target"], refused.to_string());
    assert!(failed["error"].as_str().unwrap().len() > 3, "{failed}");

    // A traced request, once it is done.
    let conn = tracker.register(Registration::new(Role::Client).category("http"));
    let req = tracker.request("GET", "http://api.internal/users?q=<b>");
    req.get_conn("api.internal:80");
    let _ = req.got_conn(conn.downgrade(), false);
    req.finish();
    let done = plain.next_named("request").await;
    assert_eq!(done["id"], req.info().id);
    assert_eq!(done["method"], "GET");
    assert_eq!(done["uri"], "http://api.internal/users?q=<b>");
    assert_eq!(done["connection"], conn.id().as_u64());
    assert!(done["total"].as_f64().unwrap() >= 0.0);
    assert!(done["phases"].is_object());

    // A served request, once its response is flushed (timed for the ring: no hook wants it).
    let served = tracker.register(Registration::new(Role::Server).category("web"));
    let r = served.downgrade();
    r.begin_exchange();
    let mut x = r
        .server_exchange("POST", Some("/users/{id}"), "1.1")
        .expect("timed for the ring");
    x.response_head(201);
    x.finish_when_flushed();
    r.end_exchange_when_flushed();
    served.record_flush();
    let served_id = served.id().as_u64();
    drop(served);
    let done = plain.next_named("server_exchange").await;
    assert_eq!(done["id"], 1);
    assert_eq!(done["method"], "POST");
    assert_eq!(done["route"], "/users/{id}");
    assert_eq!(done["status"], 201);
    assert_eq!(done["connection"], served_id);
    assert!(done["phases"]["handler"].as_f64().unwrap() >= 0.0);

    // Summaries go on, with the totals.
    let summary = plain.next_named("summary").await;
    assert_eq!(summary["total_connections"], 1);
    let db = summary["stats"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "db")
        .unwrap()
        .clone();
    assert_eq!(
        (
            db["opened"].as_u64(),
            db["closed"].as_u64(),
            db["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        summary["dropped"], 0,
        "a subscriber that reads loses nothing"
    );
    drop(conn);
}

/// A subscriber that does not read: a socket with a small receive buffer whose HTTP
/// connection is not driven once the response head is in, so the server's writes stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_loses_events_and_is_told_how_many() {
    const CHURN: usize = 10_000;
    const QUEUE: usize = 256;
    let tracker = Tracker::new();
    let page = DebugPage::new(&tracker)
        .event_queue(QUEUE)
        .summary_every(Duration::from_millis(100));
    let addr = serve(page.clone()).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let mut conn = Box::pin(conn);
    let req = hyper::Request::get("/debug/events")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = tokio::select! {
        res = sender.send_request(req) => res.unwrap(),
        end = &mut conn => panic!("the connection ended: {end:?}"),
    };
    assert_eq!(res.status(), 200);
    until("the subscriber", || page.subscribers() == 1).await;

    // 10,000 connections opened and closed while the subscriber reads nothing.
    let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
    for i in 0..CHURN {
        let port = u16::try_from(1024 + i % 60_000).unwrap();
        let c = tracker.register(
            Registration::server(local, SocketAddr::from(([127, 0, 0, 1], port))).category("churn"),
        );
        drop(c);
    }
    assert!(tracker.is_empty());
    // Its queue filled: it stopped listening, so most of the churn did not even build events
    // for it (counted below: most were dropped). Its stream may have listened again once it had
    // passed its queue on to the socket, before the socket's buffers filled: never more than
    // its one hook.
    let hooks = hooks_of(&tracker);
    assert!(hooks == "hooks: 0" || hooks == "hooks: 1", "{hooks}");
    assert_eq!(page.subscribers(), 1);

    // Now it reads: every churn event either arrived or was counted as dropped, and the stream
    // said so.
    tokio::spawn(conn);
    let mut events = Events {
        body: res.into_body(),
        buf: String::new(),
    };
    let (mut opened, mut closed, mut told) = (0usize, 0usize, 0u64);
    let mut lost_sum = 0u64;
    let mut summary_dropped = 0u64;
    while opened + closed + usize::try_from(told).unwrap() < 2 * CHURN {
        let (name, v) = events.next().await;
        match name.as_str() {
            "opened" => opened += 1,
            "closed" => closed += 1,
            "dropped" => {
                let total = v["dropped"].as_u64().unwrap();
                assert!(total > told, "{v}");
                lost_sum += v["lost"].as_u64().unwrap();
                told = total;
                assert_eq!(lost_sum, told, "lost adds up to dropped");
            }
            "summary" => summary_dropped = summary_dropped.max(v["dropped"].as_u64().unwrap()),
            other => panic!("unexpected event {other}: {v}"),
        }
    }
    assert_eq!(opened + closed + usize::try_from(told).unwrap(), 2 * CHURN);
    assert!(told as usize >= 2 * CHURN / 2, "most were dropped: {told}");
    assert!(
        opened + closed >= QUEUE,
        "the queue's worth arrived: {opened} + {closed}"
    );
    // The summaries report it too.
    loop {
        let (name, v) = events.next().await;
        if name == "summary" && v["dropped"] == told {
            break;
        }
        assert_ne!(name, "dropped", "nothing more was dropped: {v}");
    }
    // Caught up, it listens again.
    assert_eq!(hooks_of(&tracker), "hooks: 1");
    let c = tracker.register(Registration::new(Role::Client).category("after"));
    let opened_after = events.next_named("opened").await;
    assert_eq!(opened_after["info"]["id"], c.id().as_u64());
    eprintln!("stalled subscriber: {opened} opened + {closed} closed delivered, {told} dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_installed_or_running_without_a_subscriber() {
    let tracker = Tracker::new();
    let page = DebugPage::new(&tracker);
    let addr = serve(page.clone()).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // The test's own task and the server's accept loop.
    let baseline = metrics.num_alive_tasks();
    assert_eq!(hooks_of(&tracker), "hooks: 0");

    // Pages (HTML, JSON) load and leave nothing behind.
    for q in ["", "?format=json"] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!("GET /debug{q} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200"));
    }
    let _churn: Vec<_> = (0..100)
        .map(|_| tracker.register(Registration::new(Role::Client).category("idle")))
        .collect();
    until("the page's connection tasks to end", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
    assert_eq!(hooks_of(&tracker), "hooks: 0");
    assert_eq!(page.subscribers(), 0);

    // A subscriber installs one hook (connection events only) and its connection's task.
    let mut events = subscribe(addr, "").await;
    assert_eq!(events.next().await.0, "summary");
    assert_eq!(hooks_of(&tracker), "hooks: 1");
    assert_eq!(page.subscribers(), 1);
    assert!(metrics.num_alive_tasks() > baseline);
    drop(events);

    // It leaves: the hook, its queue and its timer go with it.
    until("the subscriber to leave", || page.subscribers() == 0).await;
    assert_eq!(hooks_of(&tracker), "hooks: 0");
    until("its tasks to end", || metrics.num_alive_tasks() == baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_subscribers_are_refused() {
    let tracker = Tracker::new();
    let page = DebugPage::new(&tracker).max_subscribers(1);
    let addr = serve(page.clone()).await;
    let mut first = subscribe(addr, "").await;
    assert_eq!(first.next().await.0, "summary");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let res = client
        .request(
            hyper::Request::get(format!("http://{addr}/debug/events"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    drop(first);
    until("the subscriber to leave", || page.subscribers() == 0).await;
    let mut again = subscribe(addr, "").await;
    assert_eq!(again.next().await.0, "summary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_events_ends_every_stream() {
    let tracker = Tracker::new();
    let page = DebugPage::new(&tracker);
    let addr = serve(page.clone()).await;
    let mut events = subscribe(addr, "").await;
    assert_eq!(events.next().await.0, "summary");
    // What a graceful shutdown calls: the stream ends, so the connection can close.
    page.close_events();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(frame) = events.body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended");
    until("the subscriber to leave", || page.subscribers() == 0).await;
    assert_eq!(hooks_of(&tracker), "hooks: 0");
    // And no new one begins.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let res = client
        .request(
            hyper::Request::get(format!("http://{addr}/debug/events"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    // The page itself still answers.
    let res = client
        .request(
            hyper::Request::get(format!("http://{addr}/debug?format=json"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
