//! `cargo xtask install-check`: every dependency block of the README's "Installation" section,
//! pasted as printed into a fresh package, builds the example named under it.
//!
//! The conntrack crates are not on crates.io yet, so the blocks take them from the project's
//! repository with git dependencies (`git = "<repository>"`, the `repository` of the
//! workspace's `Cargo.toml`). For each `### scenario` the task makes a fresh package whose
//! manifest is a `[package]` table followed by the block, byte for byte, copies the workspace's
//! `Cargo.lock` so the other crates resolve to the versions CI already has, and `cargo check`s
//! the example as its `main.rs`. A block that misses a feature its example needs (tokio's
//! `macros`, hyper-util's `client-legacy`, a rustls provider) fails here, and so does one that
//! names a conntrack crate any other way than by the repository's URL.
//!
//! CI has no network beyond the package registries, so the repository's URL is not fetched:
//! git is told, for the check's `cargo` only, to fetch that URL from this clone instead
//! (`url.<clone>.insteadOf = <repository>`, with Cargo's `net.git-fetch-with-cli` so that git
//! itself does the fetch). The manifest is not touched; what is checked is the crates as
//! committed (`HEAD`) in this clone, which in CI is the commit under test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One scenario: its heading, its dependency block, and the code it must compile.
struct Scenario {
    name: String,
    deps: String,
    source: String,
}

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    let root = crate::workspace_root()?;
    let readme = read(&root.join("README.md"))?;
    let repository = repository(&read(&root.join("Cargo.toml"))?)?;
    let scenarios = scenarios(&root, &readme)?;
    if scenarios.is_empty() {
        return Err("README.md: no installation scenarios found".into());
    }
    committed(&root)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("install-check");
    let mut failed = Vec::new();
    for s in &scenarios {
        eprintln!("\n==> install-check: {}", s.name);
        if let Err(e) = names_crates_by_git(&s.deps, &repository)
            .and_then(|()| check(&root, &repository, &target, s))
        {
            eprintln!("{e}");
            failed.push(s.name.clone());
        }
    }
    if failed.is_empty() {
        eprintln!(
            "install-check: {} scenarios build as pasted",
            scenarios.len()
        );
        Ok(())
    } else {
        Err(format!("install-check failed for: {}", failed.join(", ")))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `repository` of the workspace's `[workspace.package]`.
fn repository(manifest: &str) -> Result<String, String> {
    manifest
        .lines()
        .filter_map(|l| l.strip_prefix("repository"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| "Cargo.toml: no repository".into())
}

/// The crates are fetched from this clone's `HEAD`: say so when the working tree's crates
/// differ from it (they are not what gets checked), and fail outside a git clone.
fn committed(root: &Path) -> Result<(), String> {
    let status = Command::new("git")
        .arg("-C")
        .arg(root)
        .arg("-c")
        .arg(format!("safe.directory={}", root.display()))
        .args(["status", "--porcelain", "--", "crates", "Cargo.toml"])
        .output()
        .map_err(|e| format!("install-check needs git: {e}"))?;
    if !status.status.success() {
        return Err(format!(
            "install-check fetches the crates from this clone's git history: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        ));
    }
    if !status.stdout.is_empty() {
        eprintln!(
            "install-check: uncommitted changes under crates/ are not checked (the blocks fetch \
             the crates as committed)"
        );
    }
    Ok(())
}

/// Every conntrack crate a block names comes from the repository by git: they are not on
/// crates.io, so a `version` alone (or another URL) fails when pasted.
fn names_crates_by_git(deps: &str, repository: &str) -> Result<(), String> {
    let want = format!("git = \"{repository}\"");
    for line in deps
        .lines()
        .filter(|l| l.trim_start().starts_with("conntrack-"))
    {
        if !line.contains(&want) {
            return Err(format!(
                "{line:?}: the conntrack crates are not on crates.io; name them with {want}"
            ));
        }
    }
    Ok(())
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

fn check(root: &Path, repository: &str, target: &Path, s: &Scenario) -> Result<(), String> {
    let dir = target.join("packages").join(slug(&s.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
    // The block, byte for byte, after a package table. `[workspace]` keeps the package out of
    // the conntrack workspace when it sits inside the clone (the default target directory).
    let manifest = format!(
        "[package]\nname = \"install-{}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         # A package of its own, outside the conntrack workspace.\n[workspace]\n\n{}",
        slug(&s.name),
        s.deps
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("src/main.rs"), &s.source).map_err(|e| e.to_string())?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).map_err(|e| e.to_string())?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The only redirection: git fetches the repository's URL from this clone (CI has no
    // network but the package registries). Cargo hands the fetch to the git command line,
    // which applies the `insteadOf` rewrite given here through git's environment.
    let clone = root.display().to_string();
    let status = Command::new(cargo)
        .args(["check", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target.join("target"))
        .env("CARGO_NET_GIT_FETCH_WITH_CLI", "true")
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", format!("url.{clone}.insteadOf"))
        .env("GIT_CONFIG_VALUE_0", repository)
        // A clone owned by another user than the one running the check is still fetched.
        .env("GIT_CONFIG_KEY_1", "safe.directory")
        .env("GIT_CONFIG_VALUE_1", &clone)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_the_workspace_s() {
        let manifest =
            "[workspace.package]\nversion = \"0.1.0\"\nrepository = \"https://example.org/x/y\"\n";
        assert_eq!(repository(manifest).unwrap(), "https://example.org/x/y");
    }

    #[test]
    fn conntrack_crates_must_come_from_the_repository() {
        let repo = "https://example.org/x/y";
        names_crates_by_git(
            "[dependencies]\nconntrack-core = { git = \"https://example.org/x/y\" }\ntokio = \"1\"\n",
            repo,
        )
        .unwrap();
        assert!(names_crates_by_git("conntrack-core = \"0.1\"\n", repo).is_err());
        assert!(names_crates_by_git(
            "conntrack-core = { git = \"https://example.org/z\" }\n",
            repo
        )
        .is_err());
    }

    /// Every block of the README passes the naming check, and there are blocks.
    #[test]
    fn the_readme_blocks_name_the_repository() {
        let root = crate::workspace_root().unwrap();
        let repo = repository(&read(&root.join("Cargo.toml")).unwrap()).unwrap();
        let scenarios = scenarios(&root, &read(&root.join("README.md")).unwrap()).unwrap();
        assert!(scenarios.len() >= 5);
        for s in &scenarios {
            names_crates_by_git(&s.deps, &repo).unwrap();
        }
    }
}
