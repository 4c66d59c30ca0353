//! Hostile strings through every rendering: arbitrary bytes in categories, Unix socket paths,
//! dial targets, SNI, ALPN, certificate subjects and error texts must leave each output valid in
//! its own format, with one row per connection: the text tables, the HTML page, the JSON
//! snapshot, the Prometheus exposition of the metric labels, and the `tracing` fields.
#![cfg(all(unix, feature = "serde", feature = "metrics", feature = "tracing"))]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use conntrack_core::metrics::{MetricsCollector, MetricsHook};
use conntrack_core::render::{self, HtmlOptions, Snapshot};
use conntrack_core::tracing::TracingHook;
use conntrack_core::{Addr, PeerCertificates, Registration, Role, TlsInfo, Tracker};
use metrics_exporter_prometheus::formatting::sanitize_label_value;
use metrics_exporter_prometheus::PrometheusBuilder;
use proptest::prelude::*;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// The attack from the review: a Unix socket path that forges a row and colours the terminal.
const FORGED: &str = "x\n999 admin server FORGED-ROW \x1b[31mred\x1b[0m";

/// Characters that break rows, columns, markup or terminals, mixed with plain ones.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => prop::sample::select(vec![
            '\n', '\r', '\t', '\x1b', '\0', '\x7f', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}',
            '\u{2066}', ' ', ' ', '\\', '"', '\'', '<', '>', '&', '{', '}', '=', ',', '#', '-',
        ]),
        3 => prop::char::range('a', 'z'),
    ]
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(FORGED.to_owned()),
        6 => prop::collection::vec(hostile_char(), 0..16).prop_map(String::from_iter),
    ]
}

fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(FORGED.as_bytes().to_vec()),
        3 => prop::collection::vec(any::<u8>(), 0..16),
        3 => hostile_string().prop_map(String::into_bytes),
    ]
}

/// What one connection is made of.
#[derive(Debug, Clone)]
struct Conn {
    category: String,
    role: Role,
    local: Vec<u8>,
    remote: Vec<u8>,
    target: String,
    tls: Option<(String, Vec<u8>, String)>,
    error: Option<String>,
    closed: bool,
}

fn conn() -> impl Strategy<Value = Conn> {
    (
        hostile_string(),
        any::<bool>(),
        hostile_bytes(),
        hostile_bytes(),
        hostile_string(),
        prop::option::of((hostile_string(), hostile_bytes(), hostile_string())),
        prop::option::of(hostile_string()),
        any::<bool>(),
    )
        .prop_map(
            |(category, server, local, remote, target, tls, error, closed)| Conn {
                category,
                role: if server { Role::Server } else { Role::Client },
                local,
                remote,
                target,
                tls,
                error,
                closed,
            },
        )
}

fn unix(bytes: &[u8]) -> Addr {
    Addr::Unix(Some(Arc::from(PathBuf::from(OsString::from_vec(
        bytes.to_vec(),
    )))))
}

/// Whether a character must never reach a line-oriented output raw.
fn breaks_lines(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Every field value of every span and event, formatted as a plain line-oriented logger would
/// write it: `Display` and `&str` values as they are.
#[derive(Clone, Default)]
struct Fields(Arc<Mutex<Vec<(String, String)>>>);

struct Visit<'a>(&'a Fields);

impl tracing::field::Visit for Visit<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0
             .0
            .lock()
            .unwrap()
            .push((field.name().into(), value.into()));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.0 .0.lock().unwrap().push((field.name().into(), text));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Fields {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        attrs.record(&mut Visit(self));
    }
    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: Context<'_, S>,
    ) {
        values.record(&mut Visit(self));
    }
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        event.record(&mut Visit(self));
    }
}

/// Runs the connections through a tracker with the tracing and metrics hooks installed, and
/// returns the snapshot, the Prometheus exposition and the tracing field values.
fn run(conns: &[Conn]) -> (Snapshot, String, Vec<(String, String)>) {
    let fields = Fields::default();
    let subscriber = tracing_subscriber::registry().with(fields.clone());
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let snapshot = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || {
            let tracker = Tracker::builder()
                .hook(TracingHook::new())
                .hook(MetricsHook::new())
                .history(64)
                .build();
            let mut open = Vec::new();
            for c in conns {
                let reg = match c.role {
                    Role::Server => Registration::server(unix(&c.local), unix(&c.remote)),
                    Role::Client => Registration::client(unix(&c.local), unix(&c.remote)),
                };
                let conn = tracker.register(reg.category(&*c.category).target(&*c.target));
                if let Some((sni, alpn, subject)) = &c.tls {
                    conn.report_tls_handshake_start(Some(sni));
                    let tls = TlsInfo::new("1.3", "TLS_AES_128_GCM_SHA256")
                        .with_server_name(sni.clone())
                        .with_alpn(alpn.clone())
                        .with_peer_certificates(
                            PeerCertificates::new(1).with_leaf_subject(subject.clone()),
                        );
                    conn.report_tls_handshake_done(Ok(tls), std::time::Duration::ZERO);
                }
                conn.record_read(3);
                if let Some(e) = &c.error {
                    conn.record_error(&io::Error::other(e.clone()));
                }
                if c.closed {
                    drop(conn);
                } else {
                    open.push(conn);
                }
            }
            MetricsCollector::new(&tracker).collect();
            let snapshot = Snapshot::of(&tracker);
            drop(open);
            snapshot
        })
    });
    let fields = fields.0.lock().unwrap().clone();
    (snapshot, handle.render(), fields)
}

/// Splits a text-table line into its cells: they are separated by runs of two or more spaces.
/// (Only ASCII spaces pad a cell: a cell holding other white space, such as a no-break space,
/// is not empty.)
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(|c| c.trim_matches(' '))
        .filter(|c| !c.is_empty())
        .collect()
}

fn check_text(snapshot: &Snapshot) {
    let table = render::text_table(&snapshot.connections);
    assert!(table.ends_with('\n'));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + snapshot.connections.len(), "{table}");
    let width = cells(lines[0]).len();
    for (line, c) in lines[1..].iter().zip(&snapshot.connections) {
        assert!(!line.chars().any(breaks_lines), "raw control in {line:?}");
        let row = cells(line);
        assert_eq!(row.len(), width, "{line:?}");
        assert_eq!(row[0], c.id.to_string());
        assert_eq!(row[2], c.role.as_str());
    }
    let stats = render::text_stats(&snapshot.stats);
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(lines.len(), 1 + snapshot.stats.categories.len(), "{stats}");
    let width = cells(lines[0]).len();
    for line in &lines[1..] {
        assert!(!line.chars().any(breaks_lines), "raw control in {line:?}");
        assert_eq!(cells(line).len(), width, "{line:?}");
    }
}

/// The page up to its script, as a sequence of tags and text: every `<` opens a tag that ends
/// at the next `>` with no `<` inside, attribute values are quoted without quotes inside, and
/// every `&` in text starts one of the entities the page uses.
fn check_markup(page: &str) {
    let body = page.split("<script>").next().unwrap();
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        check_html_text(&rest[..lt]);
        let gt = rest[lt..].find('>').expect("tag closed") + lt;
        let tag = &rest[lt + 1..gt];
        assert!(!tag.contains('<'), "tag {tag:?}");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "attribute quotes in {tag:?}"
        );
        rest = &rest[gt + 1..];
    }
    check_html_text(rest);
}

fn check_html_text(text: &str) {
    assert!(!text.contains('>'), "raw > in text {text:?}");
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "bare & in text {text:?}"
        );
    }
}

/// The rows of the table with `id`, each as its number of cells.
fn html_rows(page: &str, id: &str) -> Vec<usize> {
    let table = page
        .split(&format!("id=\"{id}\""))
        .nth(1)
        .expect("table present")
        .split("</table>")
        .next()
        .unwrap();
    let tbody = table.split("<tbody>").nth(1).expect("tbody");
    tbody
        .split("<tr>")
        .skip(1)
        .map(|row| row.matches("<td").count())
        .collect()
}

fn check_html(snapshot: &Snapshot) {
    let page = render::html(snapshot, &HtmlOptions::default());
    check_markup(&page);
    let live = html_rows(&page, "connections");
    assert_eq!(live.len(), snapshot.connections.len());
    assert!(live.iter().all(|&n| n == 14), "{live:?}");
    let closed = html_rows(&page, "closed");
    assert_eq!(closed.len(), snapshot.recently_closed.len());
    assert!(closed.iter().all(|&n| n == 16), "{closed:?}");
}

fn check_json(snapshot: &Snapshot) {
    let json = render::json(snapshot);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), snapshot.connections.len());
    for (j, c) in conns.iter().zip(&snapshot.connections) {
        assert_eq!(
            j["category"].as_str(),
            Some(&*c.category),
            "exact, not escaped"
        );
        assert_eq!(j["remote_addr"].as_str(), Some(&*c.remote_addr.to_string()));
        assert_eq!(j["target"].as_str(), c.target.as_deref());
        if let Some(tls) = &c.tls {
            assert_eq!(j["tls"]["server_name"].as_str(), tls.server_name.as_deref());
        }
    }
    let closed = v["recently_closed"].as_array().unwrap();
    assert_eq!(closed.len(), snapshot.recently_closed.len());
    for (j, c) in closed.iter().zip(&snapshot.recently_closed) {
        assert_eq!(j["error"].as_str(), c.error.as_deref());
    }
}

/// One sample line of the Prometheus text format: `name{k="v",...} value`, label values with
/// only the `\\`, `\"` and `\n` escapes. Returns the name and the labels, unescaped.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>) {
    let name_end = line.find(['{', ' ']).expect("name then labels or value");
    let name = &line[..name_end];
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "metric name {name:?}"
    );
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find("=\"").expect("label=\"value\"");
            let key = &rest[..eq];
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {key:?} in {line:?}"
            );
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next().expect("label value closed") {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().expect("escape").1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => panic!("invalid escape \\{c} in {line:?}"),
                    },
                    (_, '\n') => panic!("raw newline in {line:?}"),
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &rest[eq + 2 + end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.strip_prefix(' ').expect("space before the value");
    assert!(value.parse::<f64>().is_ok(), "value {value:?} in {line:?}");
    (name.to_owned(), labels)
}

fn check_metrics(snapshot: &Snapshot, exposition: &str) {
    let mut series = BTreeSet::new();
    for line in exposition.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels) = parse_sample(line);
        if name == "conntrack_active_connections" {
            let get = |k: &str| labels.iter().find(|(key, _)| key == k).unwrap().1.clone();
            series.insert((get("category"), get("role")));
        }
    }
    // One series per (category, role), as the exporter writes the category (it folds some
    // backslash sequences, so compare with its own spelling).
    let want: BTreeSet<(String, String)> = snapshot
        .stats
        .categories
        .iter()
        .map(|c| (sanitize_label_value(&c.category), c.role.to_string()))
        .collect();
    let got: BTreeSet<(String, String)> = series
        .into_iter()
        .map(|(c, r)| (sanitize_label_value(&c), r))
        .collect();
    assert_eq!(got.len(), want.len(), "{exposition}");
}

fn check_tracing(fields: &[(String, String)]) {
    assert!(!fields.is_empty());
    for (name, value) in fields {
        assert!(
            !value.chars().any(breaks_lines),
            "field {name} = {value:?} is not escaped"
        );
    }
}

/// Strings longer than any cell of the HTML tables shows whole, so the page shortens them
/// (cutting wherever the middle falls, inside an entity's worth of markup too).
fn long_hostile_string() -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 15..48).prop_map(String::from_iter)
}

fn long_conn() -> impl Strategy<Value = Conn> {
    (
        long_hostile_string(),
        long_hostile_string(),
        long_hostile_string(),
        long_hostile_string(),
        any::<bool>(),
    )
        .prop_map(|(category, remote, target, alpn, closed)| Conn {
            category,
            role: Role::Client,
            local: b"/run/a-socket-path-long-enough-to-be-shortened.sock".to_vec(),
            remote: remote.into_bytes(),
            target,
            tls: Some(("sni".into(), alpn.into_bytes(), "cn".into())),
            error: Some("x".repeat(30)),
            closed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn shortened_hostile_strings_leave_the_page_well_formed(
        conns in prop::collection::vec(long_conn(), 1..4)
    ) {
        let (snapshot, _, _) = run(&conns);
        check_html(&snapshot);
    }

    #[test]
    fn hostile_strings_leave_every_output_well_formed(
        conns in prop::collection::vec(conn(), 1..5)
    ) {
        let (snapshot, exposition, fields) = run(&conns);
        prop_assert_eq!(
            snapshot.connections.len() + snapshot.recently_closed.len(),
            conns.len()
        );
        check_text(&snapshot);
        check_html(&snapshot);
        check_json(&snapshot);
        check_metrics(&snapshot, &exposition);
        check_tracing(&fields);
    }
}

#[test]
fn the_forged_row_from_the_review_stays_in_its_cell() {
    let conns = [Conn {
        category: "api".into(),
        role: Role::Server,
        local: b"/run/app.sock".to_vec(),
        remote: FORGED.as_bytes().to_vec(),
        target: FORGED.into(),
        tls: None,
        error: None,
        closed: false,
    }];
    let (snapshot, _, fields) = run(&conns);
    let table = render::text_table(&snapshot.connections);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(!table.contains('\x1b'));
    assert!(table.contains(r"unix:x\n999 admin server FORGED-ROW \u{1b}[31mred\u{1b}[0m"));
    let peer = fields
        .iter()
        .find(|(k, _)| k == "network.peer.address")
        .unwrap();
    assert_eq!(
        peer.1,
        r"x\n999 admin server FORGED-ROW \u{1b}[31mred\u{1b}[0m"
    );
    check_text(&snapshot);
}

/// A cell too narrow for its value shows it shortened, with the whole value, escaped, in its
/// `title`; the waterfall shows a hostile request URI only as escaped text.
#[test]
fn shortened_cells_and_request_uris_stay_escaped() {
    let hostile = "<img src=x onerror=alert(1)>\"'&<script>alert(2)</script>";
    let conns = [Conn {
        category: hostile.into(),
        role: Role::Client,
        local: b"/run/app.sock".to_vec(),
        remote: hostile.as_bytes().to_vec(),
        target: hostile.into(),
        tls: Some((hostile.into(), hostile.as_bytes().to_vec(), hostile.into())),
        error: Some(hostile.into()),
        closed: true,
    }];
    let (snapshot, _, _) = run(&conns);
    check_html(&snapshot);
    let page = render::html(&snapshot, &HtmlOptions::default());
    let escaped = render::escape_html(hostile);
    // The category, the remote address, the target: each whole in a `title`.
    assert!(
        page.contains(&format!("<td title=\"{escaped}\">")),
        "{page}"
    );
    assert!(
        page.contains(&format!(" title=\"unix:{escaped}\">")),
        "{page}"
    );
    assert!(
        page.contains(&format!("<td class=\"a\" title=\"{escaped}\">")),
        "{page}"
    );
    assert!(
        page.contains(&format!("ALPN {escaped}, SNI {escaped}")),
        "{page}"
    );
    assert!(
        page.contains(&format!("<td class=\"err\">{escaped}</td>")),
        "{page}"
    );
    assert!(!page.contains("<img") && !page.contains("<script>alert"));

    // A traced request whose method and URI are markup.
    let tracker = Tracker::builder().recent_requests(1).build();
    let conn = tracker.register(Registration::client(unix(b"a"), unix(b"b")));
    let req = tracker.request(hostile, &format!("http://h/{hostile}"));
    req.got_conn(conn.downgrade(), false);
    req.finish();
    let page = render::html(&Snapshot::of(&tracker), &HtmlOptions::default());
    check_markup(&page);
    assert!(
        page.contains(&format!("<title>{escaped} http://h/{escaped}</title>")),
        "{page}"
    );
    assert!(!page.contains("<img") && !page.contains("<script>alert"));
}
