//! The demo step of `cargo xtask ci`: the README's main command, run briefly, must end as the
//! README says, and print the tables the README's sample output shows.
//!
//! The demo's ending is its point: a burst of connections meets the server's limit (some are
//! rejected), and a connection stalled half-way through a request holds up the shutdown until
//! the deadline, when it is aborted and listed (the "aborted at the deadline" table, a
//! `shutdown_deadline` row among the recently closed, the `app_shutdown_timeout` error type on
//! the connection-duration metric). A run that merely exits 0 without showing that fails.
//!
//! The README's sample block (the first `text` block after the demo's command) must have the
//! demo's table headers, column for column and in the same order of tables.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs the demo for `seconds`, echoes what it printed, and checks its ending and its table
/// headers against `README.md`.
pub(crate) fn run(root: &Path, seconds: u32) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let seconds = seconds.to_string();
    let args = [
        "run",
        "-p",
        "conntrack-examples",
        "--example",
        "demo",
        "--",
        "--seconds",
        seconds.as_str(),
    ];
    eprintln!("\n==> cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        return Err(format!("the demo failed ({})", out.status));
    }
    check_ending(&stdout).map_err(|e| format!("the demo's ending: {e}"))?;
    let readme =
        std::fs::read_to_string(root.join("README.md")).map_err(|e| format!("README.md: {e}"))?;
    check_headers(&readme_sample(&readme)?, &stdout)?;
    eprintln!("demo: ended as the README says; its table headers match the README's sample");
    Ok(())
}

/// Some connections rejected by the limit, and a stalled one aborted at the deadline, listed
/// in the shutdown report, in the closed list and in the metrics.
pub(crate) fn check_ending(out: &str) -> Result<(), String> {
    let limit = out
        .lines()
        .find(|l| l.starts_with("limit:"))
        .ok_or("no \"limit:\" line")?;
    let rejected: u64 = limit
        .strip_suffix(" rejected")
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no rejected count in {limit:?}"))?;
    if rejected == 0 {
        return Err(format!("no connection rejected: {limit:?}"));
    }
    let mut lines = out
        .lines()
        .skip_while(|l| !(l.starts_with("shutdown:") && l.ends_with("aborted at the deadline:")));
    let report = lines.next().ok_or("no shutdown report")?;
    let header = lines.next().unwrap_or("");
    if !header.starts_with("ID ") {
        return Err(format!("no table after {report:?}"));
    }
    let aborted = lines.take_while(|l| !l.trim().is_empty()).count();
    if aborted == 0 {
        return Err(format!(
            "no connection aborted at the deadline: {report:?} and an empty table"
        ));
    }
    let closed = out
        .lines()
        .skip_while(|l| !l.starts_with("recently closed"))
        .take_while(|l| !l.trim().is_empty());
    if !closed
        .filter(|l| !l.starts_with("ID "))
        .any(|l| l.split_whitespace().last() == Some("shutdown_deadline"))
    {
        return Err("no recently closed connection with reason shutdown_deadline".into());
    }
    if !out
        .lines()
        .any(|l| l.contains("error_type=\"app_shutdown_timeout\""))
    {
        return Err("no app_shutdown_timeout line in the metrics excerpt".into());
    }
    Ok(())
}

/// The README's sample of the demo's output: the first `text` block after the command.
pub(crate) fn readme_sample(readme: &str) -> Result<String, String> {
    let at = readme
        .find("--example demo")
        .ok_or("README.md: the demo's command is missing")?;
    let rest = &readme[at..];
    let start = rest
        .find("```text\n")
        .ok_or("README.md: no sample output after the demo's command")?
        + "```text\n".len();
    let end = rest[start..]
        .find("```")
        .ok_or("README.md: the sample output block is not closed")?;
    Ok(rest[start..start + end].to_owned())
}

/// The header lines of the text tables in `text` (those starting with `ID` or with
/// `CATEGORY ROLE`), as columns, in order, a header repeated right after itself (the live
/// table printed each second) kept once.
pub(crate) fn headers(text: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let is_header = cols.first() == Some(&"ID") || cols.starts_with(&["CATEGORY", "ROLE"]);
        if is_header && out.last() != Some(&cols) {
            out.push(cols);
        }
    }
    out
}

/// The README's sample has the demo's tables with the demo's columns.
pub(crate) fn check_headers(sample: &str, out: &str) -> Result<(), String> {
    let (want, got) = (headers(sample), headers(out));
    if want == got {
        return Ok(());
    }
    let show = |h: &[Vec<&str>]| {
        h.iter()
            .map(|cols| format!("  {}", cols.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Err(format!(
        "README.md's sample output is stale: its table headers\n{}\nare not the demo's\n{}",
        show(&want),
        show(&got)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDING: &str = "\
limit: 12 connections at once against max_connections(8): 4 rejected
shutdown: drained=false after 1.00s; aborted at the deadline:
ID  CATEGORY  ROLE    LOCAL            REMOTE           AGE   READ  WRITTEN  IDLE
23  http-in   server  127.0.0.1:43293  127.0.0.1:46506  1.0s  22 B  0 B      1.0s

totals:
CATEGORY    ROLE    ACTIVE  OPENED  CLOSED  FAILED  REJECTED  READ       WRITTEN
http-in     server  0       19      19      0       4         12.6 KiB   7.9 MiB

recently closed (newest first):
ID  CATEGORY  ROLE    LOCAL            REMOTE           AGE   READ  WRITTEN  IDLE  REASON
23  http-in   server  127.0.0.1:43293  127.0.0.1:46506  1.0s  22 B  0 B      1.0s  shutdown_deadline
30  http-in   server  127.0.0.1:43293  127.0.0.1:46566  0ms   0 B   0 B      0ms   peer_closed

from /metrics (excerpt):
conntrack_connection_duration_seconds_count{category=\"http-in\",role=\"server\",error_type=\"app_shutdown_timeout\"} 1
";

    #[test]
    fn the_expected_ending_passes() {
        check_ending(ENDING).unwrap();
    }

    #[test]
    fn an_empty_shutdown_table_fails() {
        let out = ENDING.replace(
            "23  http-in   server  127.0.0.1:43293  127.0.0.1:46506  1.0s  22 B  0 B      1.0s\n",
            "",
        );
        let err = check_ending(&out).unwrap_err();
        assert!(err.contains("no connection aborted"), "{err}");
    }

    #[test]
    fn no_rejection_fails() {
        let out = ENDING.replace(": 4 rejected", ": 0 rejected");
        assert!(check_ending(&out)
            .unwrap_err()
            .contains("no connection rejected"));
    }

    #[test]
    fn no_deadline_close_fails() {
        let out = ENDING.replace("shutdown_deadline", "closed_locally");
        assert!(check_ending(&out)
            .unwrap_err()
            .contains("shutdown_deadline"));
    }

    #[test]
    fn no_timeout_metric_fails() {
        let out = ENDING.replace("app_shutdown_timeout", "x");
        assert!(check_ending(&out)
            .unwrap_err()
            .contains("app_shutdown_timeout"));
    }

    #[test]
    fn headers_are_compared_column_for_column() {
        assert_eq!(headers(ENDING).len(), 3);
        check_headers(ENDING, ENDING).unwrap();
        let fewer = ENDING.replace("  REASON", "");
        let err = check_headers(&fewer, ENDING).unwrap_err();
        assert!(err.contains("stale"), "{err}");
    }

    #[test]
    fn the_readme_sample_has_the_tables() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let sample = readme_sample(&readme).unwrap();
        // Live connections, aborted at the deadline, totals, recently closed.
        assert_eq!(headers(&sample).len(), 4, "{sample}");
        check_ending(&sample).unwrap();
    }
}
