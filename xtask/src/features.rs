//! `cargo xtask features`, also part of `ci`: every library crate checked with no features and
//! with each feature alone, warnings denied, so code that only one feature uses is gated by
//! that feature (no `#[allow(dead_code)]` to paper over a feature-less build) and no feature
//! silently needs another. The same idea as `cargo hack check --each-feature`, with no tool to
//! install.
//!
//! `cargo clippy` (a `check` with lints) rather than `cargo build`: nothing is linked, and
//! `-D warnings` reaches only the workspace crates, so dependencies are not rebuilt.

use std::fs;
use std::path::Path;

use crate::cargo;

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?;
    let mut crates: Vec<(String, Vec<String>)> = Vec::new();
    let dir = root.join("crates");
    let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let manifest = entry.map_err(|e| e.to_string())?.path().join("Cargo.toml");
        if let Ok(text) = fs::read_to_string(&manifest) {
            crates.push(parse(&text).ok_or(format!("{}: no name", manifest.display()))?);
        }
    }
    crates.sort();
    let mut runs = 0;
    for (name, features) in &crates {
        let none = std::iter::once(None);
        for feature in none.chain(features.iter().map(Some)) {
            let mut args = vec!["clippy", "-p", name, "--lib", "--no-default-features"];
            if let Some(f) = feature {
                args.extend(["--features", f]);
            }
            args.extend(["--", "-D", "warnings"]);
            cargo(&args, &[])?;
            runs += 1;
        }
    }
    eprintln!(
        "\nxtask features: {runs} builds of {} crates, each with no features and each feature alone",
        crates.len()
    );
    Ok(())
}

/// The package name and the features (but `default`) of a manifest.
fn parse(manifest: &str) -> Option<(String, Vec<String>)> {
    let mut name = None;
    let mut features = Vec::new();
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        match section {
            "[package]" if key == "name" => name = Some(value.trim().trim_matches('"').to_owned()),
            "[features]" if key != "default" && !key.starts_with('#') => {
                features.push(key.to_owned());
            }
            _ => {}
        }
    }
    Some((name?, features))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_name_and_features() {
        let manifest = r#"
[package]
name = "conntrack-x"
version.workspace = true

[features]
default = []
## A comment with = in it.
tls = ["dep:rustls"]
serde = ["conntrack-core/serde"]

[dependencies]
serde = { workspace = true, optional = true }
"#;
        let (name, features) = super::parse(manifest).unwrap();
        assert_eq!(name, "conntrack-x");
        assert_eq!(features, ["tls", "serde"]);
    }
}
