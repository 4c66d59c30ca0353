//! The debug page's pictures, as inline SVG: live connections per category over time, the
//! distributions of age and idle time of the connections shown, and a waterfall of recent
//! traced HTTP requests. Every number a picture shows is also in a `data-` attribute, so a
//! test (or a script) can read it back; every string is escaped.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::info::{ConnectionInfo, Role};
use crate::render::{duration, escape_html, fine_duration, Snapshot};

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

/// All three pictures, each under its own heading.
pub(crate) fn pictures(out: &mut String, snapshot: &Snapshot) {
    out.push_str("<h2>Live connections over time</h2>");
    live_chart(out, snapshot);
    out.push_str("<div class=\"charts\"><div><h2>Age of the connections shown</h2>");
    histogram(out, "hist-age", &snapshot.connections, |c| {
        c.established_for
    });
    out.push_str("</div><div><h2>Idle time of the connections shown</h2>");
    histogram(out, "hist-idle", &snapshot.connections, |c| c.idle_for);
    out.push_str("</div></div><h2>Recent traced requests</h2>");
    waterfall(out, snapshot);
}

/// One line per (category, role) through the snapshots' samples. The category is only in the
/// legend's text, never in an attribute (where a browser serializing the DOM would not escape
/// `<`).
#[allow(clippy::cast_precision_loss)]
fn live_chart(out: &mut String, snapshot: &Snapshot) {
    let samples = &snapshot.active_samples;
    let Some(last) = samples.last() else {
        out.push_str("<p id=\"chart-live-empty\">No samples yet.</p>");
        return;
    };
    let first_at = samples[0].at;
    let secs = |t: SystemTime| t.duration_since(first_at).unwrap_or_default().as_secs_f64();
    let span = secs(last.at).max(1.0);
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
    let (w, h, left, top, plot_w, plot_h) = (640.0, 200.0, 40.0, 10.0, 420.0, 160.0);
    let x = |t: f64| left + plot_w * t / span;
    let y = |n: u64| top + plot_h - plot_h * n as f64 / max as f64;
    let _ = write!(
        out,
        "<svg id=\"chart-live\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         data-samples=\"{}\" data-span=\"{span}\" data-max=\"{max}\">",
        samples.len()
    );
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\"/>\
         <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{max}</text>\
         <text x=\"{tx}\" y=\"{b}\" text-anchor=\"end\">0</text>\
         <text x=\"{left}\" y=\"{lb}\">-{}</text><text x=\"{r}\" y=\"{lb}\" text-anchor=\"end\">now</text>",
        duration(Duration::from_secs_f64(secs(last.at))),
        b = top + plot_h,
        r = left + plot_w,
        tx = left - 4.0,
        ty = top + 10.0,
        lb = top + plot_h + 14.0,
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
            let (px, py) = (x(secs(s.at)), y(n));
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
    let (w, h, bar, gap, plot_h) = (360.0, 150.0, 48.0, 10.0, 110.0);
    let _ = write!(
        out,
        "<svg id=\"{id}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" data-total=\"{}\">",
        connections.len()
    );
    for (i, (&(lo, hi, label), &n)) in BINS.iter().zip(&counts).enumerate() {
        let x = 10.0 + (bar + gap) * i as f64;
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

/// A row per traced request, its phases as consecutive bars on a shared scale.
#[allow(clippy::cast_precision_loss)]
fn waterfall(out: &mut String, snapshot: &Snapshot) {
    let requests = &snapshot.requests;
    if requests.is_empty() {
        out.push_str(
            "<p id=\"waterfall-empty\">No traced requests yet (see <code>RequestTrace</code>).</p>",
        );
        return;
    }
    let longest = requests
        .iter()
        .map(|r| r.total.as_secs_f64())
        .fold(0.0, f64::max)
        .max(1e-9);
    let (label_w, plot_w, row_h) = (260.0, 440.0, 18.0);
    let h = row_h * (requests.len() + 2) as f64;
    let w = label_w + plot_w + 20.0;
    let _ = write!(
        out,
        "<svg id=\"waterfall\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" data-scale=\"{longest}\">"
    );
    // The legend.
    for (i, (name, _)) in requests[0].phases.named().iter().enumerate() {
        let x = 10.0 + 80.0 * i as f64;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"2\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"11\">{name}</text>",
            PHASE_COLORS[i],
            x + 14.0
        );
    }
    for (row, r) in requests.iter().enumerate() {
        let y = row_h * (row + 1) as f64 + 4.0;
        let mut label: String = format!("{} {}", r.method, r.uri);
        if label.chars().count() > 42 {
            label = label.chars().take(41).chain(['…']).collect();
        }
        let _ = write!(
            out,
            "<g class=\"request\" data-id=\"{}\" data-total=\"{}\"><text x=\"4\" y=\"{}\">{}</text>",
            r.id,
            r.total.as_secs_f64(),
            y + 12.0,
            escape_html(&label)
        );
        let mut at = 0.0;
        for (i, (name, d)) in r.phases.named().iter().enumerate() {
            let Some(d) = d else { continue };
            let secs = d.as_secs_f64();
            let x = label_w + plot_w * at / longest;
            let width = plot_w * secs / longest;
            let _ = write!(
                out,
                "<rect class=\"phase\" data-phase=\"{name}\" data-secs=\"{secs}\" x=\"{x:.2}\" y=\"{y}\" \
                 width=\"{width:.2}\" height=\"{}\" fill=\"{}\"><title>{name} {}</title></rect>",
                row_h - 4.0,
                PHASE_COLORS[i],
                fine_duration(*d)
            );
            at += secs;
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::bin;
    use std::time::Duration;

    #[test]
    fn bins_are_half_open() {
        assert_eq!(bin(Duration::from_millis(999)), 0);
        assert_eq!(bin(Duration::from_secs(1)), 1);
        assert_eq!(bin(Duration::from_secs(59)), 2);
        assert_eq!(bin(Duration::from_secs(3600)), 5);
        assert_eq!(bin(Duration::MAX), 5);
    }
}
