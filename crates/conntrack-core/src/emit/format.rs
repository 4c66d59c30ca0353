//! Numbers and text as the renderings show them: sizes, durations, HTML escaping. Public as
//! [`render::bytes`](crate::render::bytes), [`render::duration`](crate::render::duration),
//! [`render::fine_duration`](crate::render::fine_duration) and
//! [`render::escape_html`](crate::render::escape_html).

use std::time::Duration;

/// Escapes text for HTML element content and quoted attribute values: `& < > " '`.
#[must_use]
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 KiB`-style sizes.
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`-style durations.
#[must_use]
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// A short duration with sub-millisecond precision (`0.052ms`), as round-trip times need;
/// from a second on as [`duration`].
#[must_use]
pub fn fine_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.3}ms", d.as_secs_f64() * 1000.0)
    } else {
        duration(d)
    }
}
