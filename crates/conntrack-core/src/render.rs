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

use std::fmt::Write as _;
use std::time::Duration;

use crate::info::ConnectionInfo;
use crate::stats::Stats;

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

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
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
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The live connections as an aligned text table, one row per connection: id, category, role,
/// local and remote address, age, bytes read and written, idle time, and the TLS version and
/// ALPN when any connection has TLS.
#[must_use]
pub fn text_table(connections: &[ConnectionInfo]) -> String {
    let tls = connections.iter().any(|c| c.tls.is_some());
    let mut header = vec![
        "ID", "CATEGORY", "ROLE", "LOCAL", "REMOTE", "AGE", "READ", "WRITTEN", "IDLE",
    ];
    if tls {
        header.push("TLS");
    }
    let rows: Vec<Vec<String>> = connections
        .iter()
        .map(|c| {
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
                duration(c.established_for),
                bytes(c.read_bytes),
                bytes(c.write_bytes),
                duration(c.idle_for),
            ];
            if tls {
                row.push(c.tls.as_ref().map_or_else(
                    || "-".into(),
                    |t| match t.alpn_str() {
                        Some(alpn) => format!("{} {}", t.protocol_version, alpn),
                        None => t.protocol_version.clone(),
                    },
                ));
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// One line per (category, role): active, opened, closed, failed, bytes.
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
                bytes(c.read_bytes),
                bytes(c.write_bytes),
            ]
        })
        .collect();
    table(
        &[
            "CATEGORY", "ROLE", "ACTIVE", "OPENED", "CLOSED", "FAILED", "READ", "WRITTEN",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
