//! `cargo xtask ci`: the checks CI runs, in the order that fails fastest.

use std::process::Command;

use crate::cargo;

/// Crates conntrack-core must never depend on (it is runtime-independent).
const RUNTIMES: &[&str] = &["tokio", "async-std", "smol", "async-io", "futures-io"];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    core_has_no_runtime()?;
    if !has("--no-clippy") {
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
    }
    cargo(
        &["test", "--workspace", "--all-features", "--no-fail-fast"],
        &[],
    )?;
    if !has("--no-doc") {
        cargo(
            &["doc", "--no-deps", "--workspace", "--all-features"],
            &[("RUSTDOCFLAGS", "-Dwarnings")],
        )?;
    }
    // The README's main command must keep working: a short run of the demo.
    cargo(
        &[
            "run",
            "-p",
            "conntrack-examples",
            "--example",
            "demo",
            "--",
            "--seconds",
            "2",
        ],
        &[],
    )?;
    // The httptrace example against its own local server: two requests, one connection.
    cargo(
        &["run", "-p", "conntrack-examples", "--example", "httptrace"],
        &[],
    )?;
    eprintln!("\nxtask ci: all checks passed");
    Ok(())
}

/// `cargo tree -p conntrack-core -e normal` (all features) names no async runtime.
fn core_has_no_runtime() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = [
        "tree",
        "-p",
        "conntrack-core",
        "-e",
        "normal",
        "--all-features",
        "--prefix",
        "none",
    ];
    eprintln!("\n==> cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let found: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| RUNTIMES.contains(name))
        .collect();
    if found.is_empty() {
        eprintln!("conntrack-core depends on no async runtime");
        Ok(())
    } else {
        Err(format!("conntrack-core depends on a runtime: {found:?}"))
    }
}
