//! `cargo xtask ci`: the checks CI runs, in the order that fails fastest.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cargo;

/// Crates conntrack-core must never depend on (it is runtime-independent).
const RUNTIMES: &[&str] = &["tokio", "async-std", "smol", "async-io", "futures-io"];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    core_has_no_runtime()?;
    crate::tidy::run(&[])?;
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
    if !has("--no-features") {
        crate::features::run(&[])?;
    }
    // Tests that need an outside tool log here when they skip its check (never under CI=true,
    // where a missing tool fails the test); the list is printed at the end.
    let skip_log =
        std::env::temp_dir().join(format!("conntrack-skipped-{}.tsv", std::process::id()));
    let _ = std::fs::remove_file(&skip_log);
    let skip_log_str = skip_log.display().to_string();
    cargo(
        &["test", "--workspace", "--all-features", "--no-fail-fast"],
        &[("CONNTRACK_SKIP_LOG", skip_log_str.as_str())],
    )?;
    loom()?;
    if !has("--no-install-check") {
        crate::install::run(&[])?;
    }
    if !has("--no-doc") {
        cargo(
            &["doc", "--no-deps", "--workspace", "--all-features"],
            &[("RUSTDOCFLAGS", "-Dwarnings")],
        )?;
    }
    // The README's main command must keep working: a short run of the demo, which must end
    // as the README says (some connections rejected, a stalled one aborted at the deadline)
    // and print the tables the README's sample shows.
    crate::demo::run(&crate::workspace_root()?, 2)?;
    // The httptrace example against its own local server: two requests, one connection.
    cargo(
        &["run", "-p", "conntrack-examples", "--example", "httptrace"],
        &[],
    )?;
    // What tracking costs, counted in instructions, against its budgets: a change that makes
    // the tracked paths dearer fails here.
    if !has("--no-instructions") {
        instruction_budgets(&skip_log)?;
    }
    eprintln!("\nxtask ci: all checks passed");
    report_skipped(&skip_log);
    Ok(())
}

/// `cargo xtask instructions --check`: needs valgrind and wrk; without them it fails under
/// `CI=true` and is otherwise listed among the skipped checks.
fn instruction_budgets(skip_log: &Path) -> Result<(), String> {
    let missing: Vec<&str> = ["valgrind", "wrk"]
        .into_iter()
        .filter(|tool| Command::new(tool).arg("--version").output().is_err())
        .collect();
    if !missing.is_empty() && std::env::var("CI").as_deref() != Ok("true") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(skip_log)
        {
            let _ = writeln!(
                f,
                "cargo xtask instructions --check\t{}\tapt-get install valgrind wrk",
                missing.join(", ")
            );
        }
        return Ok(());
    }
    crate::instructions::run(&["--check".to_string()])
}

/// The loom models of the registry, drain and hook-list races (`crates/conntrack-core/tests/
/// loom.rs`): core built with `--cfg loom`, in a target directory of its own so that the
/// changed flags do not rebuild the main one.
fn loom() -> Result<(), String> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("loom");
    let dir = dir.to_str().ok_or("the target directory is not UTF-8")?;
    cargo(
        &["test", "-p", "conntrack-core", "--test", "loom"],
        &[("RUSTFLAGS", "--cfg loom"), ("CARGO_TARGET_DIR", dir)],
    )
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

/// Prints which tests skipped a check for want of an outside tool, and how to install it.
fn report_skipped(log: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    let _ = std::fs::remove_file(log);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    lines.sort_unstable();
    lines.dedup();
    if lines.is_empty() {
        return;
    }
    eprintln!("\nxtask ci: NOT everything was checked: these tests skipped for want of a tool");
    for line in lines {
        let mut parts = line.splitn(3, '\t');
        let (test, tool, install) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        eprintln!("  {test}: needs {tool} (install: {install})");
    }
}
