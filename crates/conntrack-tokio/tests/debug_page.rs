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
    for header in [
        ("x-forwarded-for", "192.0.2.7"),
        ("forwarded", "for=192.0.2.7"),
    ] {
        let res = fetch(&client, addr, "", &[header]).await;
        assert_eq!(res.status, 403, "{header:?}");
        assert!(
            res.body.contains("proxy") && res.body.lines().count() == 1,
            "{}",
            res.body
        );
        assert_eq!(res.cache_control, "no-store");
    }

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
