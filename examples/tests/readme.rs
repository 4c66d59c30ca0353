//! The README's tokio quick start is `examples/examples/tokio_quickstart.rs` verbatim, and it
//! prints both ends of its connection every time it runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The body of the first code block after `heading`.
fn md_block(md: &str, heading: &str) -> String {
    let after = &md[md.find(heading).expect("heading")..];
    let start = after.find("```rust").expect("code block");
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```\n").expect("block end")].to_string()
}

#[test]
fn readme_quick_start_is_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example =
        std::fs::read_to_string(root.join("examples/examples/tokio_quickstart.rs")).unwrap();
    let code: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(md_block(&readme, "## Quick start: tokio"), code);
}

/// The example binary `cargo test` built next to this test (`target/<profile>/examples/`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn tokio_quick_start_prints_both_ends_every_time() {
    let exe = example("tokio_quickstart");
    assert!(
        exe.exists(),
        "{} not built (a plain `cargo test -p conntrack-examples` builds the examples)",
        exe.display()
    );
    for run in 0..5 {
        let out = Command::new(&exe).output().unwrap();
        assert!(out.status.success(), "run {run}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|id| id.parse::<u64>().is_ok())
            })
            .collect();
        assert_eq!(rows.len(), 2, "run {run}: two rows\n{text}");
        assert!(
            rows.iter()
                .any(|r| r.contains(" api ") && r.contains(" server ")),
            "run {run}: the server row\n{text}"
        );
        assert!(
            rows.iter()
                .any(|r| r.contains(" db ") && r.contains(" client ")),
            "run {run}: the client row\n{text}"
        );
    }
}
