//! The live debug page in a real browser: headless Chromium, driven through ChromeDriver
//! (WebDriver over HTTP), keeps the page open while a connection opens and, a second later,
//! closes. Without a reload (a marker set in the page's `window` survives), the connection's
//! row appears in the live table within 2 s of its opening, then leaves it and appears in
//! "Recently closed" within 2 s of its closing. The page's own periodic re-read is set to a
//! minute, so what moves the rows is the events stream. A second test opens the page with
//! JavaScript off: plain server-rendered HTML, the reload in its `<noscript>`, no stream.
//!
//! Chromium: `$CHROME` or `$CHROMIUM`, else `/usr/bin/chromium`, else `chromium` on `PATH`;
//! ChromeDriver: `$CHROMEDRIVER`, else `/usr/bin/chromedriver`, else `chromedriver` on `PATH`.
//! Without them the test is skipped with a note, except under `CI=true`, where it fails.
#![cfg(all(feature = "axum", feature = "hyper"))]

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conntrack_core::render::HtmlOptions;
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::{DebugPage, Dialer, Listener, TrackedConnectInfo};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const PAGE_PATH: &str = "/debug/conntrack";
/// How long a row may take to follow its connection (the acceptance).
const FOLLOW: Duration = Duration::from_secs(2);
/// Bound on everything else (starting the browser, loading the page).
const WAIT: Duration = Duration::from_secs(30);

/// `$var`, else `/usr/bin/<name>`, else `<name>` on `PATH`.
fn find_tool(vars: &[&str], name: &str) -> Option<PathBuf> {
    for var in vars {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(v));
        }
    }
    let default = Path::new("/usr/bin").join(name);
    if default.is_file() {
        return Some(default);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// ChromeDriver, killed (with its browser, which shares its process group) on drop.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One WebDriver command: its `value`, or the error it answered.
async fn wd(client: &HttpClient, port: u16, method: &str, path: &str, body: Value) -> Value {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        }))
        .unwrap();
    let res = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("ChromeDriver answers in time")
        .expect("ChromeDriver answers");
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v["value"].clone()
}

/// The ids of the rows of table `id` (by its "ID" column).
const ROW_IDS: &str = "var t = document.getElementById(arguments[0]); if (!t) return null;\
    var ths = Array.from(t.tHead.rows[0].cells).map(function (c) { return c.textContent.trim(); });\
    var i = Math.max(0, ths.indexOf('ID'));\
    return Array.from(t.tBodies[0].rows).map(function (r) { var c = r.cells[i]; return Number(c.dataset.v || c.textContent); });";

/// ChromeDriver on a free loopback port and a headless Chromium session (1200×900) with
/// `prefs`: the driver, a client for it, the session id.
async fn start_session(
    chromedriver: &Path,
    chromium: &Path,
    prefs: Value,
) -> (Driver, HttpClient, String) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let profile = std::env::temp_dir().join(format!(
        "conntrack-browser-live-{}-{port}",
        std::process::id()
    ));
    let driver = {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display()));
        Driver {
            child,
            port,
            profile: profile.clone(),
        }
    };
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + WAIT;
    loop {
        let req = hyper::Request::get(format!("http://127.0.0.1:{port}/status"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(res) = client.request(req).await {
            if res.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "ChromeDriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session = wd(
        &client,
        port,
        "POST",
        "/session",
        json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-proxy-server",
                     "--window-size=1200,900",
                     format!("--user-data-dir={}", profile.display())],
            "prefs": prefs,
        }}}}),
    )
    .await;
    let sid = session["sessionId"].as_str().expect("a session").to_owned();
    (driver, client, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_page_follows_a_connection_without_a_reload() {
    let (Some(chromium), Some(chromedriver)) = (
        find_tool(&["CHROME", "CHROMIUM"], "chromium"),
        find_tool(&["CHROMEDRIVER"], "chromedriver"),
    ) else {
        conntrack_testkit::tool_missing(
            "browser_live::the_open_page_follows_a_connection_without_a_reload",
            "Chromium and ChromeDriver",
            "apt-get install chromium chromium-driver, or set CHROME and CHROMEDRIVER",
        );
        return;
    };

    // The app: axum on a tracked listener, the page nested; its re-read every minute only.
    let tracker = Tracker::builder().history(64).build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http-in"));
    let mut options = HtmlOptions::default();
    options.refresh_secs = Some(60);
    let page = DebugPage::new(&tracker).html_options(options);
    let app = axum::Router::new().nest(PAGE_PATH, page.clone().router());
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );

    let (driver, client, sid) = start_session(&chromedriver, &chromium, json!({})).await;
    let port = driver.port;
    let exec = |script: &str, args: Value| {
        let body = json!({"script": script, "args": args});
        let path = format!("/session/{sid}/execute/sync");
        let client = &client;
        async move { wd(client, port, "POST", &path, body).await }
    };

    wd(
        &client,
        port,
        "POST",
        &format!("/session/{sid}/url"),
        json!({"url": format!("http://{addr}{PAGE_PATH}")}),
    )
    .await;
    // The page follows its stream.
    let deadline = Instant::now() + WAIT;
    loop {
        let state = exec(
            "var s = document.getElementById('live-status'); return s ? (s.dataset.state || '') : null;",
            json!([]),
        )
        .await;
        if state == "live" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never followed its events: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(page.subscribers(), 1);
    // A reload would lose this.
    exec("window.conntrackMarker = 42; return true;", json!([])).await;

    // Waits (bounded by FOLLOW from `since`) until `table` does or does not list `id`.
    let follow = |table: &'static str, id: u64, listed: bool, since: Instant| {
        let exec = &exec;
        async move {
            loop {
                let ids = exec(ROW_IDS, json!([table])).await;
                let has = ids
                    .as_array()
                    .unwrap_or_else(|| panic!("no table #{table}: {ids}"))
                    .iter()
                    .any(|v| v.as_u64() == Some(id));
                let took = since.elapsed();
                if has == listed {
                    return took;
                }
                assert!(
                    took < FOLLOW,
                    "#{table}: connection {id} still {} after {took:?}: {ids}",
                    if listed { "missing" } else { "listed" }
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // A connection opens (both ends tracked) ...
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = inner.local_addr().unwrap();
    let live_in = Listener::new(&tracker, inner, ListenerConfig::new().category("live-in"));
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("live-out"));
    let opened = Instant::now();
    let (accepted, dialed) = tokio::join!(live_in.accept(), dialer.connect_addr(target));
    let (server_end, client_end) = (accepted.unwrap().0, dialed.unwrap());
    let ids = [client_end.id().as_u64(), server_end.id().as_u64()];
    let mut appeared = Vec::new();
    for id in ids {
        appeared.push(follow("connections", id, true, opened).await);
        assert!(!exec(ROW_IDS, json!(["closed"]))
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_u64() == Some(id)));
    }

    // ... and closes a second later (the scenario's own time, not a wait for anything).
    tokio::time::sleep_until((opened + Duration::from_secs(1)).into()).await;
    let closed = Instant::now();
    drop((client_end, server_end));
    let mut moved = Vec::new();
    for id in ids {
        moved.push(follow("connections", id, false, closed).await);
        moved.push(follow("closed", id, true, closed).await);
    }

    // No reload happened: the marker is still there, the stream is the same one.
    let marker = exec("return window.conntrackMarker;", json!([])).await;
    assert_eq!(marker, 42, "the page was reloaded");
    assert_eq!(page.subscribers(), 1);
    // The closed rows carry the reason, as the server renders it.
    let closed_text = exec(
        "return document.getElementById('closed').tBodies[0].rows[0].textContent;",
        json!([]),
    )
    .await;
    assert!(
        closed_text.as_str().unwrap().contains("closed_locally")
            || closed_text.as_str().unwrap().contains("peer_closed"),
        "{closed_text}"
    );
    eprintln!(
        "live page: rows appeared after {appeared:?}, moved after {moved:?} (connections {ids:?})"
    );

    wd(
        &client,
        port,
        "DELETE",
        &format!("/session/{sid}"),
        json!({}),
    )
    .await;
    drop(driver);
    // The browser's stream went with it: the hook too.
    let deadline = Instant::now() + WAIT;
    while page.subscribers() > 0 {
        assert!(
            Instant::now() < deadline,
            "the page's subscription outlived the browser"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

/// With scripts off, the page is the plain HTML it always was: every table server-rendered,
/// the live script inert, and the reload (inside `<noscript>`) in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_scripts_off_the_page_is_plain_html_that_reloads() {
    let (Some(chromium), Some(chromedriver)) = (
        find_tool(&["CHROME", "CHROMIUM"], "chromium"),
        find_tool(&["CHROMEDRIVER"], "chromedriver"),
    ) else {
        conntrack_testkit::tool_missing(
            "browser_live::with_scripts_off_the_page_is_plain_html_that_reloads",
            "Chromium and ChromeDriver",
            "apt-get install chromium chromium-driver, or set CHROME and CHROMEDRIVER",
        );
        return;
    };
    let tracker = Tracker::new();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http-in"));
    let page = DebugPage::new(&tracker);
    let app = axum::Router::new().nest(PAGE_PATH, page.clone().router());
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("held"));
    let held = dialer.connect_addr(addr).await.unwrap();

    // Scripts off for the whole profile, as a user may have them.
    let (driver, client, sid) = start_session(
        &chromedriver,
        &chromium,
        json!({"profile.managed_default_content_settings.javascript": 2}),
    )
    .await;
    let port = driver.port;
    wd(
        &client,
        port,
        "POST",
        &format!("/session/{sid}/url"),
        json!({"url": format!("http://{addr}{PAGE_PATH}")}),
    )
    .await;
    let source = wd(
        &client,
        port,
        "GET",
        &format!("/session/{sid}/source"),
        Value::Null,
    )
    .await;
    let dom = source.as_str().expect("the page source").to_owned();
    assert!(
        dom.contains("id=\"connections\""),
        "the live table, server-rendered:\n{dom}"
    );
    assert!(
        dom.contains(&format!(">{}<", held.id().as_u64())),
        "the held connection's row:\n{dom}"
    );
    assert!(
        !dom.contains("id=\"live-status\""),
        "the live script did not run:\n{dom}"
    );
    assert!(
        dom.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"),
        "the reload is there for a page without scripts:\n{dom}"
    );
    assert_eq!(page.subscribers(), 0, "no stream was opened");
    wd(
        &client,
        port,
        "DELETE",
        &format!("/session/{sid}"),
        json!({}),
    )
    .await;
    drop(driver);
    drop(held);
    server.abort();
}
