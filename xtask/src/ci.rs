//! `cargo xtask ci`: the checks CI runs, in the order that fails fastest.

use crate::cargo;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    if !has("--no-clippy") {
        cargo(
            &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
            &[],
        )?;
    }
    cargo(&["test", "--workspace", "--all-features", "--no-fail-fast"], &[])?;
    if !has("--no-doc") {
        cargo(
            &["doc", "--no-deps", "--workspace", "--all-features"],
            &[("RUSTDOCFLAGS", "-Dwarnings")],
        )?;
    }
    // The README's main command must keep working: a short run of the demo.
    cargo(&["run", "-p", "conntrack-examples", "--example", "demo", "--", "--seconds", "2"], &[])?;
    eprintln!("\nxtask ci: all checks passed");
    Ok(())
}
