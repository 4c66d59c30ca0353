//! `cargo xtask install-check`: every dependency block of the README's "Installation" section,
//! exactly as written, builds the example named under it.
//!
//! For each `### scenario` the task makes a fresh package whose `[dependencies]` are the
//! block's, points the conntrack crates at this repository with `[patch.crates-io]` (they are
//! the same versions), copies the workspace's `Cargo.lock` so the other crates resolve to the
//! versions CI already has, and `cargo check`s the example as its `main.rs`. A block that
//! misses a feature its example needs (tokio's `macros`, hyper-util's `client-legacy`, a
//! rustls provider) fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace crates a block may name, with their directories.
const CRATES: &[(&str, &str)] = &[
    ("conntrack-core", "crates/conntrack-core"),
    ("conntrack-tokio", "crates/conntrack-tokio"),
    ("conntrack-std", "crates/conntrack-std"),
    ("conntrack-async-std", "crates/conntrack-async-std"),
    ("conntrack-rustls", "crates/conntrack-rustls"),
];

/// One scenario: its heading, its dependency block, and the code it must compile.
struct Scenario {
    name: String,
    deps: String,
    source: String,
}

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    let root = workspace_root()?;
    let readme = read(&root.join("README.md"))?;
    let scenarios = scenarios(&root, &readme)?;
    if scenarios.is_empty() {
        return Err("README.md: no installation scenarios found".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("install-check");
    let mut failed = Vec::new();
    for s in &scenarios {
        eprintln!("\n==> install-check: {}", s.name);
        if let Err(e) = check(&root, &target, s) {
            eprintln!("{e}");
            failed.push(s.name.clone());
        }
    }
    if failed.is_empty() {
        eprintln!(
            "install-check: {} scenarios build as written",
            scenarios.len()
        );
        Ok(())
    } else {
        Err(format!("install-check failed for: {}", failed.join(", ")))
    }
}

fn workspace_root() -> Result<PathBuf, String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "no workspace root".into())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `### ` subsections of `## Installation` with a `toml` block and a "Checked with:" line.
fn scenarios(root: &Path, readme: &str) -> Result<Vec<Scenario>, String> {
    let start = readme
        .find("\n## Installation\n")
        .ok_or("README.md: no Installation section")?;
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let mut out = Vec::new();
    for part in section.split("\n### ").skip(1) {
        let name = part.lines().next().unwrap_or("").trim().to_owned();
        let deps = fenced(part, "```toml").ok_or_else(|| format!("{name}: no toml block"))?;
        let checked = part
            .lines()
            .find_map(|l| l.strip_prefix("Checked with: "))
            .ok_or_else(|| format!("{name}: no \"Checked with:\" line"))?;
        let source = source_of(root, checked).map_err(|e| format!("{name}: {e}"))?;
        out.push(Scenario { name, deps, source });
    }
    Ok(out)
}

/// The body of the first fenced block opened by `fence` in `text`.
fn fenced(text: &str, fence: &str) -> Option<String> {
    let start = text.find(fence)?;
    let body = &text[start..];
    let body = &body[body.find('\n')? + 1..];
    Some(body[..body.find("```")?].to_owned())
}

/// The code a "Checked with:" line names: `` `examples/x.rs` `` (the file), or
/// `` `docs/x.md` § Heading `` (the first Rust block after the heading that starts with
/// `Heading`, wrapped in `fn main` unless it has one, as rustdoc does).
fn source_of(root: &Path, checked: &str) -> Result<String, String> {
    let mut parts = checked.splitn(2, '§');
    let file = parts
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('`')
        .to_owned();
    let text = read(&root.join(&file))?;
    let Some(heading) = parts.next().map(str::trim) else {
        return Ok(text);
    };
    let at = text
        .lines()
        .scan(0usize, |pos, line| {
            let here = *pos;
            *pos += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, l)| l.starts_with('#') && l.trim_start_matches('#').trim().starts_with(heading))
        .map(|(pos, _)| pos)
        .ok_or_else(|| format!("{file}: no heading {heading:?}"))?;
    let code = fenced(&text[at..], "```rust").ok_or_else(|| format!("{file}: no Rust block"))?;
    // rustdoc's hidden lines (`# `) are part of the program.
    let code: String = code
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(if code.contains("fn main(") {
        code
    } else {
        format!("#[allow(unused)]\nfn main() {{\n{code}}}\n")
    })
}

fn slug(name: &str) -> String {
    let s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn check(root: &Path, target: &Path, s: &Scenario) -> Result<(), String> {
    let dir = target.join("packages").join(slug(&s.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    let mut manifest = format!(
        "[package]\nname = \"install-{}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         # A package of its own, outside the conntrack workspace.\n[workspace]\n\n{}\n[patch.crates-io]\n",
        slug(&s.name),
        s.deps.trim()
    );
    for (name, path) in CRATES {
        manifest.push_str(&format!(
            "{name} = {{ path = {:?} }}\n",
            root.join(path).display().to_string()
        ));
    }
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("src/main.rs"), &s.source).map_err(|e| e.to_string())?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).map_err(|e| e.to_string())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["check", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target.join("target"))
        // The block as written: no RUSTFLAGS of the caller's build (warnings are not errors).
        .env_remove("RUSTFLAGS")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: the block does not build its example (package in {})",
            s.name,
            dir.display()
        ))
    }
}
