//! Project automation, run as `cargo xtask <task>`.
//!
//! - `ci`: everything CI checks: formatting, clippy (all targets, all features, warnings
//!   denied), the whole test suite, rustdoc with warnings denied, and a short run of the demo
//!   checked against the README (its ending and its table headers), and `instructions --check`.
//! - `features`: every library crate checked with no features and with each feature alone
//!   (also part of `ci`).
//! - `bench`: every benchmark of the workspace; the figures go to `docs/benchmarks.md`.
//! - `instructions [--check] [client] [churn] [ping] [smol] [std] [service]`: the cost of
//!   tracking in user-space instructions counted by callgrind (needs valgrind, and wrk for
//!   `service`): repeatable where the CPU-time ratios of `bench` are noisy. `--check` fails if
//!   a cost is over its budget (also part of `ci`).
//! - `install-check`: each dependency block of the README's "Installation" section, pasted
//!   as printed into a fresh package, builds its example (also part of `ci`).
//! - `demo-check [SECONDS]`: the demo's short run of `ci` alone (2 s by default).
//! - `tidy`: conntrack-core's modules import only down the order of its layers, with no
//!   circle between its files or folders (also part of `ci`; the order is in `tidy.rs` and
//!   `docs/architecture.md`).
//! - `stress`: the bounded load runs at full size on every runtime (9,000 concurrent pairs,
//!   100,000 churned connections).

mod bench;
mod ci;
mod demo;
mod features;
mod install;
mod instructions;
mod stress;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("features") => features::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("instructions") => instructions::run(&args[1..]),
        Some("stress") => stress::run(&args[1..]),
        Some("tidy") => tidy::run(&args[1..]),
        Some("install-check") => install::run(&args[1..]),
        Some("demo-check") => match args.get(1).map(|s| s.parse::<u32>()) {
            None => workspace_root().and_then(|root| demo::run(&root, 2)),
            Some(Ok(seconds)) => workspace_root().and_then(|root| demo::run(&root, seconds)),
            Some(Err(e)) => Err(format!("demo-check SECONDS: {e}")),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask <ci [--no-doc] [--no-clippy] [--no-features] [--no-instructions] | features | bench [--quick] [FILTER] | instructions [--check] [client] [churn] [ping] [smol] [std] [service] | stress [PAIRS [CHURN]] | install-check | demo-check [SECONDS] | tidy>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's root directory (xtask's parent).
fn workspace_root() -> Result<PathBuf, String> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "no workspace root".into())
}

/// Runs `cargo` with `args` (and extra environment), echoing the command; fails on a non-zero
/// exit.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("\n==> {} cargo {}", shown.join(" "), args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}
