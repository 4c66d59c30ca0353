//! The debug page's pictures, as inline SVG: live connections per category over time, the
//! distributions of age and idle time of the connections shown, and waterfalls of recent
//! traced HTTP requests and of recently served ones. Every number a picture shows is also in a `data-` attribute, so a
//! test (or a script) can read it back; every string is escaped.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::emit::format::{bytes, duration, escape_html, fine_duration};
use crate::emit::snapshot::Snapshot;
use crate::record::info::{ConnectionInfo, Role};

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The bins of the age and idle histograms: `[lo, hi)` in seconds and a label.
pub(crate) const BINS: [(u64, u64, &str); 6] = [
    (0, 1, "<1s"),
    (1, 10, "1-10s"),
    (10, 60, "10s-1m"),
    (60, 600, "1-10m"),
    (600, 3600, "10m-1h"),
    (3600, u64::MAX, ">=1h"),
];

fn bin(d: Duration) -> usize {
    let s = d.as_secs();
    BINS.iter()
        .position(|&(_, hi, _)| s < hi)
        .unwrap_or(BINS.len() - 1)
}

/// All the pictures, each under its own heading: the live chart and the two histograms side
/// by side (they fit 1200 px), the waterfall of traced (client) requests under them, and the
/// waterfall of served requests under it.
pub(crate) fn pictures(out: &mut String, snapshot: &Snapshot) {
    out.push_str("<div class=\"charts\"><div><h2>Live connections over time</h2>");
    live_chart(out, snapshot);
    out.push_str("</div><div><h2>Age of connections</h2>");
    histogram(out, "hist-age", &snapshot.connections, |c| {
        c.established_for
    });
    out.push_str("</div><div><h2>Idle time of connections</h2>");
    histogram(out, "hist-idle", &snapshot.connections, |c| c.idle_for);
    out.push_str("</div></div><h2>Recent traced requests</h2>");
    waterfall(out, snapshot);
    out.push_str("<h2>Recent server requests</h2>");
    server_waterfall(out, snapshot);
}

/// The smallest step of 1, 2 or 5 times a power of ten that cuts `span` into at most `n`
/// steps.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// A step for a time axis of `span` seconds cut into at most `n` steps: as [`nice_step`]
/// under a second, else a round number of seconds, minutes or hours.
fn time_step(span: f64, n: f64) -> f64 {
    const STEPS: [f64; 18] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0, 86400.0,
    ];
    let raw = span / n;
    if raw <= 1.0 {
        return nice_step(span, n);
    }
    STEPS
        .into_iter()
        .find(|&s| s >= raw)
        .unwrap_or_else(|| nice_step(span, n))
}

/// The label of a tick at `secs` on an axis whose ticks are `step` apart: `0`, `150ms`,
/// `1.5ms`, `30s`, `1m30s`, `2h`.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn tick_label(secs: f64, step: f64) -> String {
    if secs.abs() < step * 1e-6 {
        return "0".to_owned();
    }
    if step < 1.0 {
        let decimals = (-(step * 1000.0).log10()).ceil().max(0.0) as usize;
        return format!("{:.*}ms", decimals, secs * 1000.0);
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s % 60 == 0 => format!("{}m", s / 60),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The shortest time the live chart's axis covers: one sample is a point at "now" on a
/// half-minute axis, not a lone dot with no scale.
const LIVE_WINDOW_MIN: f64 = 30.0;

/// One line per (category, role) through the snapshots' samples, on a time axis that ends
/// "now" (the snapshot) and reaches back to the first sample, half a minute at least. The category
/// is only in the legend's text, never in an attribute (where a browser serializing the DOM
/// would not escape `<`).
#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn live_chart(out: &mut String, snapshot: &Snapshot) {
    let samples = &snapshot.active_samples;
    let Some(last) = samples.last() else {
        out.push_str("<p id=\"chart-live-empty\">No samples yet.</p>");
        return;
    };
    let first_at = samples[0].at;
    // Seconds from a sample to the last one.
    let ago = |t: SystemTime| last.at.duration_since(t).unwrap_or_default().as_secs_f64();
    let span = ago(first_at);
    let window = span.max(LIVE_WINDOW_MIN);
    let mut series: Vec<(Arc<str>, Role)> = Vec::new();
    let mut max = 1u64;
    for s in samples {
        for (c, r, n) in &s.active {
            max = max.max(*n);
            if !series.iter().any(|(sc, sr)| sc == c && sr == r) {
                series.push((Arc::clone(c), *r));
            }
        }
    }
    let y_step = nice_step(max as f64, 4.0).max(1.0);
    let y_max = (max as f64 / y_step).ceil() * y_step;
    let (w, left, top, plot_w, plot_h) = (540.0, 34.0, 8.0, 350.0, 150.0);
    let h = top + plot_h + 20.0;
    let x = |ago: f64| left + plot_w * (1.0 - ago / window);
    let y = |n: f64| top + plot_h - plot_h * n / y_max;
    let bottom = top + plot_h;
    let _ = write!(
        out,
        "<svg id=\"chart-live\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         data-samples=\"{}\" data-span=\"{span}\" data-window=\"{window}\" data-max=\"{max}\" \
         data-left=\"{left}\" data-top=\"{top}\" data-plot-width=\"{plot_w}\" \
         data-plot-height=\"{plot_h}\" data-y-max=\"{y_max}\">",
        samples.len()
    );
    // The count axis: gridlines at round counts.
    let mut n = 0.0;
    while n <= y_max + 1e-9 {
        let _ = write!(
            out,
            "<g class=\"tick y\"><line class=\"grid\" x1=\"{left}\" y1=\"{py:.1}\" x2=\"{r}\" y2=\"{py:.1}\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{n}</text></g>",
            py = y(n),
            r = left + plot_w,
            tx = left - 4.0,
            ty = y(n) + 4.0,
        );
        n += y_step;
    }
    // The time axis: ticks back from now.
    let step = time_step(window, 5.0);
    let mut k = 0.0;
    while k * step <= window + 1e-9 {
        let a = k * step;
        let label = if k == 0.0 {
            "now".to_owned()
        } else {
            format!("-{}", tick_label(a, step))
        };
        let anchor = if k == 0.0 { "end" } else { "middle" };
        let _ = write!(
            out,
            "<g class=\"tick x\" data-ago=\"{a}\"><line class=\"grid\" x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{bottom}\"/>\
             <text x=\"{px:.1}\" y=\"{ly}\" text-anchor=\"{anchor}\">{label}</text></g>",
            px = x(a),
            ly = bottom + 14.0,
        );
        k += 1.0;
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{bottom}\" x2=\"{r}\" y2=\"{bottom}\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\"/>",
        r = left + plot_w,
    );
    for (i, (cat, role)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = String::new();
        let mut dots = String::new();
        let mut last_n = 0;
        for s in samples {
            let n = s
                .active
                .iter()
                .find(|(c, r, _)| c == cat && r == role)
                .map_or(0, |(_, _, n)| *n);
            last_n = n;
            let (px, py) = (x(ago(s.at)), y(n as f64));
            let _ = write!(points, "{px:.1},{py:.1} ");
            // A dot per sample: samples exist only where someone looked, and one alone is
            // no line.
            let _ = write!(
                dots,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2.5\" fill=\"{color}\"/>"
            );
        }
        let label = escape_html(&format!(
            "{} {role}",
            if cat.is_empty() { "-" } else { cat }
        ));
        let _ = write!(
            out,
            "<g class=\"series\" data-role=\"{role}\" data-last=\"{last_n}\">\
             <polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>{dots}\
             <rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{tx}\" y=\"{tty}\">{label}: {last_n}</text></g>",
            points.trim_end(),
            lx = left + plot_w + 12.0,
            ly = top + 14.0 * i as f64,
            tx = left + plot_w + 26.0,
            tty = top + 9.0 + 14.0 * i as f64,
        );
    }
    out.push_str("</svg>");
    let note = if samples.len() == 1 {
        "One sample so far, taken as this page was made: a point is added each time the page \
         or its JSON is read (at most one a second)."
            .to_owned()
    } else {
        format!(
            "{} samples over the last {}, one each time the page or its JSON was read (at most \
             one a second).",
            samples.len(),
            duration(Duration::from_secs_f64(span))
        )
    };
    let _ = write!(out, "<p class=\"note\" id=\"chart-live-note\">{note}</p>");
}

/// A bar per bin of `value` over `connections`.
#[allow(clippy::cast_precision_loss)]
fn histogram(
    out: &mut String,
    id: &str,
    connections: &[ConnectionInfo],
    value: impl Fn(&ConnectionInfo) -> Duration,
) {
    let mut counts = [0usize; BINS.len()];
    for c in connections {
        counts[bin(value(c))] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h, bar, gap, plot_h) = (270.0, 150.0, 36.0, 8.0, 110.0);
    let _ = write!(
        out,
        "<svg id=\"{id}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" data-total=\"{}\">",
        connections.len()
    );
    for (i, (&(lo, hi, label), &n)) in BINS.iter().zip(&counts).enumerate() {
        let x = 6.0 + (bar + gap) * i as f64;
        let bh = plot_h * n as f64 / max as f64;
        let hi = if hi == u64::MAX {
            "inf".to_owned()
        } else {
            hi.to_string()
        };
        let _ = write!(
            out,
            "<g class=\"bar\" data-lo=\"{lo}\" data-hi=\"{hi}\" data-count=\"{n}\">\
             <rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{bh}\" fill=\"#1f77b4\"/>\
             <text x=\"{cx}\" y=\"{ty}\" text-anchor=\"middle\">{n}</text>\
             <text x=\"{cx}\" y=\"{ly}\" text-anchor=\"middle\">{}</text></g>",
            escape_html(label),
            y = 16.0 + plot_h - bh,
            cx = x + bar / 2.0,
            ty = 12.0 + plot_h - bh,
            ly = 16.0 + plot_h + 14.0,
        );
    }
    out.push_str("</svg>");
}

const PHASE_COLORS: [&str; 7] = [
    "#bbbbbb", "#17becf", "#ff7f0e", "#9467bd", "#2ca02c", "#1f77b4", "#8c564b",
];

/// The client waterfall's phases: `(name, legend, colour)`.
const CLIENT_PHASES: [(&str, &str, &str); 7] = [
    ("blocked", "blocked", PHASE_COLORS[0]),
    ("dns", "dns", PHASE_COLORS[1]),
    ("connect", "connect", PHASE_COLORS[2]),
    ("tls", "tls", PHASE_COLORS[3]),
    ("send", "send", PHASE_COLORS[4]),
    ("wait", "wait", PHASE_COLORS[5]),
    ("transfer", "transfer", PHASE_COLORS[6]),
];

/// The server waterfall's phases, coloured as their client counterparts: waiting as
/// blocked, the request's head and body as what the client sends, the handler as the
/// client's wait for the first byte, the response write as its transfer.
const SERVER_PHASES: [(&str, &str, &str); 5] = [
    ("waiting", "waiting", PHASE_COLORS[0]),
    ("request_head", "request head", PHASE_COLORS[1]),
    ("request_body", "request body", PHASE_COLORS[2]),
    ("handler", "handler", PHASE_COLORS[5]),
    ("response_write", "response write", PHASE_COLORS[6]),
];

/// One row of a waterfall.
struct Row {
    /// Orders rows that started at the same moment.
    id: u64,
    /// The `data-` attributes of the row's group (numbers and our own words only: a string
    /// a peer chose goes in text, never in an attribute).
    data: String,
    started_at: SystemTime,
    total: Duration,
    /// What the row's label shows, and whole in its tooltip.
    label: String,
    title: String,
    /// One per phase of the waterfall, in its order.
    phases: Vec<Option<Duration>>,
}

/// What sets one waterfall apart from the other.
struct Waterfall<'a> {
    /// The picture's element id; `{id}-note` is the note's.
    id: &'a str,
    /// The class of each row's group.
    row_class: &'a str,
    /// The heading over the label column.
    what: &'a str,
    phases: &'a [(&'a str, &'a str, &'a str)],
}

/// A row per traced request, oldest first, as a browser's network panel draws them.
fn waterfall(out: &mut String, snapshot: &Snapshot) {
    let requests = &snapshot.requests;
    if requests.is_empty() {
        out.push_str(
            "<p id=\"waterfall-empty\">No traced requests yet (see <code>RequestTrace</code>).</p>",
        );
        return;
    }
    // When every request went to the same origin, the rows say only the path and the note
    // under the picture says the origin once.
    let origin = origin(&requests[0].uri).filter(|o| {
        requests.iter().all(|r| {
            r.uri
                .strip_prefix(o)
                .is_some_and(|rest| rest.starts_with(['/', '?', '#']))
        })
    });
    let rows = requests
        .iter()
        .map(|r| {
            let shown = origin.map_or(&*r.uri, |o| &r.uri[o.len()..]);
            Row {
                id: r.id,
                data: format!("data-id=\"{}\"", r.id),
                started_at: r.started_at,
                total: r.total,
                label: shorten_end(&format!("{} {shown}", r.method), 46),
                title: format!("{} {}", r.method, r.uri),
                phases: r.phases.named().iter().map(|(_, d)| *d).collect(),
            }
        })
        .collect();
    draw(
        out,
        &Waterfall {
            id: "waterfall",
            row_class: "request",
            what: "request",
            phases: &CLIENT_PHASES,
        },
        rows,
    );
    let _ = write!(
        out,
        "<p class=\"note wide\" id=\"waterfall-note\">A row per request{}, at its start on \
         a time axis from the first one shown; its phases to scale (hover for each), its total \
         after it; at the right, its phases as shares of its own total.</p>",
        origin.map_or_else(String::new, |o| format!(" (all to {})", escape_html(o)))
    );
}

/// A row per recently served request, oldest first, drawn as the client's waterfall: its
/// label says the method, route, status, protocol version and connection.
fn server_waterfall(out: &mut String, snapshot: &Snapshot) {
    let exchanges = &snapshot.server_exchanges;
    if exchanges.is_empty() {
        out.push_str(
            "<p id=\"server-waterfall-empty\">No server requests yet (served through \
             <code>ExchangeLayer</code>, kept with <code>TrackerBuilder::recent_requests</code>).</p>",
        );
        return;
    }
    let rows =
        exchanges
            .iter()
            .map(|x| {
                let status = x.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
                let cut = if x.completed { "" } else { " cut short" };
                let grpc = x
                    .grpc_status
                    .map_or_else(String::new, |g| format!(" grpc {g}"));
                let route = x.route.as_deref().unwrap_or("(no route)");
                let label = format!(
                    "{} {} {status}{grpc} · {} · #{}",
                    // The peer's method, as its route, is shortened (whole in the title).
                    shorten_end(&x.method, 12),
                    shorten_end(route, 24),
                    version(x.version),
                    x.connection
                );
                Row {
                    id: x.id,
                    data: format!(
                    "data-id=\"{}\" data-connection=\"{}\" data-status=\"{}\" data-version=\"{}\" \
                     data-completed=\"{}\"",
                    x.id,
                    x.connection,
                    x.status.map_or(0, u32::from),
                    escape_html(x.version),
                    x.completed
                ),
                    started_at: x.started_at,
                    total: x.total,
                    label,
                    title: format!(
                    "{} {route} → {status}{grpc}{cut}, {}, connection {} ({}), read {}, written {}",
                    x.method,
                    version(x.version),
                    x.connection,
                    if x.category.is_empty() { "-" } else { &x.category },
                    bytes(x.bytes_read),
                    bytes(x.bytes_written)
                ),
                    phases: x.phases.named().iter().map(|(_, d)| *d).collect(),
                }
            })
            .collect();
    draw(
        out,
        &Waterfall {
            id: "server-waterfall",
            row_class: "exchange",
            what: "served request",
            phases: &SERVER_PHASES,
        },
        rows,
    );
    out.push_str(
        "<p class=\"note wide\" id=\"server-waterfall-note\">A row per request served (method, \
         route, status, protocol, connection), at the start of its waiting on a time axis from \
         the first one shown: waiting for its first byte (keep-alive idle, or a slow client), \
         reading its head, the handler waiting for its body, the handler, writing the response; \
         hover for each. At the right, its phases as shares of its own total.</p>",
    );
}

/// `HTTP/1.1`, `HTTP/2`.
fn version(v: &str) -> String {
    format!("HTTP/{v}")
}

/// A row per item, oldest first: each placed at its start on a time axis that begins with
/// the first one shown, its phases one after the other to scale, its total written after it.
/// A row too short to see at this scale gets a thin mark, so every row shows where it
/// happened.
#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn draw(out: &mut String, w: &Waterfall<'_>, mut rows: Vec<Row>) {
    rows.sort_by_key(|r| (r.started_at, r.id));
    let t0 = rows[0].started_at;
    let start = |r: &Row| {
        r.started_at
            .duration_since(t0)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let span = rows
        .iter()
        .map(|r| start(r) + r.total.as_secs_f64())
        .fold(0.0, f64::max)
        .max(1e-6);
    // The label column as wide as its longest label (at about 6.4 px a character).
    let longest = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0);
    let label_w = (6.4 * longest as f64 + 16.0).clamp(140.0, 300.0).round();
    let (width, row_h, axis_h, share_w) = (1100.0, 16.0, 34.0, 120.0);
    // Room after the plot for the last row's total, then the column of shares.
    let plot_w = width - label_w - 80.0 - share_w - 10.0;
    let share_x = width - share_w - 4.0;
    let h = axis_h + row_h * rows.len() as f64 + 6.0;
    let x = |secs: f64| label_w + plot_w * secs / span;
    let _ = write!(
        out,
        "<svg id=\"{id}\" width=\"{width}\" height=\"{h}\" viewBox=\"0 0 {width} {h}\" \
         data-span=\"{span}\" data-left=\"{label_w}\" data-plot-width=\"{plot_w}\">",
        id = w.id
    );
    // The legend.
    let mut lx = 4.0;
    for (_, legend, color) in w.phases {
        let _ = write!(
            out,
            "<rect x=\"{lx}\" y=\"2\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"11\">{legend}</text>",
            lx + 14.0
        );
        lx += (28.0 + 6.0 * legend.len() as f64).max(76.0);
    }
    // The time axis, from the first row's start.
    let step = nice_step(span, 8.0);
    let mut k = 0.0;
    while k * step <= span * (1.0 + 1e-9) {
        let t = k * step;
        let _ = write!(
            out,
            "<g class=\"tick\" data-secs=\"{t}\"><line class=\"grid\" x1=\"{px:.2}\" y1=\"{gy}\" x2=\"{px:.2}\" y2=\"{h}\"/>\
             <text x=\"{px:.2}\" y=\"{ty}\" text-anchor=\"{anchor}\">{}</text></g>",
            tick_label(t, step),
            px = x(t),
            gy = axis_h - 6.0,
            ty = axis_h - 9.0,
            anchor = if k == 0.0 { "start" } else { "middle" },
        );
        k += 1.0;
    }
    let _ = write!(
        out,
        "<text class=\"note\" x=\"4\" y=\"{ty}\">{}</text>\
         <text class=\"note\" x=\"{share_x}\" y=\"{ty}\">share of each phase</text>",
        w.what,
        ty = axis_h - 9.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = axis_h + row_h * i as f64;
        let begin = start(r);
        let _ = write!(
            out,
            "<g class=\"{}\" {} data-start=\"{begin}\" data-total=\"{}\">\
             <text x=\"4\" y=\"{}\"><title>{}</title>{}</text>",
            w.row_class,
            r.data,
            r.total.as_secs_f64(),
            y + 11.0,
            escape_html(&r.title),
            escape_html(&r.label)
        );
        let mut at = begin;
        for (&(name, _, color), d) in w.phases.iter().zip(&r.phases) {
            let Some(d) = d else { continue };
            let secs = d.as_secs_f64();
            let width = plot_w * secs / span;
            let _ = write!(
                out,
                "<rect class=\"phase\" data-phase=\"{name}\" data-secs=\"{secs}\" x=\"{:.2}\" y=\"{}\" \
                 width=\"{width:.2}\" height=\"{}\" fill=\"{color}\"><title>{name} {}</title></rect>",
                x(at),
                y + 2.0,
                row_h - 4.0,
                fine_duration(*d)
            );
            at += secs;
        }
        let end = x(begin + r.total.as_secs_f64());
        if end - x(begin) < 2.0 {
            let _ = write!(
                out,
                "<rect class=\"mark\" x=\"{:.2}\" y=\"{}\" width=\"2\" height=\"{}\" fill=\"#555\"/>",
                x(begin),
                y + 2.0,
                row_h - 4.0
            );
        }
        let _ = write!(
            out,
            "<text class=\"total\" x=\"{:.2}\" y=\"{}\">{}</text>",
            end.max(x(begin) + 2.0) + 4.0,
            y + 11.0,
            fine_duration(r.total)
        );
        // The same phases as shares of this row's own total, readable however short it is
        // next to the others.
        let total = r.total.as_secs_f64();
        let mut at = 0.0;
        for (&(name, _, color), d) in w.phases.iter().zip(&r.phases) {
            let Some(d) = d else { continue };
            let share = if total > 0.0 {
                d.as_secs_f64() / total
            } else {
                0.0
            };
            let _ = write!(
                out,
                "<rect class=\"share\" data-phase=\"{name}\" x=\"{:.2}\" y=\"{}\" width=\"{:.2}\" \
                 height=\"{}\" fill=\"{color}\"><title>{name} {:.0}%</title></rect>",
                share_x + share_w * at,
                y + 2.0,
                share_w * share,
                row_h - 4.0,
                share * 100.0
            );
            at += share;
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
}

/// `scheme://authority` of an absolute URI, if it is one.
fn origin(uri: &str) -> Option<&str> {
    let after_scheme = uri.find("://")? + 3;
    let end = uri[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(uri.len(), |i| after_scheme + i);
    Some(&uri[..end])
}

/// `text` cut to `max` characters, the last one `…`.
fn shorten_end(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    text.chars().take(max - 1).chain(['…']).collect()
}

#[cfg(test)]
mod tests {
    use super::bin;
    use std::time::Duration;

    #[test]
    fn origins() {
        use super::origin;
        assert_eq!(origin("http://h:80/a?b"), Some("http://h:80"));
        assert_eq!(origin("https://h?q"), Some("https://h"));
        assert_eq!(origin("http://h"), Some("http://h"));
        assert_eq!(origin("/relative"), None);
    }

    #[test]
    fn ticks_are_round() {
        use super::{nice_step, tick_label, time_step};
        assert!((nice_step(0.3, 8.0) - 0.05).abs() < 1e-12);
        assert!((nice_step(7.0, 4.0) - 2.0).abs() < 1e-12);
        assert!((nice_step(1.0, 4.0) - 0.5).abs() < 1e-12);
        assert!((time_step(60.0, 5.0) - 15.0).abs() < 1e-12);
        assert!((time_step(600.0, 5.0) - 120.0).abs() < 1e-12);
        assert_eq!(tick_label(0.0, 0.05), "0");
        assert_eq!(tick_label(0.15, 0.05), "150ms");
        assert_eq!(tick_label(0.0015, 0.0005), "1.5ms");
        assert_eq!(tick_label(30.0, 15.0), "30s");
        assert_eq!(tick_label(90.0, 30.0), "1m30s");
        assert_eq!(tick_label(120.0, 60.0), "2m");
        assert_eq!(tick_label(7200.0, 3600.0), "2h");
    }

    #[test]
    fn bins_are_half_open() {
        assert_eq!(bin(Duration::from_millis(999)), 0);
        assert_eq!(bin(Duration::from_secs(1)), 1);
        assert_eq!(bin(Duration::from_secs(59)), 2);
        assert_eq!(bin(Duration::from_secs(3600)), 5);
        assert_eq!(bin(Duration::MAX), 5);
    }
}
