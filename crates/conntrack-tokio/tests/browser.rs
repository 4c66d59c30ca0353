//! The debug page in a real browser: headless Chromium loads it from a demo-like server (axum
//! on a tracked listener, with keep-alive HTTP clients, a listener whose category is markup,
//! and a TLS connection whose negotiated ALPN is markup) and dumps the DOM it built
//! (`--dump-dom`). The page must show one row per live connection, Chromium's own included,
//! a summary per category that agrees with the rows, and the hostile strings as text: escaped
//! in the serialized DOM, and no `<img>` element anywhere.
//!
//! Chromium: `$CHROME` or `$CHROMIUM` if set, else `/usr/bin/chromium`, else `chromium` on
//! `PATH`. Without it the test is skipped with a note, except under `CI=true`, where it fails.
#![cfg(all(feature = "axum", feature = "tls"))]

#[path = "support/pki.rs"]
mod pki;

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::routing::get;
use axum::Router;
use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{debug_router, Dialer, Listener, TrackedConnectInfo};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";
/// `HOSTILE` as text in serialized HTML.
const HOSTILE_TEXT: &str = "&lt;img src=x onerror=alert(1)&gt;";
const PAGE_PATH: &str = "/debug/conntrack";
const WAIT: Duration = Duration::from_secs(10);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
const POOL: usize = 3;

/// The browser to run, if there is one.
fn find_chromium() -> Option<PathBuf> {
    for var in ["CHROME", "CHROMIUM"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            // Set explicitly: used as given (a path or a name on PATH); if it does not run,
            // the test fails.
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

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "conntrack-browser-test-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).expect("create a temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs headless Chromium on `url` and returns the DOM it dumps, or why there is none.
/// Blocking. Kills the browser (its whole process group) when `stop` is set or after
/// `BROWSER_TIMEOUT`.
fn dump_dom(chromium: &Path, url: &str, stop: &AtomicBool) -> Result<String, String> {
    use std::os::unix::process::CommandExt as _;

    let dir = TempDir::new();
    let profile = dir.0.join("profile");
    let (out_path, err_path) = (dir.0.join("dom.html"), dir.0.join("stderr.log"));
    let stdout = std::fs::File::create(&out_path).unwrap();
    let stderr = std::fs::File::create(&err_path).unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Straight to the loopback server, whatever proxy the environment names.
            "--no-proxy-server",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", chromium.display()))?;
    // The end of Chromium's stderr, without the noise of a machine without D-Bus.
    let stderr_tail = || {
        let text = std::fs::read_to_string(&err_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };

    // std has no wait-with-timeout for a child: poll it, up to the deadline.
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        let stopped = stop.load(Ordering::SeqCst);
        if stopped || Instant::now() >= deadline {
            // The browser's helpers share its process group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            let why = if stopped {
                "stopped by the test".to_owned()
            } else {
                format!("did not finish within {BROWSER_TIMEOUT:?}")
            };
            return Err(format!(
                "chromium {why}; its stderr ends with:\n{}",
                stderr_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!(
            "chromium failed ({status}); its stderr ends with:\n{}",
            stderr_tail()
        ));
    }
    std::fs::read_to_string(&out_path).map_err(|e| format!("the dumped DOM: {e}"))
}

/// The rows of the table with id `id` in a serialized DOM, each as its cells' serialized
/// contents (HTML-escaped text, as the browser writes it back).
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table #{id} in:\n{dom}"));
    let table = &dom[start..];
    let table = &table[..table.find("</table>").expect("table end")];
    let body = &table[table.find("<tbody>").expect("tbody") + "<tbody>".len()..];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let open = cell.find('>').expect("cell tag end") + 1;
                    let close = cell.find("</td>").expect("cell end");
                    cell[open..close].to_owned()
                })
                .collect()
        })
        .collect()
}

/// Whether a request is for the `src=x` of a hostile string.
fn is_image_fetch(path: &str) -> bool {
    path.rsplit('/').next() == Some("x")
}

/// Connection ids by request path, as the server saw them.
type RequestLog = Arc<Mutex<Vec<(String, ConnectionId)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_every_connection_and_markup_as_text() {
    let Some(chromium) = find_chromium() else {
        conntrack_testkit::tool_missing(
            "browser::chromium_shows_every_connection_and_markup_as_text",
            "Chromium",
            "apt-get install chromium chromium-driver, or set CHROME to a Chromium binary",
        );
        return;
    };
    let started = Instant::now();
    // History keeps Chromium's connections once it has hung up, to account for them.
    let tracker = Tracker::builder().history(64).build();

    // The server, as the demo has it: axum on a tracked listener, the debug page nested. A
    // middleware logs which connection each request came on, and stops the browser at once
    // if it fetches the image of a hostile string (`src=x`, relative to the page): markup ran.
    let log: RequestLog = RequestLog::default();
    let image_fetched = Arc::new(AtomicBool::new(false));
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http-in"));
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .nest(PAGE_PATH, debug_router(&tracker))
        .layer(middleware::from_fn({
            let (log, image_fetched) = (log.clone(), image_fetched.clone());
            move |req: Request, next: Next| {
                let (log, image_fetched) = (log.clone(), image_fetched.clone());
                async move {
                    if is_image_fetch(req.uri().path()) {
                        image_fetched.store(true, Ordering::SeqCst);
                    }
                    if let Some(ConnectInfo(conn)) =
                        req.extensions().get::<ConnectInfo<TrackedConnectInfo>>()
                    {
                        log.lock()
                            .unwrap()
                            .push((req.uri().path().to_owned(), conn.id));
                    }
                    next.run(req).await
                }
            }
        }));
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );

    // Keep-alive HTTP clients on a tracked dialer: one request each, then idle, held open.
    let pool_dialer = Dialer::new(&tracker, DialerConfig::new().category("http-pool"));
    let mut pool = Vec::new();
    for _ in 0..POOL {
        let stream = pool_dialer.connect(&addr.to_string()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        let req = hyper::Request::get("/hello")
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert!(res.status().is_success());
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello");
        pool.push((sender, driver));
    }

    // A listener whose category is markup, with one connection from an untracked client.
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostile_addr = inner.local_addr().unwrap();
    let hostile_listener = Listener::new(&tracker, inner, ListenerConfig::new().category(HOSTILE));
    let (accepted, raw_client) = tokio::join!(
        hostile_listener.accept(),
        tokio::net::TcpStream::connect(hostile_addr)
    );
    let (hostile_server, raw_client) = (accepted.unwrap().0, raw_client.unwrap());

    // TLS between a tracked listener and a tracked dialer, negotiating markup as ALPN.
    // ALPN protocol ids are arbitrary bytes: the peers agree on markup.
    let (server_config, client_config) = pki::localhost_configs(&[HOSTILE.as_bytes()]);
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = inner.local_addr().unwrap();
    let tls_listener = Listener::new(&tracker, inner, ListenerConfig::new().category("tls-in"));
    let acceptor = TlsAcceptor::from(server_config);
    let connector = TlsConnector::from(client_config);
    let tls_dialer = Dialer::new(&tracker, DialerConfig::new().category("tls-out"));
    let tls_target = tls_addr.to_string();
    let (tls_server, tls_client) = tokio::join!(
        async {
            let (tcp, _) = tls_listener.accept().await.unwrap();
            acceptor.accept(tcp).await
        },
        tls_dialer.connect_tls(&tls_target, &connector, Some("localhost"))
    );
    let (tls_server, tls_client) = (tls_server.unwrap(), tls_client.unwrap());
    for side in [tls_server.get_ref().0.info(), tls_client.get_ref().0.info()] {
        let tls = side.tls.expect("TLS details on both entries");
        assert_eq!(tls.alpn.as_deref(), Some(HOSTILE.as_bytes()));
    }

    // Everything held open: the pool (both ends), the hostile listener's and the TLS entries.
    let held: BTreeSet<u64> = tracker
        .connections()
        .iter()
        .map(|c| c.id.as_u64())
        .collect();
    assert_eq!(held.len(), 2 * POOL + 1 + 2, "{held:?}");
    let setup = started.elapsed();

    // The browser, on a blocking thread so the runtime keeps serving the page.
    let url = format!("http://{addr}{PAGE_PATH}");
    let browser_started = Instant::now();
    let stop = image_fetched.clone();
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url, &stop))
        .await
        .unwrap();
    let browser_time = browser_started.elapsed();
    let requests = log.lock().unwrap().clone();
    assert!(
        !requests.iter().any(|(path, _)| is_image_fetch(path)),
        "Chromium fetched the image of a hostile string: it was rendered as markup \
         ({requests:?})"
    );
    let dom = dom.unwrap_or_else(|e| panic!("{e}\nrequests: {requests:?}"));

    // Chromium's connection(s) that asked for the page.
    let page_conns: BTreeSet<u64> = requests
        .iter()
        .filter(|(path, _)| path == PAGE_PATH)
        .map(|(_, id)| id.as_u64())
        .collect();
    assert!(
        !page_conns.is_empty(),
        "the page was requested: {requests:?}"
    );

    // No markup from a string anyone controls: no <img> element, the strings only as text.
    assert!(
        !dom.to_ascii_lowercase().contains("<img"),
        "an <img> element in the DOM:\n{dom}"
    );
    assert!(!dom.contains("onerror=\""), "an onerror attribute:\n{dom}");
    assert_eq!(
        dom.matches(HOSTILE_TEXT).count(),
        4,
        "the hostile category in its summary and connection rows, the ALPN in both TLS rows:\n{dom}"
    );

    // One row per live connection: everything held, plus Chromium's own connection(s).
    let rows = table_rows(&dom, "connections");
    let ids: Vec<u64> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 11, "a connection row has 11 cells: {r:?}");
            r[0].parse().unwrap()
        })
        .collect();
    let shown: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(shown.len(), ids.len(), "no connection twice: {ids:?}");
    assert!(shown.is_superset(&held), "held {held:?}, shown {shown:?}");
    assert!(
        page_conns.iter().any(|id| shown.contains(id)),
        "the connection the page came on is listed: {page_conns:?} in {shown:?}"
    );
    assert!(dom.contains(&format!(
        "<p id=\"shown\">{} live connections</p>",
        rows.len()
    )));
    let by_id: BTreeMap<u64, &Vec<String>> = ids.iter().copied().zip(&rows).collect();
    let extra: BTreeSet<u64> = shown.difference(&held).copied().collect();
    for id in &extra {
        let row = by_id[id];
        assert_eq!(
            (row[1].as_str(), row[2].as_str()),
            ("http-in", "server"),
            "a connection not held by the test is Chromium's: {row:?}"
        );
        assert!(row[4].starts_with("127.0.0.1:"), "{row:?}");
    }
    let hostile_row = by_id[&hostile_server.id().as_u64()];
    assert_eq!(
        (hostile_row[1].as_str(), hostile_row[2].as_str()),
        (HOSTILE_TEXT, "server")
    );
    assert_eq!(hostile_row[4], raw_client.local_addr().unwrap().to_string());
    for (id, role) in [
        (tls_server.get_ref().0.id(), "server"),
        (tls_client.get_ref().0.id(), "client"),
    ] {
        let row = by_id[&id.as_u64()];
        assert_eq!(row[2], role);
        assert!(
            row[10].contains(&format!("alpn={HOSTILE_TEXT}")) && row[10].contains("sni=localhost"),
            "{row:?}"
        );
    }

    // The summary: a row per (category, role), with as many active as there are rows.
    let summary = table_rows(&dom, "summary");
    let mut counts: BTreeMap<(String, String), [u64; 5]> = BTreeMap::new();
    for r in &summary {
        assert_eq!(
            r.len(),
            10,
            "a summary row has 10 cells (with Rejected): {r:?}"
        );
        let n = |i: usize| r[i].parse::<u64>().unwrap();
        counts.insert((r[0].clone(), r[1].clone()), [n(2), n(3), n(4), n(5), n(6)]);
    }
    let key = |c: &str, r: &str| (c.to_owned(), r.to_owned());
    let http_in = (POOL + extra.len()) as u64;
    let http_in_counts = counts[&key("http-in", "server")];
    assert_eq!(http_in_counts[0], http_in, "{counts:?}");
    assert!(http_in_counts[1] >= http_in, "{counts:?}");
    assert_eq!(http_in_counts[3..], [0, 0], "{counts:?}");
    let pool_n = POOL as u64;
    let expected = [
        (key("http-pool", "client"), [pool_n, pool_n, 0, 0, 0]),
        (key(HOSTILE_TEXT, "server"), [1, 1, 0, 0, 0]),
        (key("tls-in", "server"), [1, 1, 0, 0, 0]),
        (key("tls-out", "client"), [1, 1, 0, 0, 0]),
    ];
    for (k, want) in &expected {
        assert_eq!(counts.get(k), Some(want), "{k:?} in {counts:?}");
    }
    assert_eq!(counts.len(), expected.len() + 1, "{counts:?}");
    for ((category, role), [active, ..]) in &counts {
        let listed = rows
            .iter()
            .filter(|r| &r[1] == category && &r[2] == role)
            .count() as u64;
        assert_eq!(*active, listed, "{category} {role}");
    }

    // Chromium has exited: its connections close, and each extra row was one of them.
    let deadline = Instant::now() + WAIT;
    while tracker.len() > held.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tracker.len(), held.len(), "Chromium's connections closed");
    let closed: BTreeSet<u64> = tracker
        .recently_closed()
        .iter()
        .filter(|c| &*c.info.category == "http-in")
        .map(|c| c.info.id.as_u64())
        .collect();
    assert!(closed.is_superset(&extra), "{extra:?} in {closed:?}");

    eprintln!(
        "browser test: {} rows ({} of them Chromium's), requests {:?}; setup {:?}, Chromium {:?}",
        rows.len(),
        extra.len(),
        requests.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        setup,
        browser_time
    );
    drop((pool, hostile_server, raw_client, tls_server, tls_client));
    server.abort();
}
