//! Human-readable renderings of a tracker's state: an aligned plain-text table of connections
//! (what Go conntrack's README prints in a loop, but readable) and one line per category.
//!
//! ```
//! use conntrack_core::{render, Registration, Tracker};
//!
//! let tracker = Tracker::new();
//! let _conn = tracker.register(Registration::server(
//!     "127.0.0.1:80".parse::<std::net::SocketAddr>().unwrap(),
//!     "127.0.0.1:50000".parse::<std::net::SocketAddr>().unwrap(),
//! ).category("api"));
//! let table = render::text_table(&tracker.connections());
//! assert!(table.starts_with("ID"));
//! assert!(table.contains("127.0.0.1:50000"));
//! print!("{table}{}", render::text_stats(&tracker.stats()));
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

pub use crate::emit::format::{bytes, duration, escape_html, fine_duration};
pub use crate::emit::snapshot::{Order, Page, Snapshot};
use crate::record::info::{CloseReason, ClosedConnection, ConnectionInfo};
use crate::track::activity::ServerExchangeTiming;
use crate::track::stats::Stats;

/// The snapshot as JSON (feature `serde`). The schema is in `docs/observability.md`.
///
/// # Panics
///
/// Never: every record serializes.
#[cfg(feature = "serde")]
#[must_use]
pub fn json(snapshot: &Snapshot) -> String {
    serde_json::to_string(snapshot).expect("snapshot serializes")
}

/// Escapes text for a line-oriented output (a text table, a log line): control characters
/// (C0, DEL and C1, including newline, carriage return, tab and the ANSI escape), the Unicode
/// line and paragraph separators, and the bidirectional-text controls become Rust-style
/// escapes (`\n`, `\r`, `\t`, `\u{1b}`, `\u{202e}`), and a backslash becomes `\\`, so
/// the result is one line that shows every character a peer chose and cannot colour a
/// terminal, move its cursor, reorder what is displayed or pass for a second row. Text with
/// nothing to escape is returned as it is, without allocating.
///
/// The text table ([`text_table`], [`text_stats`]) and the `tracing` hook's fields use it for
/// every string a user or peer controls: categories, addresses (a Unix socket's path is
/// chosen by the peer that binds it), dial targets, SNI, ALPN, error texts.
///
/// ```
/// use conntrack_core::render::escape_text;
///
/// assert_eq!(escape_text("x\n999 admin \x1b[31mFORGED"), "x\\n999 admin \\u{1b}[31mFORGED");
/// assert_eq!(escape_text("/run/app.sock"), "/run/app.sock");
/// ```
#[must_use]
pub fn escape_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_text_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_text_char(&mut out, c);
    }
    Cow::Owned(out)
}

fn needs_text_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn push_text_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_text_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// One cell of a text table: [`escape_text`], plus the spaces that would read as a gap
/// between columns (two in a row, or one at either end) written as `\u{20}`, and `-` for an
/// empty cell, so that splitting a row at runs of two or more spaces gives back its cells.
fn table_cell(text: &str) -> Cow<'_, str> {
    if text.is_empty() {
        return Cow::Borrowed("-");
    }
    let gap = text.starts_with(' ') || text.ends_with(' ') || text.contains("  ");
    if !gap {
        return escape_text(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    // Whether the last character written is a raw space; true at the start, where a space
    // would read as part of the gap before the cell.
    let mut after_space = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' && (after_space || chars.peek().is_none()) {
            out.push_str("\\u{20}");
            after_space = false;
        } else {
            push_text_char(&mut out, c);
            after_space = c == ' ';
        }
    }
    Cow::Owned(out)
}

/// Options for [`html`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HtmlOptions {
    /// The page title.
    pub title: String,
    /// Reload the page every this many seconds (`None`: never). With
    /// [`events`](HtmlOptions::events) set, only when scripts are off (the reload is inside
    /// `<noscript>`); the live page re-reads itself at this period instead.
    pub refresh_secs: Option<u32>,
    /// The server-sent events stream the page updates itself from (`None`: a static page).
    /// A path relative to the page's own path taken as a directory: `"events?html=1"` on a
    /// page at `/debug/conntrack` is `/debug/conntrack/events?html=1`. The stream must send
    /// the `opened`, `closed` and `summary` events of conntrack-tokio's debug page, with the
    /// rows of [`html_row`] and [`html_closed_row`] in their `html` field.
    pub events: Option<String>,
    /// A line shown under the title (escaped), e.g. that a requested row count was capped.
    pub note: Option<String>,
}

impl Default for HtmlOptions {
    fn default() -> Self {
        HtmlOptions {
            title: "conntrack".into(),
            refresh_secs: Some(5),
            events: None,
            note: None,
        }
    }
}

/// The live page's script: follows [`HtmlOptions::events`] (see `live.js`).
const LIVE_SCRIPT: &str = include_str!("live.js");

/// The page's style. At 1200 px every column of both connection tables fits (a browser test
/// measures it): addresses, dial targets and categories longer than a cell are shortened in
/// the middle (the whole value in the cell's `title`), and an address keeps room for an IPv4
/// `address:port` and may break before its port only when the table is short of room; TCP
/// and TLS cells show their headline figure (the rest in the `title`); error texts wrap and
/// take what is left. Pictures shrink with the window; a table wider than a narrow window
/// scrolls inside its own box, never the page.
const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em}h2{font-size:1.1em}\
svg{display:block;max-width:100%;height:auto;margin-bottom:.5em;font:11px system-ui,sans-serif}\
svg .axis{stroke:#999}svg .grid{stroke:#e4e4e4}svg .tick text,svg .note{fill:#555}\
.charts{display:flex;flex-wrap:wrap;column-gap:2em}.note{color:#555;font-size:12px;margin:0 0 1.5em;max-width:540px}.note.wide{max-width:none}\
.scroll{overflow-x:auto;margin-bottom:1.5em}\
table{border-collapse:collapse}table.conns{width:100%;font-size:12.5px}\
th,td{padding:.25em .3em;text-align:left;border-bottom:1px solid #ddd;white-space:nowrap;vertical-align:top}\
th{cursor:pointer;background:#f4f4f4}td.n,th.n{text-align:right}td[title]{text-decoration:underline dotted #999}\
td.a{white-space:normal;min-width:8.7em}td.reason{font-weight:600}td.err{white-space:normal;overflow-wrap:anywhere;min-width:10em;color:#a00}";

/// Click a header to sort its table by that column (numbers by `data-v`, text otherwise); the
/// column is the header's own index in its row (`cellIndex`).
const SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],rows=Array.from(b.rows),i=th.cellIndex,asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';rows.sort(function(x,y){var a=x.cells[i],c=y.cells[i],p=parseFloat(a.dataset.v),q=parseFloat(c.dataset.v);var r=(!isNaN(p)&&!isNaN(q))?p-q:a.textContent.localeCompare(c.textContent);return asc?r:-r;});rows.forEach(function(r){b.appendChild(r);});});});";

fn td(out: &mut String, text: &str) {
    let _ = write!(out, "<td>{}</td>", escape_html(text));
}

/// A cell that shows at most `max` characters of `text`: longer text is shortened in the
/// middle (keeping its end, where an address has its port) and given whole in the `title`.
fn td_short(out: &mut String, text: &str, max: usize) {
    match shorten(text, max) {
        Cow::Borrowed(_) => td(out, text),
        Cow::Owned(short) => {
            let _ = write!(
                out,
                "<td title=\"{}\">{}</td>",
                escape_html(text),
                escape_html(&short)
            );
        }
    }
}

/// An address or dial target as [`td_short`] shows it, which may also break before its port
/// (after the last `:`) when the table is short of room.
fn td_addr(out: &mut String, text: &str, max: usize) {
    let short = shorten(text, max);
    let mut shown = escape_html(&short);
    if let Some(colon) = shown.rfind(':') {
        shown.insert_str(colon + 1, "<wbr>");
    }
    out.push_str("<td class=\"a\"");
    if let Cow::Owned(_) = short {
        let _ = write!(out, " title=\"{}\"", escape_html(text));
    }
    let _ = write!(out, ">{shown}</td>");
}

/// `text` if it has at most `max` characters, else its first third and its end around a `…`,
/// `max` characters in all.
fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    let n = text.chars().count();
    if n <= max || max < 3 {
        return Cow::Borrowed(text);
    }
    let head = (max - 1) / 3;
    let tail = max - 1 - head;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(n - tail));
    Cow::Owned(out)
}

fn td_num(out: &mut String, value: f64, text: &str) {
    let _ = write!(
        out,
        "<td class=\"n\" data-v=\"{value}\">{}</td>",
        escape_html(text)
    );
}

// The longest address, dial target, category and ALPN a connection table shows whole (an
// IPv4 `address:port` is at most 21 characters).
const ADDR_CHARS: usize = 21;
const TARGET_CHARS: usize = 18;
const CATEGORY_CHARS: usize = 14;
const ALPN_CHARS: usize = 10;

/// A row of the live or closed table ([`CONN_HEADERS`]; a closed row has its reason after the
/// role and its error last).
#[allow(clippy::cast_precision_loss)]
fn connection_row(out: &mut String, c: &ConnectionInfo, closed: Option<&ClosedConnection>) {
    out.push_str("<tr>");
    td_num(out, c.id.as_u64() as f64, &c.id.to_string());
    td_short(out, &c.category, CATEGORY_CHARS);
    td(out, c.role.as_str());
    if let Some(closed) = closed {
        let _ = write!(
            out,
            "<td class=\"reason\">{}</td>",
            escape_html(closed.reason.as_str())
        );
    }
    td_addr(out, &c.local_addr.to_string(), ADDR_CHARS);
    td_addr(out, &c.remote_addr.to_string(), ADDR_CHARS);
    td_addr(out, c.target.as_deref().unwrap_or(""), TARGET_CHARS);
    td_num(
        out,
        c.established_for.as_secs_f64(),
        &duration(c.established_for),
    );
    td_num(out, c.read_bytes as f64, &bytes(c.read_bytes));
    td_num(out, c.write_bytes as f64, &bytes(c.write_bytes));
    td_num(out, c.idle_for.as_secs_f64(), &duration(c.idle_for));
    td_num(out, c.requests as f64, &c.requests.to_string());
    td(out, &c.state.to_string());
    match &c.tcp {
        Some(t) => {
            let mut text = fine_duration(t.rtt);
            if t.retransmits > 0 {
                let _ = write!(text, " · {} retr.", t.retransmits);
            }
            let _ = write!(
                out,
                "<td class=\"n\" data-v=\"{}\" title=\"rtt {} ±{}, {} retransmits, cwnd {}\">{}</td>",
                t.rtt.as_secs_f64(),
                fine_duration(t.rtt),
                fine_duration(t.rtt_var),
                t.retransmits,
                t.cwnd,
                escape_html(&text)
            );
        }
        None => td_num(out, -1.0, ""),
    }
    match &c.tls {
        Some(t) => {
            let mut text = t.protocol_version.clone();
            let mut title = format!("TLS {}, {}", t.protocol_version, t.cipher_suite);
            if let Some(alpn) = t.alpn_str() {
                let _ = write!(text, " {}", shorten(&alpn, ALPN_CHARS));
                let _ = write!(title, ", ALPN {alpn}");
            }
            if let Some(sni) = &t.server_name {
                let _ = write!(title, ", SNI {sni}");
            }
            if t.resumed {
                title.push_str(", resumed");
            }
            let _ = write!(
                out,
                "<td title=\"{}\">{}</td>",
                escape_html(&title),
                escape_html(&text)
            );
        }
        None => td(out, ""),
    }
    if let Some(closed) = closed {
        let _ = write!(
            out,
            "<td class=\"err\">{}</td>",
            escape_html(closed.error.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tr>");
}

/// The columns of the live table, with the title each header's tooltip gives. The closed
/// table adds `Reason` after `Role` and `Error` last.
const CONN_HEADERS: [(&str, &str); 14] = [
    ("ID", "Connection id, in the order connections were made"),
    ("Category", "The listener's or dialer's category"),
    ("Role", "server: accepted; client: dialed"),
    ("Local", "Local address"),
    ("Remote", "Peer address"),
    ("Target", "What was dialed"),
    ("Age", "Time since established"),
    ("Read", "Bytes read"),
    ("Written", "Bytes written"),
    ("Idle", "Time since the last read or write"),
    ("Reqs", "Exchanges begun on the connection"),
    (
        "State",
        "Exchange state: new (none yet), active (one in flight), idle (between them), \
         upgraded (after a 101 or a CONNECT 2xx)",
    ),
    (
        "RTT",
        "TCP smoothed round-trip time (hover for variance, retransmits, cwnd)",
    ),
    (
        "TLS",
        "TLS version and ALPN (hover for cipher suite and SNI)",
    ),
];

/// The columns of [`CONN_HEADERS`] that hold numbers (right-aligned).
const NUMERIC: [&str; 7] = ["ID", "Age", "Read", "Written", "Idle", "Reqs", "RTT"];

fn conn_header(out: &mut String, id: &str, closed: bool) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table class=\"sortable conns\" id=\"{id}\"><thead><tr>"
    );
    for (i, (h, title)) in CONN_HEADERS.iter().enumerate() {
        let class = if NUMERIC.contains(h) {
            " class=\"n\""
        } else {
            ""
        };
        let _ = write!(out, "<th{class} title=\"{title}\">{h}</th>");
        if closed && i == 2 {
            out.push_str("<th title=\"Why the connection closed\">Reason</th>");
        }
    }
    if closed {
        out.push_str("<th title=\"The last I/O error seen\">Error</th>");
    }
    out.push_str("</tr></thead><tbody>");
}

/// The snapshot as a self-contained HTML page: a summary per category (over every
/// connection), pictures (live connections over time, age and idle histograms, a waterfall
/// of recent traced requests and one of recently served requests), the live connections the snapshot holds (click a header to
/// sort) with "Showing N of M" when it is a limited [`Snapshot::page`], and the recently
/// closed ones with why they closed and their last error.
///
/// Both connection tables have the columns ID, Category, Role, Local, Remote, Target, Age,
/// Read, Written, Idle, Reqs, State (as [`ConnState`](crate::ConnState) writes it), RTT and
/// TLS; the closed table adds Reason after Role and Error last. They fit a 1200 px window:
/// a value too long for its cell is shortened, whole in the cell's `title` tooltip. Every
/// string a user or peer controls (category, target, addresses, SNI, ALPN, request URI,
/// method, route, error text) is escaped.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn html(snapshot: &Snapshot, options: &HtmlOptions) -> String {
    let mut out = String::with_capacity(4096 + 512 * snapshot.connections.len());
    out.push_str("<!DOCTYPE html><html><head><meta charset=\"utf-8\">");
    if let Some(secs) = options.refresh_secs {
        // A live page reloads only without scripts (a `<noscript>` in the head may hold it).
        let (open, close) = if options.events.is_some() {
            ("<noscript>", "</noscript>")
        } else {
            ("", "")
        };
        let _ = write!(
            out,
            "{open}<meta http-equiv=\"refresh\" content=\"{secs}\">{close}"
        );
    }
    let title = escape_html(&options.title);
    let _ = write!(
        out,
        "<title>{title}</title><style>{STYLE}</style></head><body><h1>{title}</h1>"
    );
    if let Some(note) = &options.note {
        let _ = write!(out, "<p id=\"note\">{}</p>", escape_html(note));
    }
    let _ = write!(
        out,
        "<p id=\"shown\">{}</p>",
        shown(
            snapshot.connections.len(),
            snapshot.total_connections,
            "live connections",
            snapshot.order.as_str(),
        )
    );

    out.push_str(
        "<h2>By category</h2><div class=\"scroll\"><table class=\"sortable\" id=\"summary\"><thead><tr>",
    );
    for h in [
        "Category",
        "Role",
        "Active",
        "Opened",
        "Closed",
        "Failed",
        "TLS failed",
        "Rejected",
        "Read",
        "Written",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for c in &snapshot.stats.categories {
        out.push_str("<tr>");
        td(&mut out, &c.category);
        td(&mut out, c.role.as_str());
        for n in [
            c.active,
            c.opened,
            c.closed,
            c.failed,
            c.tls_handshake_failed,
            c.rejected,
        ] {
            td_num(&mut out, n as f64, &n.to_string());
        }
        td_num(&mut out, c.read_bytes as f64, &bytes(c.read_bytes));
        td_num(&mut out, c.write_bytes as f64, &bytes(c.write_bytes));
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    crate::emit::pictures::pictures(&mut out, snapshot);

    out.push_str("<h2>Live connections</h2>");
    conn_header(&mut out, "connections", false);
    for c in &snapshot.connections {
        connection_row(&mut out, c, None);
    }
    out.push_str("</tbody></table></div>");

    let _ = write!(
        out,
        "<h2>Recently closed</h2><p id=\"shown-closed\">{}</p>",
        shown(
            snapshot.recently_closed.len(),
            snapshot.total_recently_closed,
            "closed connections in the history",
            "newest",
        )
    );
    conn_header(&mut out, "closed", true);
    for c in &snapshot.recently_closed {
        connection_row(&mut out, &c.info, Some(c));
    }
    let _ = write!(out, "</tbody></table></div><script>{SCRIPT}</script>");
    if let Some(events) = &options.events {
        let _ = write!(
            out,
            "<script id=\"live\" data-events=\"{}\" data-refresh=\"{}\">{LIVE_SCRIPT}</script>",
            escape_html(events),
            options.refresh_secs.unwrap_or(0)
        );
    }
    out.push_str("</body></html>");
    out
}

/// One live connection as a row (`<tr>...</tr>`) of [`html`]'s live table, for a page that
/// updates itself ([`HtmlOptions::events`]).
#[must_use]
pub fn html_row(info: &ConnectionInfo) -> String {
    let mut out = String::with_capacity(512);
    connection_row(&mut out, info, None);
    out
}

/// One closed connection as a row (`<tr>...</tr>`) of [`html`]'s "Recently closed" table:
/// `info` is its final record (as [`CloseEvent`](crate::CloseEvent) has it), closed for
/// `reason`, with its last error.
#[must_use]
pub fn html_closed_row(info: &ConnectionInfo, reason: CloseReason, error: Option<&str>) -> String {
    let closed = ClosedConnection {
        info: info.clone(),
        closed_at: info.established_at + info.established_for,
        error: error.map(str::to_owned),
        reason,
    };
    let mut out = String::with_capacity(512);
    connection_row(&mut out, &closed.info, Some(&closed));
    out
}

/// "12 live connections", or "Showing 1000 of 5000 live connections (newest first)" when a
/// page left some out.
fn shown(shown: usize, total: usize, what: &str, order: &str) -> String {
    if shown >= total {
        format!("{total} {what}")
    } else {
        format!("Showing {shown} of {total} {what} ({order} first)")
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| table_cell(cell)).collect())
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<w$}", w = width[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(AsRef::as_ref));
    }
    out
}

/// The live connections as an aligned text table, one row per connection: id, category, role,
/// local and remote address, the dialed target when any connection has one, age, bytes read
/// and written, idle time, the exchange count and state (new, active, idle, upgraded) when any
/// connection has carried an exchange, the kernel's TCP statistics when any connection has
/// them (`RTT`, the smoothed round-trip time, which on the side answering requests includes
/// the peer's delayed ACKs; `MIN-RTT`, the smallest seen, the path's own delay; `RETRANS`,
/// segments retransmitted), and the TLS version and ALPN when any connection has TLS.
///
/// Every cell is escaped with [`escape_text`] (and a space that would read as a column gap is
/// written `\u{20}`), so a peer-chosen string (a Unix socket path holding a newline, an ANSI
/// escape) can neither forge a row nor colour the terminal: the table has exactly one line per
/// connection after its header, and its cells are separated by runs of two or more spaces.
#[must_use]
pub fn text_table(connections: &[ConnectionInfo]) -> String {
    let refs: Vec<&ConnectionInfo> = connections.iter().collect();
    connection_table(&refs, None)
}

/// The recently closed connections as [`text_table`] shows live ones, with a last `REASON`
/// column: why each closed ([`CloseReason`]).
#[must_use]
pub fn text_closed(closed: &[ClosedConnection]) -> String {
    let refs: Vec<&ConnectionInfo> = closed.iter().map(|c| &c.info).collect();
    let reasons: Vec<&'static str> = closed.iter().map(|c| c.reason.as_str()).collect();
    connection_table(&refs, Some(&reasons))
}

fn connection_table(connections: &[&ConnectionInfo], reasons: Option<&[&str]>) -> String {
    let tls = connections.iter().any(|c| c.tls.is_some());
    let target = connections.iter().any(|c| c.target.is_some());
    let requests = connections.iter().any(|c| c.requests > 0);
    let mut header = vec!["ID", "CATEGORY", "ROLE", "LOCAL", "REMOTE"];
    if target {
        header.push("TARGET");
    }
    header.extend(["AGE", "READ", "WRITTEN", "IDLE"]);
    if requests {
        header.extend(["REQS", "STATE"]);
    }
    let tcp = connections.iter().any(|c| c.tcp.is_some());
    if tcp {
        header.extend(["RTT", "MIN-RTT", "RETRANS"]);
    }
    if tls {
        header.push("TLS");
    }
    if reasons.is_some() {
        header.push("REASON");
    }
    let rows: Vec<Vec<String>> = connections
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut row = vec![
                c.id.to_string(),
                if c.category.is_empty() {
                    "-".into()
                } else {
                    c.category.to_string()
                },
                c.role.to_string(),
                c.local_addr.to_string(),
                c.remote_addr.to_string(),
            ];
            if target {
                row.push(c.target.as_deref().unwrap_or("-").to_string());
            }
            row.extend([
                duration(c.established_for),
                bytes(c.read_bytes),
                bytes(c.write_bytes),
                duration(c.idle_for),
            ]);
            if requests {
                row.extend([c.requests.to_string(), c.state.to_string()]);
            }
            if tcp {
                match &c.tcp {
                    Some(t) => row.extend([
                        fine_duration(t.rtt),
                        t.min_rtt.map_or_else(|| "-".into(), fine_duration),
                        t.retransmits.to_string(),
                    ]),
                    None => row.extend(["-".into(), "-".into(), "-".into()]),
                }
            }
            if tls {
                row.push(c.tls.as_ref().map_or_else(
                    || "-".into(),
                    |t| match t.alpn_str() {
                        Some(alpn) => format!("{} {}", t.protocol_version, alpn),
                        None => t.protocol_version.clone(),
                    },
                ));
            }
            if let Some(r) = reasons {
                row.push(r.get(i).copied().unwrap_or("-").to_owned());
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// The recently finished server exchanges ([`Snapshot::server_exchanges`]) as an aligned
/// text table, newest first: the connection, method, route, protocol version, status, each
/// phase (`WAITING`, `HEAD`, `BODY`, `HANDLER`, `WRITE`; `-` where it was not measured), the
/// total and the bytes read and written. Escaped as [`text_table`] is. Empty when there is
/// none.
#[must_use]
pub fn text_server_exchanges(exchanges: &[ServerExchangeTiming]) -> String {
    if exchanges.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = exchanges
        .iter()
        .map(|x| {
            let mut row = vec![
                x.connection.to_string(),
                x.method.to_string(),
                x.route.as_deref().unwrap_or("-").to_owned(),
                x.version.to_owned(),
                x.status.map_or_else(|| "-".into(), |s| s.to_string()),
            ];
            row.extend(
                x.phases
                    .named()
                    .iter()
                    .map(|(_, d)| d.map_or_else(|| "-".into(), fine_duration)),
            );
            row.extend([
                fine_duration(x.total),
                bytes(x.bytes_read),
                bytes(x.bytes_written),
            ]);
            row
        })
        .collect();
    table(
        &[
            "CONN", "METHOD", "ROUTE", "VERSION", "STATUS", "WAITING", "HEAD", "BODY", "HANDLER",
            "WRITE", "TOTAL", "READ", "WRITTEN",
        ],
        &rows,
    )
}

/// One line per (category, role): active, opened, closed, failed, bytes. Escaped as
/// [`text_table`] is.
#[must_use]
pub fn text_stats(stats: &Stats) -> String {
    let rows: Vec<Vec<String>> = stats
        .categories
        .iter()
        .map(|c| {
            vec![
                if c.category.is_empty() {
                    "-".into()
                } else {
                    c.category.to_string()
                },
                c.role.to_string(),
                c.active.to_string(),
                c.opened.to_string(),
                c.closed.to_string(),
                c.failed.to_string(),
                c.rejected.to_string(),
                bytes(c.read_bytes),
                bytes(c.write_bytes),
            ]
        })
        .collect();
    table(
        &[
            "CATEGORY", "ROLE", "ACTIVE", "OPENED", "CLOSED", "FAILED", "REJECTED", "READ",
            "WRITTEN",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h03m");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html("<img src=x onerror=alert(1)> & \"q\" 'a'"),
            "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot; &#39;a&#39;"
        );
    }

    #[test]
    fn escapes_text() {
        assert_eq!(escape_text("plain text"), "plain text");
        assert!(matches!(escape_text("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_text("a\nb\r\t\\\x1b[31m\u{7f}\u{85}\u{202e}\u{2028}é"),
            "a\\nb\\r\\t\\\\\\u{1b}[31m\\u{7f}\\u{85}\\u{202e}\\u{2028}é"
        );
        assert_eq!(table_cell(""), "-");
        assert_eq!(table_cell("1.5 KiB"), "1.5 KiB");
        assert_eq!(table_cell(" a  b "), "\\u{20}a \\u{20}b\\u{20}");
        assert_eq!(table_cell("a \n"), "a \\n");
    }

    #[test]
    fn columns_align() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "y".into()],
                vec!["z".into(), "wwww".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    wwww\n");
    }
}
