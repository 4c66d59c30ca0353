//! The debug page in a real browser: headless Chromium loads it from a demo-like server (axum
//! on a tracked listener, with keep-alive HTTP clients, a listener whose category is markup,
//! and a TLS connection whose negotiated ALPN is markup) and dumps the DOM it built
//! (`--dump-dom`). The page must show one row per live connection, Chromium's own included,
//! a summary per category that agrees with the rows, and the hostile strings as text: escaped
//! in the serialized DOM, and no `<img>` element anywhere.
//!
//! A second test checks the pictures: the live-connections chart, the age and idle histograms
//! and the waterfall of traced requests, against the page's own tables and the JSON. With
//! `CONNTRACK_SCREENSHOT=<file.png>` set it also saves a 1200×900 screenshot of that page.
//!
//! A third drives Chromium through chromedriver (WebDriver) in a 1200×900 window and measures
//! the laid-out page: no horizontal scrollbar, every column of both connection tables inside
//! the window (the close reason and error of the first closed row among them), and a
//! waterfall with a labelled time axis on which two requests started 100 ms apart are drawn
//! at different x, and the server's waterfall of the same two requests, served through
//! `ExchangeLayer`, inside the window.
//!
//! Chromium: `$CHROME` or `$CHROMIUM` if set, else `/usr/bin/chromium`, else `chromium` on
//! `PATH`; chromedriver: `$CHROMEDRIVER`, `/usr/bin/chromedriver` or on `PATH`. Without them
//! the tests are skipped with a note, except under `CI=true`, where they fail.
#![cfg(all(feature = "axum", feature = "tls"))]

#[path = "support/pki.rs"]
mod pki;
#[path = "support/webdriver.rs"]
mod webdriver;

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
use conntrack_core::render::HtmlOptions;
use conntrack_core::{ConnectionId, DialerConfig, ListenerConfig, Tracker};
use conntrack_tokio::tls::{TlsAcceptor, TlsConnector};
use conntrack_tokio::{debug_router, DebugPage, Dialer, Listener, TrackedConnectInfo};
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
    run_chromium(chromium, url, stop, &["--dump-dom"])
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its standard output.
fn run_chromium(
    chromium: &Path,
    url: &str,
    stop: &AtomicBool,
    extra: &[&str],
) -> Result<String, String> {
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
        .args(extra)
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

/// The rows of the table with id `id` in a serialized DOM, each as its cells' full values as
/// serialized HTML text: a cell's `title` when it has one (where the page puts what it
/// shortened), else its contents (HTML-escaped text, as the browser writes it back).
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
                    let open = tag_end(cell) + 1;
                    let close = cell.find("</td>").expect("cell end");
                    match attr(&cell[..open], "title") {
                        Some(title) => escape_text(&unescape(title)),
                        // (An address may break before its port.)
                        None => cell[open..close].replace("<wbr>", ""),
                    }
                })
                .collect()
        })
        .collect()
}

/// Where the tag that `tag` begins ends: its first `>` outside a quoted attribute value.
fn tag_end(tag: &str) -> usize {
    let mut quoted = false;
    for (i, c) in tag.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '>' if !quoted => return i,
            _ => {}
        }
    }
    panic!("tag not closed: {tag}")
}

/// An attribute value as it was before serialization.
fn unescape(value: &str) -> String {
    value
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Text as a browser serializes it: `&`, `<` and `>` escaped.
fn escape_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A serialized DOM split in two: its markup with every attribute value emptied, and those
/// values, unescaped. (Browsers differ in whether they escape `<` in an attribute value; in
/// the markup that is left, a `<` always opens a tag.)
fn split_attributes(dom: &str) -> (String, Vec<String>) {
    let (mut markup, mut values) = (String::new(), Vec::new());
    let (mut in_tag, mut value) = (false, None::<String>);
    for c in dom.chars() {
        if let Some(v) = value.as_mut() {
            if c == '"' {
                values.push(unescape(v));
                value = None;
                markup.push(c);
            } else {
                v.push(c);
            }
            continue;
        }
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            '"' if in_tag => value = Some(String::new()),
            _ => {}
        }
        markup.push(c);
    }
    (markup, values)
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

    // No markup from a string anyone controls: no <img> element, the strings only as text
    // (or as attribute values: the full text of a shortened cell is in its `title`).
    let (markup, attributes) = split_attributes(&dom);
    assert!(
        !markup.to_ascii_lowercase().contains("<img"),
        "an <img> element in the DOM:\n{dom}"
    );
    assert!(
        !markup.contains("onerror=\""),
        "an onerror attribute:\n{dom}"
    );
    assert_eq!(
        markup.matches(HOSTILE_TEXT).count(),
        2,
        "the hostile category as text in its summary row and in the live chart's legend:\n{dom}"
    );
    assert_eq!(
        attributes.iter().filter(|v| v.contains(HOSTILE)).count(),
        3,
        "the hostile category in the title of its (shortened) connection cell, the ALPN in the \
         titles of both TLS cells: {attributes:?}"
    );

    // One row per live connection: everything held, plus Chromium's own connection(s).
    let rows = table_rows(&dom, "connections");
    let ids: Vec<u64> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 14, "a connection row has 14 cells: {r:?}");
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
            row[13].contains(&format!("ALPN {HOSTILE_TEXT}")) && row[13].contains("SNI localhost"),
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
    // The summary's totals and the rows are two reads of the tracker: a connection of
    // Chromium's own (a second page connection, a favicon) can open or close between them.
    // The test's own connections do not change meanwhile.
    assert!(
        (POOL as u64..=http_in + 2).contains(&http_in_counts[0]),
        "{counts:?} against {http_in} rows"
    );
    assert!(http_in_counts[1] >= POOL as u64, "{counts:?}");
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
        if category == "http-in" {
            // Chromium's own connections (as above) can open or close between the two reads.
            assert!(
                active.abs_diff(listed) <= 2,
                "{category} {role}: {active} active, {listed} listed"
            );
        } else {
            assert_eq!(*active, listed, "{category} {role}");
        }
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

/// `data-NAME="..."` of the first tag in `tag` that has it.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    Some(&tag[start..start + tag[start..].find('"')?])
}

/// The opening tags of the elements of `class` inside the element with id `id`.
fn tags_in<'a>(dom: &'a str, id: &str, class: &str) -> Vec<&'a str> {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in:\n{dom}"));
    let svg = &dom[start..];
    let svg = &svg[..svg.find("</svg>").expect("svg end")];
    svg.split('<')
        .filter(|t| t.contains(&format!("class=\"{class}\"")))
        .collect()
}

/// A keep-alive HTTP/1.1 GET on `stream`, traced with `req`: returns the response body.
async fn traced_get(
    stream: &mut conntrack_tokio::Tracked<tokio::net::TcpStream>,
    req: &conntrack_core::RequestTrace,
    host: &str,
    path: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    req.get_conn(host);
    req.got_conn(stream.connection().downgrade(), true);
    // One write carries the whole request: it is written when that write completes.
    req.body_done();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the head and the `content-length` bytes after it are in.
    let (body_start, end) = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server hung up");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            break (head_end + 4, head_end + 4 + len);
        }
    };
    while buf.len() < end {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server hung up");
        buf.extend_from_slice(&chunk[..n]);
    }
    req.finish();
    String::from_utf8_lossy(&buf[body_start..end]).into_owned()
}

/// A plain HTTP/1.1 GET on a fresh untracked connection (`Connection: close`): the body.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    text[text.find("\r\n\r\n").unwrap() + 4..].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_draws_the_charts_and_the_waterfall() {
    let Some(chromium) = find_chromium() else {
        conntrack_testkit::tool_missing(
            "browser::chromium_draws_the_charts_and_the_waterfall",
            "Chromium",
            "apt-get install chromium chromium-driver, or set CHROME to a Chromium binary",
        );
        return;
    };
    // The waterfall's ring of recent requests is opt-in.
    let tracker = Tracker::builder().recent_requests(32).build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http-in"));
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .nest(PAGE_PATH, debug_router(&tracker));
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );

    // Traced requests: three on one keep-alive connection (the first dialed for it, the
    // others reusing it), one of them with markup in its URI.
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("http-traced"));
    let mut stream = dialer.connect_addr(addr).await.unwrap();
    let host = addr.to_string();
    // (The URI a trace reports is what the client says it is: markup there is sent
    // percent-encoded, and shown as the client gave it.)
    let hostile_uri = format!("http://{host}/hello?q={HOSTILE}");
    for (uri, path) in [
        (format!("http://{host}/hello"), "/hello"),
        (format!("http://{host}/hello?second"), "/hello?second"),
        (hostile_uri, "/hello?q=%3Cimg%20src=x%20onerror=alert(1)%3E"),
    ] {
        let req = tracker.request("GET", &uri);
        assert_eq!(traced_get(&mut stream, &req, &host, path).await, "hello");
    }
    let timings = tracker.recent_requests();
    assert_eq!(timings.len(), 3, "{timings:?}");
    assert!(!timings[2].reused && timings[1].reused && timings[0].reused);
    assert!(timings[2].phases.connect.is_some(), "{timings:?}");
    for t in &timings {
        let p = &t.phases;
        assert!(
            p.send.is_some() && p.wait.is_some() && p.transfer.is_some(),
            "{t:?}"
        );
    }

    // The page, as Chromium renders it.
    let url = format!("http://{addr}{PAGE_PATH}");
    let stop = AtomicBool::new(false);
    let dom = {
        let (chromium, url) = (chromium.clone(), url.clone());
        tokio::task::spawn_blocking(move || dump_dom(&chromium, &url, &stop))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // And the JSON, after it.
    let json: serde_json::Value =
        serde_json::from_str(&fetch(addr, &format!("{PAGE_PATH}?format=json")).await).unwrap();

    // Still escaped everywhere: the markup of the URI is text in the waterfall.
    let (markup, _) = split_attributes(&dom);
    assert!(!markup.to_ascii_lowercase().contains("<img"), "{dom}");
    assert!(markup.contains("&lt;img"), "{dom}");

    // The waterfall: a row per traced request, oldest first (the JSON lists them newest
    // first), each phase the JSON has, with its value.
    let rows = tags_in(&dom, "waterfall", "request");
    let json_requests = json["requests"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(json_requests.len(), 3);
    let phases = tags_in(&dom, "waterfall", "phase");
    let mut phase_iter = phases.iter();
    for (row, r) in rows.iter().zip(json_requests.iter().rev()) {
        assert_eq!(attr(row, "data-id").unwrap(), r["id"].to_string());
        let total: f64 = attr(row, "data-total").unwrap().parse().unwrap();
        assert_eq!(total, r["total"].as_f64().unwrap());
        for name in [
            "blocked", "dns", "connect", "tls", "send", "wait", "transfer",
        ] {
            let Some(want) = r["phases"][name].as_f64() else {
                continue;
            };
            let tag = phase_iter.next().expect("a bar per phase");
            assert_eq!(attr(tag, "data-phase"), Some(name), "{tag}");
            let got: f64 = attr(tag, "data-secs").unwrap().parse().unwrap();
            assert_eq!(got, want, "{name} of request {}", r["id"]);
        }
    }
    assert!(phase_iter.next().is_none(), "no bar without a phase");
    // And each phase again as a share of its request's total, in the column at the right.
    let shares = tags_in(&dom, "waterfall", "share");
    assert_eq!(shares.len(), phases.len());
    for (share, phase) in shares.iter().zip(&phases) {
        assert_eq!(attr(share, "data-phase"), attr(phase, "data-phase"));
    }

    // The live chart: a line per category and role, ending at the summary's active count, and
    // the JSON (taken after) agrees for the connections the test holds.
    let summary = table_rows(&dom, "summary");
    let series = tags_in(&dom, "chart-live", "series");
    assert_eq!(series.len(), summary.len(), "{series:?}");
    let chart_start = dom.find("id=\"chart-live\"").unwrap();
    let legend: Vec<(String, u64)> = dom
        [chart_start..dom[chart_start..].find("</svg>").unwrap() + chart_start]
        .split("<text")
        .filter_map(|t| {
            let text = &t[t.find('>')? + 1..t.find("</text>")?];
            let (label, n) = text.rsplit_once(": ")?;
            Some((label.to_owned(), n.parse().ok()?))
        })
        .collect();
    for r in &summary {
        let label = format!("{} {}", r[0], r[1]);
        let active: u64 = r[2].parse().unwrap();
        assert!(
            legend.contains(&(label.clone(), active)),
            "{label}: {active} in {legend:?}"
        );
    }
    for tag in &series {
        let last: u64 = attr(tag, "data-last").unwrap().parse().unwrap();
        assert!(legend.iter().any(|(_, n)| *n == last));
    }
    let samples = json["active_samples"].as_array().unwrap();
    let last_sample = samples.last().unwrap()["active"].as_array().unwrap();
    assert!(
        last_sample.contains(&serde_json::json!(["http-traced", "client", 1])),
        "{last_sample:?}"
    );
    assert!(
        legend.contains(&("http-traced client".to_owned(), 1)),
        "{legend:?}"
    );
    let samples_in_page: usize = attr(tags_in(&dom, "chart-live", "series")[0], "data-last")
        .map(|_| {
            let svg = &dom[chart_start..];
            attr(svg, "data-samples").unwrap().parse().unwrap()
        })
        .unwrap();
    assert!(samples.len() >= samples_in_page && samples_in_page >= 1);

    // The histograms: the bins of the page's own table (same snapshot), every row counted.
    let table = &dom[dom.find("id=\"connections\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let values = |col: usize| -> Vec<f64> {
        table
            .split("<tr>")
            .skip(2)
            .map(|row| {
                let cell = row.split("<td").nth(col + 1).unwrap();
                attr(cell, "data-v").unwrap().parse().unwrap()
            })
            .collect()
    };
    for (id, col) in [("hist-age", 6), ("hist-idle", 9)] {
        let secs = values(col);
        let bars = tags_in(&dom, id, "bar");
        assert_eq!(bars.len(), 6);
        let mut total = 0;
        for bar in &bars {
            let lo: f64 = attr(bar, "data-lo").unwrap().parse().unwrap();
            let hi: f64 = match attr(bar, "data-hi").unwrap() {
                "inf" => f64::INFINITY,
                v => v.parse().unwrap(),
            };
            let count: usize = attr(bar, "data-count").unwrap().parse().unwrap();
            let want = secs
                .iter()
                .filter(|&&s| s.floor() >= lo && s.floor() < hi)
                .count();
            assert_eq!(count, want, "{id} [{lo}, {hi}): {secs:?}");
            total += count;
        }
        assert_eq!(total, secs.len(), "{id}");
        assert!(total >= 2, "the traced connection's two ends at least");
    }
    assert!(json["total_connections"].as_u64().unwrap() >= 2);

    if let Some(path) = std::env::var_os("CONNTRACK_SCREENSHOT") {
        let shot = format!("--screenshot={}", Path::new(&path).display());
        let stop = AtomicBool::new(false);
        tokio::task::spawn_blocking(move || {
            run_chromium(
                &chromium,
                &url,
                &stop,
                &[&shot, "--window-size=1200,900", "--hide-scrollbars"],
            )
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    }
    drop(stream);
    server.abort();
}

/// Measures the page laid out in the window: the document's and each table box's widths, the
/// headers, every cell of the first closed row once it is scrolled into view, the axis labels
/// of the live chart and the waterfall, and where each waterfall row's first bar begins.
const MEASURE: &str = r"
const de = document.documentElement;
const box = e => { const r = e.getBoundingClientRect();
  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, text: e.textContent}; };
const out = {innerWidth: innerWidth, innerHeight: innerHeight,
  scrollWidth: de.scrollWidth, clientWidth: de.clientWidth};
out.tables = Array.from(document.querySelectorAll('table')).map(t => ({id: t.id,
  right: t.getBoundingClientRect().right, boxScrollWidth: t.parentElement.scrollWidth,
  boxClientWidth: t.parentElement.clientWidth}));
out.liveHeaders = Array.from(document.querySelectorAll('#connections th')).map(h => h.textContent);
out.closedHeaders = Array.from(document.querySelectorAll('#closed th')).map(h => h.textContent);
out.liveRows = Array.from(document.querySelectorAll('#connections tbody tr'))
  .map(r => Array.from(r.cells).map(c => c.textContent));
const row = document.querySelector('#closed tbody tr');
row.querySelector('td.reason').scrollIntoView({block: 'center', inline: 'nearest'});
out.scrollX = scrollX;
out.closedRow = Array.from(row.cells).map(box);
out.reason = box(row.querySelector('td.reason'));
out.error = box(row.querySelector('td.err'));
out.liveTicks = Array.from(document.querySelectorAll('#chart-live g.tick.x text')).map(t => t.textContent);
out.ticks = Array.from(document.querySelectorAll('#waterfall g.tick text')).map(t => t.textContent);
out.requests = Array.from(document.querySelectorAll('#waterfall g.request')).map(g => ({
  id: Number(g.dataset.id), start: Number(g.dataset.start),
  x: g.querySelector('rect.phase').getBoundingClientRect().left}));
out.served = Array.from(document.querySelectorAll('#server-waterfall g.exchange')).map(g => ({
  id: Number(g.dataset.id), label: g.querySelector('text').textContent,
  phases: g.querySelectorAll('rect.phase').length}));
const sw = document.getElementById('server-waterfall');
out.servedBox = sw ? box(sw) : null;
out.images = document.getElementsByTagName('img').length;
return out;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn chromium_at_1200_px_shows_every_column_and_a_timed_waterfall() {
    const TEST: &str = "browser::chromium_at_1200_px_shows_every_column_and_a_timed_waterfall";
    let Some(chromium) = find_chromium() else {
        conntrack_testkit::tool_missing(
            TEST,
            "Chromium",
            "apt-get install chromium chromium-driver, or set CHROME to a Chromium binary",
        );
        return;
    };
    let Some(chromedriver) = webdriver::find_chromedriver() else {
        conntrack_testkit::tool_missing(
            TEST,
            "chromedriver",
            "apt-get install chromium-driver, or set CHROMEDRIVER to a chromedriver binary",
        );
        return;
    };
    let tracker = Tracker::builder().history(64).recent_requests(32).build();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Listener::new(&tracker, inner, ListenerConfig::new().category("http-in"));
    // No reload while the page is measured.
    let mut options = HtmlOptions::default();
    options.refresh_secs = None;
    // The requests are served through `ExchangeLayer` too: the server's waterfall has them.
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(conntrack_tokio::exchange::ExchangeLayer::new(&tracker))
        .nest(
            PAGE_PATH,
            DebugPage::new(&tracker).html_options(options).router(),
        );
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<TrackedConnectInfo>(),
        )
        .into_future(),
    );

    // Two traced requests on one keep-alive connection, the second begun 100 ms after the
    // first (a gap the scenario makes, not a wait for anything).
    let host = addr.to_string();
    let dialer = Dialer::new(&tracker, DialerConfig::new().category("http-traced"));
    let mut stream = dialer.connect_addr(addr).await.unwrap();
    let first_started = tokio::time::Instant::now();
    let req = tracker.request("GET", &format!("http://{host}/hello?first"));
    assert_eq!(
        traced_get(&mut stream, &req, &host, "/hello?first").await,
        "hello"
    );
    tokio::time::sleep_until(first_started + Duration::from_millis(100)).await;
    let req = tracker.request("GET", &format!("http://{host}/hello?second"));
    assert_eq!(
        traced_get(&mut stream, &req, &host, "/hello?second").await,
        "hello"
    );
    let timings = tracker.recent_requests();
    assert_eq!(timings.len(), 2, "{timings:?}");
    let (second, first) = (&timings[0], &timings[1]);
    assert!(
        second.started_at.duration_since(first.started_at).unwrap() >= Duration::from_millis(100),
        "{timings:?}"
    );
    // The server's side of them ends when its response has been flushed, which may be just
    // after the client has read it (a bounded wait).
    let served_by = Instant::now() + Duration::from_secs(10);
    while tracker.recent_server_exchanges().len() < 2 {
        assert!(Instant::now() < served_by, "the server never finished");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Closed connections whose cells are as wide as they get: a long category and a
    // long dial target (shortened, the whole in the tooltip), and last, so that it is the
    // first closed row, a real loopback connection closed with a long error text.
    let wide = tracker.register(
        conntrack_core::Registration::client(
            "[::1]:40000".parse::<std::net::SocketAddr>().unwrap(),
            "[::1]:8443".parse::<std::net::SocketAddr>().unwrap(),
        )
        .category("a-category-name-wider-than-its-column")
        .target("an-internal-service-with-a-long-name.cluster.local:8443"),
    );
    wide.close();
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = inner.local_addr().unwrap();
    let reset_listener = Listener::new(
        &tracker,
        inner,
        ListenerConfig::new().category("upload-service"),
    );
    let (accepted, raw_client) = tokio::join!(
        reset_listener.accept(),
        tokio::net::TcpStream::connect(reset_addr)
    );
    let (reset_server, raw_client) = (accepted.unwrap().0, raw_client.unwrap());
    let reset_id = reset_server.id();
    reset_server.connection().record_error(&std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset by peer (os error 104) while writing a 16384-byte response body",
    ));
    drop(reset_server);
    let newest_closed = tracker.recently_closed();
    assert_eq!(newest_closed[0].info.id, reset_id);

    // The browser, through chromedriver, in a 1200×900 window.
    let driver = webdriver::ChromeDriver::start(&chromedriver).unwrap_or_else(|e| panic!("{e}"));
    let session = driver
        .session(&chromium, 1200, 900)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{addr}{PAGE_PATH}");
    session
        .navigate(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .set_viewport(1200, 900)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let m = session
        .execute(MEASURE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = session.close().await;
    drop(driver);
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("a number: {v}"));

    assert_eq!(
        (num(&m["innerWidth"]), num(&m["innerHeight"])),
        (1200.0, 900.0),
        "{m}"
    );
    assert_eq!(m["images"], 0, "no <img> element");
    // No horizontal scrollbar, on the page or on any table's box.
    let width = num(&m["clientWidth"]);
    assert!(
        num(&m["scrollWidth"]) <= width,
        "the page scrolls sideways: {m}"
    );
    let tables = m["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 3, "{m}");
    for t in tables {
        assert!(
            num(&t["boxScrollWidth"]) <= num(&t["boxClientWidth"]) && num(&t["right"]) <= width,
            "table #{} does not fit: {t}",
            t["id"]
        );
    }

    // REQS and STATE, as the text table has them; the traced connection has carried two.
    let headers: Vec<&str> = m["liveHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            "ID", "Category", "Role", "Local", "Remote", "Target", "Age", "Read", "Written",
            "Idle", "Reqs", "State", "RTT", "TLS"
        ]
    );
    let closed_headers: Vec<&str> = m["closedHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(closed_headers[3], "Reason");
    assert_eq!(closed_headers.last(), Some(&"Error"));
    assert_eq!(closed_headers.len(), headers.len() + 2);
    let traced_id = stream.id().as_u64().to_string();
    let traced_row = m["liveRows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == traced_id.as_str())
        .unwrap_or_else(|| panic!("the traced connection's row: {m}"));
    assert_eq!(
        (&traced_row[10], &traced_row[11]),
        (&"2".into(), &"idle".into())
    );

    // The first closed row, scrolled into view: every cell, its reason and error among them,
    // inside the window, the page not scrolled sideways.
    assert_eq!(num(&m["scrollX"]), 0.0);
    let inside =
        |cell: &serde_json::Value| num(&cell["left"]) >= 0.0 && num(&cell["right"]) <= width;
    for cell in m["closedRow"].as_array().unwrap() {
        assert!(inside(cell), "a cell outside the window: {cell}");
    }
    let reason = &m["reason"];
    assert!(inside(reason), "{reason}");
    assert!(
        num(&reason["top"]) >= 0.0 && num(&reason["bottom"]) <= 900.0,
        "{reason}"
    );
    assert_eq!(reason["text"], newest_closed[0].reason.as_str());
    assert!(m["error"]["text"]
        .as_str()
        .unwrap()
        .contains("connection reset by peer"));

    // The live chart's time axis ends at "now".
    let live_ticks = m["liveTicks"].as_array().unwrap();
    assert_eq!(live_ticks[0], "now", "{m}");
    assert!(live_ticks.len() >= 3, "{m}");

    // The waterfall: a labelled time axis from 0, in milliseconds here; the two requests in
    // the order they began, the second drawn to the right of the first, where its start is.
    let ticks: Vec<&str> = m["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert_eq!(ticks[0], "0");
    assert!(ticks[1..].iter().all(|t| t.ends_with("ms")), "{ticks:?}");
    let requests = m["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{m}");
    assert_eq!(num(&requests[0]["id"]), first.id as f64);
    assert_eq!(num(&requests[1]["id"]), second.id as f64);
    assert_eq!(num(&requests[0]["start"]), 0.0);
    assert!(num(&requests[1]["start"]) >= 0.1, "{requests:?}");
    let (x0, x1) = (num(&requests[0]["x"]), num(&requests[1]["x"]));
    assert!(
        x1 > x0 + 100.0,
        "started 100 ms apart, drawn at {x0} and {x1}"
    );

    // The server's waterfall: the same two requests, each with its phases, inside the window.
    let served = m["served"].as_array().unwrap();
    assert_eq!(served.len(), 2, "{m}");
    for x in served {
        let label = x["label"].as_str().unwrap();
        // The text's content: its tooltip (`<title>`), then what the row shows.
        assert!(label.contains("GET /hello 200 · HTTP/1.1 · #"), "{x}");
        assert!(
            num(&x["phases"]) >= 4.0,
            "waiting, head, handler, write: {x}"
        );
    }
    let served_box = &m["servedBox"];
    assert!(
        inside(served_box),
        "the server waterfall overflows: {served_box}"
    );

    drop((stream, raw_client));
    server.abort();
}
