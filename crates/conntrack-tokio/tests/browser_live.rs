//! The live debug page in a real browser: headless Chromium, driven through ChromeDriver
//! (`support/webdriver.rs`), keeps the page open while a connection opens and, a second later,
//! closes. Without a reload (a marker set in the page's `window` survives), the connection's
//! rows appear in the live table within 2 s of its opening, then leave it and appear in
//! "Recently closed" within 2 s of its closing. The page's own periodic re-read is set to a
//! minute, so what moves the rows is the events stream; the re-read is then run by hand and
//! keeps the rows, the tables' sort handlers and the user's sort. A second test opens the page
//! with JavaScript off: plain server-rendered HTML, the reload in its `<noscript>`, no stream.
//!
//! Chromium: `$CHROME` or `$CHROMIUM`, else `/usr/bin/chromium`, else `chromium` on `PATH`;
//! ChromeDriver: `$CHROMEDRIVER`, else `/usr/bin/chromedriver`, else `chromedriver` on `PATH`.
//! Without them the tests are skipped with a note, except under `CI=true`, where they fail.
#![cfg(all(feature = "axum", feature = "hyper"))]

#[path = "support/webdriver.rs"]
#[allow(dead_code)] // (the window sizing is the layout test's)
mod webdriver;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conntrack_core::render::HtmlOptions;
use conntrack_core::{DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::{DebugPage, Dialer, Listener, TrackedConnectInfo};
use serde_json::{json, Value};
use webdriver::{ChromeDriver, Session};

const PAGE_PATH: &str = "/debug/conntrack";
/// How long a row may take to follow its connection (the acceptance).
const FOLLOW: Duration = Duration::from_secs(2);
/// Bound on everything else (loading the page, opening its stream).
const WAIT: Duration = Duration::from_secs(30);

/// The browser to run, if there is one.
fn find_chromium() -> Option<PathBuf> {
    for var in ["CHROME", "CHROMIUM"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(v));
        }
    }
    let default = Path::new("/usr/bin/chromium");
    if default.is_file() {
        return Some(default.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// Chromium and ChromeDriver, or `None` after reporting them missing (a failure under CI).
fn tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    match (find_chromium(), webdriver::find_chromedriver()) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ => {
            conntrack_testkit::tool_missing(
                test,
                "Chromium and ChromeDriver",
                "apt-get install chromium chromium-driver, or set CHROME and CHROMEDRIVER",
            );
            None
        }
    }
}

/// The app: axum on a tracked loopback listener, `page` nested at `PAGE_PATH`.
async fn serve(tracker: &Tracker, page: DebugPage) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(tracker, inner, ListenerConfig::new().category("http-in"));
    let app = axum::Router::new().nest(PAGE_PATH, page.router());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future()
        .await
        .unwrap();
    });
    (addr, server)
}

async fn exec(session: &Session, script: &str) -> Value {
    session
        .execute(script)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The ids of the rows of table `id` (by its "ID" column).
async fn row_ids(session: &Session, table: &str) -> Vec<u64> {
    let script = format!(
        "var t = document.getElementById('{table}'); if (!t) return null;\
         var ths = Array.from(t.tHead.rows[0].cells).map(function (c) {{ return c.textContent.trim(); }});\
         var i = Math.max(0, ths.indexOf('ID'));\
         return Array.from(t.tBodies[0].rows).map(function (r) {{ var c = r.cells[i]; return Number(c.dataset.v || c.textContent); }});"
    );
    let ids = exec(session, &script).await;
    ids.as_array()
        .unwrap_or_else(|| panic!("no table #{table}: {ids}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// Waits (bounded by `FOLLOW` from `since`) until `table` does or does not list `id`.
async fn follow(session: &Session, table: &str, id: u64, listed: bool, since: Instant) -> Duration {
    loop {
        let ids = row_ids(session, table).await;
        let took = since.elapsed();
        if ids.contains(&id) == listed {
            return took;
        }
        assert!(
            took < FOLLOW,
            "#{table}: connection {id} still {} after {took:?}: {ids:?}",
            if listed { "missing" } else { "listed" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_page_follows_a_connection_without_a_reload() {
    let Some((chromium, chromedriver)) =
        tools("browser_live::the_open_page_follows_a_connection_without_a_reload")
    else {
        return;
    };
    // The page re-reads itself every minute only: within the test, the stream moves the rows.
    let tracker = Tracker::builder().history(64).build();
    let mut options = HtmlOptions::default();
    options.refresh_secs = Some(60);
    let page = DebugPage::new(&tracker).html_options(options);
    let (addr, server) = serve(&tracker, page.clone()).await;

    let driver = ChromeDriver::start(&chromedriver).unwrap_or_else(|e| panic!("{e}"));
    let session = driver
        .session(&chromium, 1200, 900)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .navigate(&format!("http://{addr}{PAGE_PATH}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The page follows its stream.
    let deadline = Instant::now() + WAIT;
    loop {
        let state = exec(
            &session,
            "var s = document.getElementById('live-status'); return s ? (s.dataset.state || '') : null;",
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
    exec(&session, "window.conntrackMarker = 42; return true;").await;

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
        appeared.push(follow(&session, "connections", id, true, opened).await);
        assert!(!row_ids(&session, "closed").await.contains(&id));
    }

    // ... and closes a second later (the scenario's own time, not a wait for anything).
    tokio::time::sleep_until((opened + Duration::from_secs(1)).into()).await;
    let closed = Instant::now();
    drop((client_end, server_end));
    let mut moved = Vec::new();
    for id in ids {
        moved.push(follow(&session, "connections", id, false, closed).await);
        moved.push(follow(&session, "closed", id, true, closed).await);
    }

    // No reload happened: the marker is still there, the stream is the same one.
    assert_eq!(
        exec(&session, "return window.conntrackMarker;").await,
        42,
        "the page was reloaded"
    );
    assert_eq!(page.subscribers(), 1);
    // The closed rows carry the reason, as the server renders it.
    let closed_text = exec(
        &session,
        "return document.getElementById('closed').tBodies[0].rows[0].textContent;",
    )
    .await;
    let closed_text = closed_text.as_str().unwrap();
    assert!(
        closed_text.contains("closed_locally") || closed_text.contains("peer_closed"),
        "{closed_text}"
    );
    eprintln!(
        "live page: rows appeared after {appeared:?}, moved after {moved:?} (connections {ids:?})"
    );

    // The periodic re-read (run now, by hand): the rows stay where the stream put them, the
    // headers still sort, and a sort the user chose survives the next re-read.
    exec(&session, "return window.conntrackLive.resync();").await;
    for id in ids {
        assert!(row_ids(&session, "closed").await.contains(&id));
        assert!(!row_ids(&session, "connections").await.contains(&id));
    }
    let sort_by_id = "var t = document.getElementById('closed'); var ths = Array.from(t.tHead.rows[0].cells);\
        ths[ths.map(function (c) { return c.textContent.trim(); }).indexOf('ID')].click(); return true;";
    exec(&session, sort_by_id).await;
    let ascending = row_ids(&session, "closed").await;
    assert!(ascending.len() >= 2);
    let mut sorted = ascending.clone();
    sorted.sort_unstable();
    assert_eq!(ascending, sorted, "a click sorts the closed table by id");
    exec(&session, "return window.conntrackLive.resync();").await;
    let after = row_ids(&session, "closed").await;
    let mut sorted = after.clone();
    sorted.sort_unstable();
    assert_eq!(after, sorted, "the sort survives a re-read");
    assert_eq!(exec(&session, "return window.conntrackMarker;").await, 42);

    session.close().await.unwrap_or_else(|e| panic!("{e}"));
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
    let Some((chromium, chromedriver)) =
        tools("browser_live::with_scripts_off_the_page_is_plain_html_that_reloads")
    else {
        return;
    };
    let tracker = Tracker::new();
    let page = DebugPage::new(&tracker);
    let (addr, server) = serve(&tracker, page.clone()).await;
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("held"));
    let held = dialer.connect_addr(addr).await.unwrap();

    // Scripts off for the whole profile, as a user may have them.
    let driver = ChromeDriver::start(&chromedriver).unwrap_or_else(|e| panic!("{e}"));
    let session = driver
        .session_with_prefs(
            &chromium,
            1200,
            900,
            json!({"profile.managed_default_content_settings.javascript": 2}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .navigate(&format!("http://{addr}{PAGE_PATH}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dom = session.source().await.unwrap_or_else(|e| panic!("{e}"));
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
    session.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(driver);
    drop(held);
    server.abort();
}
