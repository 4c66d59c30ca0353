//! The debug page router over real HTTP: HTML by default (escaped), JSON on request, text.
#![cfg(all(feature = "axum", feature = "hyper"))]

use std::future::IntoFuture;

use conntrack_core::{ListenerConfig, Registration, Tracker};
use conntrack_tokio::{debug_router, Listener};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_html_json_and_text() {
    let tracker = Tracker::new();
    let hostile = "<img src=x onerror=alert(1)>";
    let _evil = tracker.register(Registration::new(conntrack_core::Role::Client).category(hostile));
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("debug"));
    let app = axum::Router::new().nest("/debug/conntrack", debug_router(&tracker));
    tokio::spawn(axum::serve(listener, app).into_future());

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |q: &'static str, accept: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut req = hyper::Request::get(format!("http://{addr}/debug/conntrack{q}"));
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let res = client
                .request(req.body(Empty::new()).unwrap())
                .await
                .unwrap();
            let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (ct, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    let (ct, html) = get("", None).await;
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(!html.contains("<img") && html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(
        html.contains(">debug<"),
        "the page's own connection is listed in the summary"
    );

    for (q, accept) in [("?format=json", None), ("", Some("application/json"))] {
        let (ct, json) = get(q, accept).await;
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["category"] == hostile));
    }

    let (ct, text) = get("?format=text", None).await;
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(text.starts_with("ID") && text.contains("CATEGORY"));
}
