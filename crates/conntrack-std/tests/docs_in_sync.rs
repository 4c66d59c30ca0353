//! The example in `docs/integrations.md` is the crate-level doctest, verbatim.

/// The first code block of a source file's `//!` docs.
fn doc_block(src: &str) -> String {
    let lines: Vec<&str> = src
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = lines
        .iter()
        .position(|l| *l == "```")
        .expect("doc code block")
        + 1;
    let len = lines[start..]
        .iter()
        .position(|l| *l == "```")
        .expect("block end");
    lines[start..start + len].join("\n")
}

/// The first `rust` code block after `heading` in a Markdown file.
fn md_block(md: &str, heading: &str) -> String {
    let lines: Vec<&str> = md.lines().collect();
    let h = lines
        .iter()
        .position(|l| *l == heading)
        .expect("section heading");
    let start = h
        + lines[h..]
            .iter()
            .position(|l| *l == "```rust")
            .expect("rust block")
        + 1;
    let len = lines[start..]
        .iter()
        .position(|l| *l == "```")
        .expect("block end");
    lines[start..start + len].join("\n")
}

#[test]
fn integrations_doc_matches_crate_doctest() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let md = std::fs::read_to_string(format!("{dir}/../../docs/integrations.md")).unwrap();
    let src = std::fs::read_to_string(format!("{dir}/src/lib.rs")).unwrap();
    assert_eq!(md_block(&md, "## std (blocking)"), doc_block(&src));
}
