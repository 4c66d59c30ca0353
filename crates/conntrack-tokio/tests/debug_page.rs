//! The debug page router over real HTTP: HTML by default (escaped), JSON on request (by
//! q-value), text; loopback peers only unless opted out; bounded in size however many
//! connections are live.
#![cfg(all(feature = "axum", feature = "hyper"))]

use std::future::IntoFuture;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use conntrack_core::{ListenerConfig, Registration, Role, Tracker};
use conntrack_tokio::{debug_router, DebugPage, Listener, TrackedConnectInfo};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A header of each kind a proxy or CDN adds, as it would set it.
const PROXIED: [(&str, &str); 16] = [
    ("forwarded", "for=192.0.2.7"),
    ("x-forwarded-for", "192.0.2.7"),
    ("x-forwarded-host", "debug.example"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-prefix", "/ops"),
    ("x-real-ip", "192.0.2.7"),
    ("via", "1.1 nginx"),
    ("true-client-ip", "192.0.2.7"),
    ("cf-connecting-ip", "192.0.2.7"),
    ("x-client-ip", "192.0.2.7"),
    ("fastly-client-ip", "192.0.2.7"),
    ("x-cluster-client-ip", "192.0.2.7"),
    ("x-original-forwarded-for", "192.0.2.7"),
    ("X-Envoy-External-Address", "192.0.2.7"),
    ("Forwarded", "for=\"[2001:db8::1]\""),
];

struct Fetched {
    status: u16,
    content_type: String,
    cache_control: String,
    vary: String,
    body: String,
}

async fn fetch(
    client: &HttpClient,
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Fetched {
    let mut req = hyper::Request::get(format!("http://{addr}/debug/conntrack{query}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (status, content_type, cache_control, vary) = (
        res.status().as_u16(),
        header("content-type"),
        header("cache-control"),
        header("vary"),
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Fetched {
        status,
        content_type,
        cache_control,
        vary,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// Serves `router` under `/debug/conntrack` on a tracked loopback listener (of
/// `server_tracker`), with the tracked connect info.
async fn serve(server_tracker: &Tracker, router: axum::Router) -> SocketAddr {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(
        server_tracker,
        inner,
        ListenerConfig::new().category("debug"),
    );
    let app = axum::Router::new().nest("/debug/conntrack", router);
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );
    addr
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_html_json_and_text() {
    let tracker = Tracker::new();
    let hostile = "<img src=x onerror=alert(1)>";
    let _evil = tracker.register(Registration::new(Role::Client).category(hostile));
    let addr = serve(&tracker, debug_router(&tracker)).await;
    let client = client();

    let page = fetch(&client, addr, "", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert_eq!(page.cache_control, "no-store");
    assert_eq!(page.vary, "Accept");
    let html = page.body;
    assert!(!html.contains("<img") && html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(
        html.contains(">debug<"),
        "the page's own connection is listed in the summary"
    );

    for (q, accept) in [
        ("?format=json", None),
        ("?format=JSON", None),
        ("", Some("application/json")),
        ("", Some("text/html;q=0.2, application/json;q=0.9")),
    ] {
        let accept: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let res = fetch(&client, addr, q, &accept).await;
        assert_eq!(res.content_type, "application/json", "{q} {accept:?}");
        assert_eq!((&*res.cache_control, &*res.vary), ("no-store", "Accept"));
        let v: serde_json::Value = serde_json::from_str(&res.body).unwrap();
        assert!(v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["category"] == hostile));
    }

    // q=0 means "not acceptable": not JSON.
    for accept in ["application/json;q=0", "*/*, application/json; q=0"] {
        let res = fetch(&client, addr, "", &[("accept", accept)]).await;
        assert!(
            res.content_type.starts_with("text/html"),
            "{accept}: {}",
            res.content_type
        );
    }

    for q in ["?format=text", "?format=Text"] {
        let res = fetch(&client, addr, q, &[]).await;
        assert!(
            res.content_type.starts_with("text/plain"),
            "{}",
            res.content_type
        );
        assert!(res.body.starts_with("ID") && res.body.contains("CATEGORY"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_peers_by_default() {
    let tracker = Tracker::new();
    let client = client();

    // A loopback peer over a real socket is served (above); a request relayed by a proxy is
    // not, although the proxy's own connection is from loopback.
    let addr = serve(&tracker, debug_router(&tracker)).await;
    for header in PROXIED {
        for path in ["", "/events"] {
            let res = fetch(&client, addr, path, &[header]).await;
            assert_eq!(res.status, 403, "{header:?} {path}");
            assert!(
                res.body.contains("proxy")
                    && res.body.contains(&header.0.to_ascii_lowercase())
                    && res.body.lines().count() == 1,
                "{}",
                res.body
            );
            assert_eq!(res.cache_control, "no-store");
        }
    }
    // Every name of the documented list is refused.
    for name in conntrack_tokio::PROXY_HEADERS {
        let res = fetch(&client, addr, "", &[(name, "192.0.2.7")]).await;
        assert_eq!(res.status, 403, "{name}");
    }
    // A loopback request with no proxy header is served.
    assert_eq!(fetch(&client, addr, "", &[]).await.status, 200);

    // Served without connect info, the peer is unknown: refused, saying what to do.
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare = inner.local_addr().unwrap();
    let app = axum::Router::new().nest("/debug/conntrack", debug_router(&tracker));
    tokio::spawn(axum::serve(inner, app).into_future());
    let res = fetch(&client, bare, "", &[]).await;
    assert_eq!(res.status, 403);
    assert!(
        res.body.contains("into_make_service_with_connect_info"),
        "{}",
        res.body
    );

    // axum's own `SocketAddr` connect info works as well as the tracked one.
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = inner.local_addr().unwrap();
    let app = axum::Router::new().nest("/debug/conntrack", debug_router(&tracker));
    tokio::spawn(
        axum::serve(
            inner,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .into_future(),
    );
    assert_eq!(fetch(&client, plain, "", &[]).await.status, 200);

    // A peer that is not loopback (its connect info set by hand: tests never leave
    // loopback) is refused with a one-line reason, unless the router opts in.
    let request = |peer: &str| {
        let mut req = axum::http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    for peer in [
        "192.0.2.1:40000",
        "[2001:db8::1]:40000",
        "[::ffff:192.0.2.1]:1",
    ] {
        let res = debug_router(&tracker).oneshot(request(peer)).await.unwrap();
        assert_eq!(res.status(), 403, "{peer}");
        assert_eq!(res.headers()["cache-control"], "no-store");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("loopback") && body.lines().count() == 1,
            "{body}"
        );
    }
    for peer in ["127.0.0.1:40000", "[::1]:40000", "[::ffff:127.0.0.1]:1"] {
        let res = debug_router(&tracker).oneshot(request(peer)).await.unwrap();
        assert_eq!(res.status(), 200, "{peer}");
    }
    let open = DebugPage::new(&tracker).allow_any_peer().router();
    let res = open.oneshot(request("192.0.2.1:40000")).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_tracker_gives_a_bounded_page_with_exact_totals() {
    const LIVE: usize = 100_000;
    const MIB: usize = 1024 * 1024;
    let tracker = Tracker::new();
    let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let conns: Vec<_> = (0..LIVE)
        .map(|i| {
            let port = u16::try_from(1024 + i % 60_000).unwrap();
            let c = tracker.register(
                Registration::server(local, SocketAddr::from(([127, 0, 0, 1], port)))
                    .category("bulk"),
            );
            c.record_read(i % 5000);
            c
        })
        .collect();
    // The page's own connections are on another tracker, so the totals are exactly LIVE.
    let addr = serve(&Tracker::new(), debug_router(&tracker)).await;
    let client = client();

    let page = fetch(&client, addr, "", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.len() < MIB, "HTML is {} bytes", page.body.len());
    assert!(
        page.body.contains(&format!(
            "Showing 1000 of {LIVE} live connections (newest first)"
        )),
        "no paging note"
    );
    // The newest connection is listed, the oldest is not.
    let newest = conns.last().unwrap().id().as_u64();
    let oldest = conns[0].id().as_u64();
    assert!(page
        .body
        .contains(&format!("data-v=\"{newest}\">{newest}</td>")));
    assert!(!page
        .body
        .contains(&format!("data-v=\"{oldest}\">{oldest}</td>")));
    // The summary covers every connection.
    assert!(
        page.body
            .contains(&format!("<td class=\"n\" data-v=\"{LIVE}\">{LIVE}</td>")),
        "summary active count"
    );

    let json = fetch(&client, addr, "?format=json", &[]).await;
    assert!(json.body.len() < MIB, "JSON is {} bytes", json.body.len());
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["total_connections"], LIVE);
    assert_eq!(v["order"], "newest");
    let shown = v["connections"].as_array().unwrap();
    assert_eq!(shown.len(), 1000);
    assert_eq!(shown[0]["id"], newest);
    let bulk = v["stats"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "bulk")
        .unwrap();
    assert_eq!(bulk["active"], LIVE);
    assert_eq!(bulk["opened"], LIVE);
    let read: u64 = (0..LIVE as u64).map(|i| i % 5000).sum();
    assert_eq!(bulk["read_bytes"], read);

    // More on request, in another order.
    let json = fetch(&client, addr, "?format=json&limit=3&sort=oldest", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    let ids: Vec<u64> = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    let first: Vec<u64> = conns[..3].iter().map(|c| c.id().as_u64()).collect();
    assert_eq!(ids, first);
    let json = fetch(&client, addr, "?format=json&limit=2&sort=bytes", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    for c in v["connections"].as_array().unwrap() {
        assert_eq!(c["read_bytes"], 4999);
    }
    let json = fetch(&client, addr, "?format=json&limit=5000", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["connections"].as_array().unwrap().len(), 5000);
    assert_eq!(v["total_connections"], LIVE);
    drop(conns);
    assert!(tracker.is_empty());
}

/// A request to a router by hand, from `peer` (tests never leave loopback: a non-loopback peer
/// is a connect info set by hand), with `headers`: the status and body.
async fn oneshot(
    router: axum::Router,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> (u16, String, axum::http::HeaderMap) {
    let mut req = axum::http::Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    let res = router.oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    if headers["content-type"] == "text/event-stream" {
        // A stream that does not end: its first bytes are enough.
        return (status, String::new(), headers);
    }
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_opens_the_page_to_any_peer_and_only_with_it() {
    const TOKEN: &str = "Zm9vYmFyLXRva2VuLTEyMzQ";
    let tracker = Tracker::new();
    let page = || DebugPage::new(&tracker).bearer_token(TOKEN).router();
    let good = format!("Bearer {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let far = "192.0.2.1:40000";
    let near = "127.0.0.1:40000";

    // The token opens the page and its events to a far peer, and through a proxy.
    for path in ["/", "/events", "/?format=json"] {
        let (status, body, _) = oneshot(page(), path, far, &[("authorization", &good)]).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for header in PROXIED {
        let (status, _, _) = oneshot(page(), "/", near, &[header, ("authorization", &good)]).await;
        assert_eq!(status, 200, "{header:?}");
    }
    let (status, _, _) = oneshot(page(), "/", far, &[("authorization", &lower)]).await;
    assert_eq!(status, 200, "the scheme ignores case");

    // Without it, or with another, not even from loopback (a same-host proxy adding no
    // header looks like loopback): 401 with a challenge.
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(prefix.as_str()),
        Some(TOKEN),
        Some("Basic Zm9vOmJhcg=="),
        Some("Bearer "),
    ] {
        for peer in [near, far] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            let (status, body, h) = oneshot(page(), "/", peer, &headers).await;
            assert_eq!(status, 401, "{auth:?} from {peer}");
            assert_eq!(h["www-authenticate"], "Bearer realm=\"conntrack\"");
            assert!(
                body.contains("bearer token") && !body.contains(TOKEN),
                "{body}"
            );
            let (status, _, _) = oneshot(page(), "/events", peer, &headers).await;
            assert_eq!(status, 401, "events: {auth:?} from {peer}");
        }
    }

    // Exactly one `Authorization` field: two get 401 even when one (or each) holds the token.
    for two in [[&wrong, &good], [&good, &good]] {
        let headers = two.map(|a| ("authorization", a.as_str()));
        let (status, _, _) = oneshot(page(), "/", near, &headers).await;
        assert_eq!(status, 401, "{two:?}");
    }

    // Over a real socket too.
    let addr = serve(&tracker, page()).await;
    let client = client();
    assert_eq!(fetch(&client, addr, "", &[]).await.status, 401);
    let res = fetch(&client, addr, "", &[("authorization", &good)]).await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("<table"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_limit_gets_the_cap_and_says_so() {
    let tracker = Tracker::new();
    let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let conns: Vec<_> = (0..10_050u16)
        .map(|i| {
            tracker.register(
                Registration::server(local, SocketAddr::from(([127, 0, 0, 1], 1024 + i)))
                    .category("bulk"),
            )
        })
        .collect();
    let addr = serve(&Tracker::new(), debug_router(&tracker)).await;
    let client = client();

    let json = fetch(&client, addr, "?format=json&limit=1000000", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["connections"].as_array().unwrap().len(), 10_000);
    assert_eq!(v["total_connections"], 10_050);
    assert_eq!(
        v["limit_capped"],
        serde_json::json!({"asked": 1_000_000, "limit": 10_000})
    );

    let html = fetch(&client, addr, "?limit=1000000", &[]).await;
    assert_eq!(html.status, 200);
    assert!(
        html.body.contains(
            "<p id=\"note\">Asked for 1000000 connections; a page shows at most 10000 (DebugPage::max_limit).</p>"
        ),
        "the page says it was capped"
    );
    assert!(html
        .body
        .contains("Showing 10000 of 10050 live connections (newest first)"));

    let text = fetch(&client, addr, "?format=text&limit=1000000", &[]).await;
    assert_eq!(
        text.body.lines().filter(|l| l.contains("bulk")).count(),
        10_001
    );
    assert!(text.body.contains("at most 10000"));

    // Under the cap: no note.
    let small = fetch(&client, addr, "?format=json&limit=10", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&small.body).unwrap();
    assert!(v.get("limit_capped").is_none());
    assert_eq!(v["connections"].as_array().unwrap().len(), 10);

    // A configured cap.
    let capped = serve(
        &Tracker::new(),
        DebugPage::new(&tracker).max_limit(50).router(),
    )
    .await;
    let json = fetch(&client, capped, "?format=json&limit=1000000", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["connections"].as_array().unwrap().len(), 50);
    assert_eq!(v["limit_capped"]["limit"], 50);
    drop(conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_on_its_own_listener_binds_loopback_by_default() {
    use conntrack_tokio::debug::Server;

    assert_eq!(
        Server::DEFAULT_ADDR,
        "127.0.0.1:6060".parse::<SocketAddr>().unwrap()
    );
    let tracker = Tracker::new();
    let _conn = tracker.register(Registration::new(Role::Client).category("app"));
    // Only the port changed: still 127.0.0.1.
    let server = Server::new(&tracker).port(0).bind().await.unwrap();
    let addr = server.local_addr();
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    // The page at `/`, its own connection not tracked.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |path: &str| {
        let req = hyper::Request::get(format!("http://{addr}{path}"))
            .body(Empty::new())
            .unwrap();
        client.request(req)
    };
    let res = get("/?format=json").await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["total_connections"], 1);
    assert_eq!(v["connections"][0]["category"], "app");
    // Proxied requests are refused there too.
    let req = hyper::Request::get(format!("http://{addr}/"))
        .header("x-real-ip", "192.0.2.7")
        .body(Empty::new())
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), 403);

    // An open event stream does not hold up the graceful shutdown: it ends.
    let res = get("/events").await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(
        String::from_utf8_lossy(&first).starts_with("event: summary\n"),
        "{first:?}"
    );
    drop(client);
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended");
    tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("the server stopped")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "not listening any more"
    );

    // `serve` binds what it is given.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let serving = tokio::spawn({
        let tracker = tracker.clone();
        async move { conntrack_tokio::debug::serve(&tracker, ("127.0.0.1", port)).await }
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let req = hyper::Request::get(format!("http://127.0.0.1:{port}/?format=text"))
            .body(Empty::new())
            .unwrap();
        match client.request(req).await {
            Ok(res) => {
                assert_eq!(res.status(), 200);
                break;
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "serve never answered: {e}"
                );
                tokio::task::yield_now().await;
            }
        }
    }
    serving.abort();
}

/// A tracker that keeps recent requests and has no hook at all: an axum app with
/// `ExchangeLayer` on a tracked listener, three requests over one kept-alive connection, and
/// the debug page (on the same server, outside the layer) shows each served request in its
/// JSON (`server_exchanges`), its HTML (a row of the server waterfall) and its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_requests_show_in_the_server_waterfall() {
    use axum::http::StatusCode;
    use axum::routing::get;
    use conntrack_tokio::exchange::ExchangeLayer;
    use std::time::{Duration, Instant};

    /// How long `/slow`'s handler takes: its handler phase is at least this.
    const SLOW: Duration = Duration::from_millis(60);

    let tracker = Tracker::builder().recent_requests(8).build();
    assert!(format!("{tracker:?}").contains("hooks: 0"), "no hook");
    let app = axum::Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(SLOW).await;
                "slow"
            }),
        )
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .layer(ExchangeLayer::new(&tracker));
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("web"));
    let app = app.nest("/debug/conntrack", debug_router(&tracker));
    tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );
    // The three requests on one connection of their own, kept open to the end (a pooled
    // client may open a second one when the first is not back in its pool yet, on a loaded
    // machine, and let either go).
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/items/7", "/slow", "/teapot"] {
        sender.ready().await.unwrap();
        let req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
    }
    let client = client();

    // An exchange ends when its response has been flushed, which may be just after the
    // client has read it: read the page until it has all three (bounded).
    let start = Instant::now();
    let json: serde_json::Value = loop {
        let page = fetch(&client, addr, "?format=json", &[]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        if v["server_exchanges"].as_array().unwrap().len() >= 3 {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the served requests never showed: {v}"
        );
        tokio::task::yield_now().await;
    };
    let served = json["server_exchanges"].as_array().unwrap();
    assert_eq!(
        served.len(),
        3,
        "the debug page's own requests are not layered"
    );
    let server_ids: Vec<u64> = tracker
        .connections()
        .iter()
        .filter(|c| c.role == Role::Server)
        .map(|c| c.id.as_u64())
        .collect();
    // Newest first.
    for (x, (route, status)) in
        served
            .iter()
            .zip([("/teapot", 418), ("/slow", 200), ("/items/{id}", 200)])
    {
        assert_eq!(x["method"], "GET", "{x}");
        assert_eq!(x["route"], route, "{x}");
        assert_eq!(x["status"], status, "{x}");
        assert_eq!(x["version"], "1.1", "{x}");
        assert_eq!(x["category"], "web", "{x}");
        assert_eq!(x["completed"], true, "{x}");
        assert!(
            server_ids.contains(&x["connection"].as_u64().unwrap()),
            "{x} on {server_ids:?}"
        );
        assert_eq!(x["connection"], served[0]["connection"], "one connection");
        assert!(x["bytes_read"].as_u64().unwrap() > 0, "{x}");
        assert!(x["bytes_written"].as_u64().unwrap() > 0, "{x}");
        let p = &x["phases"];
        let sum: f64 = ["waiting", "request_head", "handler", "response_write"]
            .iter()
            .map(|k| p[k].as_f64().expect(k))
            .sum();
        assert!(p["request_body"].is_null(), "the body was not timed: {p}");
        assert!((sum - x["total"].as_f64().unwrap()).abs() < 1e-6, "{x}");
    }
    let slow = &served[1]["phases"]["handler"];
    assert!(slow.as_f64().unwrap() >= SLOW.as_secs_f64(), "{slow}");

    // The HTML: the server waterfall, a row per served request, oldest first.
    let page = fetch(&client, addr, "", &[]).await;
    assert_eq!(page.status, 200);
    let svg = page
        .body
        .split("<svg id=\"server-waterfall\"")
        .nth(1)
        .expect("the server waterfall")
        .split("</svg>")
        .next()
        .unwrap();
    let rows: Vec<&str> = svg.split("<g class=\"exchange\"").skip(1).collect();
    assert_eq!(rows.len(), 3, "{svg}");
    let conn = served[0]["connection"].as_u64().unwrap();
    for (row, (route, status)) in
        rows.iter()
            .zip([("/items/{id}", 200), ("/slow", 200), ("/teapot", 418)])
    {
        assert!(
            row.contains(&format!(
                "data-connection=\"{conn}\" data-status=\"{status}\" data-version=\"1.1\""
            )),
            "{row}"
        );
        assert!(
            row.contains(&format!("GET {route} {status} · HTTP/1.1 · #{conn}</text>")),
            "{row}"
        );
        for phase in ["waiting", "request_head", "handler", "response_write"] {
            assert!(
                row.contains(&format!("class=\"phase\" data-phase=\"{phase}\"")),
                "{phase}: {row}"
            );
        }
    }
    assert!(page.body.contains("<h2>Recent server requests</h2>"));

    // The text: the served requests after the tables.
    let text = fetch(&client, addr, "?format=text", &[]).await.body;
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("CONN"))
        .collect();
    assert_eq!(table.len(), 4, "{text}");
    assert!(
        table[1].contains("/teapot") && table[1].contains("418"),
        "{text}"
    );
    assert!(table[2].contains("/slow"), "{text}");
}
