//! `cargo xtask bench`: every benchmark in the workspace.
//!
//! `--quick` sets `CONNTRACK_BENCH_QUICK=1`, which the loopback benchmarks read to shrink their
//! sizes tenfold (a smoke run); a further argument is passed to the benchmarks as a filter.

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let filter: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let env: &[(&str, &str)] = if quick {
        &[("CONNTRACK_BENCH_QUICK", "1")]
    } else {
        &[]
    };
    let mut cmd = vec!["bench", "--workspace", "--all-features", "--benches"];
    if !filter.is_empty() {
        cmd.push("--");
        cmd.extend(filter);
    }
    cargo(&cmd, env)
}
