//! `cargo xtask tidy`, also part of `ci`: conntrack-core's modules import only down the order of
//! its layers, and no two of its files (or folders) import each other, directly or round a
//! circle.
//!
//! Every `.rs` file under `crates/conntrack-core/src` but `lib.rs` lives in the folder of one
//! layer ([`LAYERS`], lowest first; `docs/architecture.md` has the same list as its code map).
//! The check reads each file's paths into the crate: `use crate::...` items (grouped trees
//! included), `crate::...` paths written inline in code, `super::...` paths (resolved from the
//! file's module, so one that climbs out of its folder is seen), and the `"crate::..."` paths
//! of attributes such as serde's `serialize_with`. A path through one of `lib.rs`'s
//! re-exports (`crate::Tracker`, `crate::render::...`) is followed to the file that defines
//! it. Comments are skipped. It fails, naming the file and line, on a path to a higher layer,
//! on a file outside every layer's folder, and on each circle of imports between files or
//! between folders.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers of conntrack-core, lowest first, each a folder of `src/`: a module imports only
/// from its own layer and the layers before it. Keep `docs/architecture.md`'s code map in step.
pub(crate) const LAYERS: &[(&str, &str)] = &[
    ("record", "records and events: plain data"),
    ("hooks", "hooks and trace scopes"),
    ("track", "tracking state"),
    ("act", "acting and dialing"),
    ("emit", "emitters"),
];

/// Where the checked crate's sources are, from the workspace root.
const CORE_SRC: &str = "crates/conntrack-core/src";

pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    let root = crate::workspace_root()?;
    let files = read_tree(&root.join(CORE_SRC))?;
    let problems = check(&files);
    if problems.is_empty() {
        let order: Vec<&str> = LAYERS.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "tidy: conntrack-core's {} files import only down {} and form no circle",
            files.len(),
            order.join(" → ")
        );
        Ok(())
    } else {
        let mut msg = String::from("conntrack-core's layering is broken:");
        for p in &problems {
            let _ = write!(msg, "\n  {CORE_SRC}/{p}");
        }
        Err(msg)
    }
}

/// Every `.rs` file under `dir`, as (path relative to `dir` with `/` separators, text), sorted.
fn read_tree(dir: &Path) -> Result<Vec<(String, String)>, String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) -> Result<(), String> {
        let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path: PathBuf = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                walk(&path, base, out)?;
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text =
                    fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let rel = path.strip_prefix(base).map_err(|e| e.to_string())?;
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((rel.join("/"), text));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// One import found in a file: the path as written and the file it leads to.
#[derive(Debug, Clone)]
struct Edge {
    line: usize,
    written: String,
    to: String,
}

/// The problems of a crate given as (path relative to `src/`, text) pairs, each starting with
/// `file:line`; empty when it is layered.
pub(crate) fn check(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|(path, _)| (module_of(path), path.clone()))
        .collect();
    let reexports = files
        .iter()
        .find(|(path, _)| path == "lib.rs")
        .map(|(_, text)| root_reexports(text))
        .unwrap_or_default();
    let layer_of = |path: &str| -> Option<usize> {
        let top = path.split('/').next()?;
        if !path.contains('/') {
            return None;
        }
        LAYERS.iter().position(|(name, _)| *name == top)
    };

    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, Vec<Edge>> = BTreeMap::new();
    for (path, text) in files {
        if path == "lib.rs" {
            continue;
        }
        let Some(from_layer) = layer_of(path) else {
            problems.push(format!(
                "{path}:1: outside every layer's folder ({})",
                layer_names()
            ));
            continue;
        };
        let here = module_of(path);
        for found in paths_in(text, &here) {
            let Some(to) = resolve(&found.segments, &modules, &reexports) else {
                continue;
            };
            if &to == path {
                continue;
            }
            let edge = Edge {
                line: found.line,
                written: found.written.clone(),
                to: to.clone(),
            };
            if let Some(to_layer) = layer_of(&to) {
                if to_layer > from_layer {
                    problems.push(format!(
                        "{path}:{}: `{}` reaches up into `{}` ({}) from `{}` ({}): imports go \
                         only down {}",
                        found.line,
                        found.written,
                        LAYERS[to_layer].0,
                        LAYERS[to_layer].1,
                        LAYERS[from_layer].0,
                        LAYERS[from_layer].1,
                        layer_names(),
                    ));
                }
            }
            edges.entry(path.clone()).or_default().push(edge);
        }
    }

    // Circles between files.
    let file_graph: BTreeMap<String, BTreeSet<String>> = edges
        .iter()
        .map(|(from, es)| (from.clone(), es.iter().map(|e| e.to.clone()).collect()))
        .collect();
    for (members, cycle) in circles(&file_graph) {
        let mut steps = Vec::new();
        for pair in cycle.windows(2) {
            let e = edges[&pair[0]]
                .iter()
                .find(|e| e.to == pair[1])
                .expect("an edge of the cycle");
            steps.push(format!("{}:{} `{}`", pair[0], e.line, e.written));
        }
        let mut msg = format!(
            "{}: import circle between files: {} ({})",
            steps[0].split(' ').next().unwrap_or(""),
            cycle.join(" → "),
            steps.join(", ")
        );
        if members.len() + 1 > cycle.len() {
            let _ = write!(
                msg,
                "; these files all reach each other: {}",
                members.join(", ")
            );
        }
        problems.push(msg);
    }

    // Circles between folders (only possible through an upward import, reported above, but
    // said plainly).
    let folder = |p: &str| p.split('/').next().unwrap_or(p).to_string();
    let mut folder_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut folder_edge: HashMap<(String, String), String> = HashMap::new();
    for (from, es) in &edges {
        for e in es {
            let (a, b) = (folder(from), folder(&e.to));
            if a != b && e.to.contains('/') {
                folder_graph.entry(a.clone()).or_default().insert(b.clone());
                folder_edge
                    .entry((a, b))
                    .or_insert_with(|| format!("{from}:{} `{}`", e.line, e.written));
            }
        }
    }
    for (_, cycle) in circles(&folder_graph) {
        let steps: Vec<&str> = cycle
            .windows(2)
            .map(|p| folder_edge[&(p[0].clone(), p[1].clone())].as_str())
            .collect();
        problems.push(format!(
            "{}: import circle between folders: {} ({})",
            steps[0].split(' ').next().unwrap_or(""),
            cycle.join("/ → ") + "/",
            steps.join(", ")
        ));
    }
    problems
}

fn layer_names() -> String {
    LAYERS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The module path of a file: `lib.rs` is the root, `a/mod.rs` is `a`, `a/b.rs` is `a::b`.
fn module_of(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem.to_string());
    }
    parts
}

/// The file a path from the crate root leads to: the file of its longest prefix that is a
/// module, after following a re-export of `lib.rs`; `None` for the root itself and for what
/// is not the crate's.
fn resolve(
    segments: &[String],
    modules: &BTreeMap<Vec<String>, String>,
    reexports: &HashMap<String, Vec<String>>,
) -> Option<String> {
    let mut path = segments.to_vec();
    // A name re-exported by the root stands for the path it re-exports (at most a few hops).
    for _ in 0..4 {
        match path.first().and_then(|first| reexports.get(first)) {
            Some(target) if !modules.contains_key(&path[..1]) => {
                path = target.iter().chain(&path[1..]).cloned().collect();
            }
            _ => break,
        }
    }
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n]))
        .cloned()
}

/// The names `lib.rs` brings into the crate root with `use` (public or not), each with the
/// path (from the root) it stands for.
fn root_reexports(text: &str) -> HashMap<String, Vec<String>> {
    let tokens = tokenize(text);
    let mut out = HashMap::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].is_ident("use") {
            let mut leaves = Vec::new();
            i = use_tree(&tokens, i + 1, &[], &mut leaves);
            for leaf in leaves {
                let mut path = leaf.segments;
                if path.first().is_some_and(|s| s == "crate" || s == "self") {
                    path.remove(0);
                }
                if let Some(name) = leaf.alias.or_else(|| path.last().cloned()) {
                    if name != "*" && name != "_" {
                        out.insert(name, path);
                    }
                }
            }
        } else {
            i += 1;
        }
    }
    out
}

/// A path into the crate found in a file, from the crate root.
#[derive(Debug)]
struct Found {
    line: usize,
    written: String,
    segments: Vec<String>,
}

/// Every path into the crate in `text`, the text of the module `here`: `use` items, inline
/// `crate::`/`$crate::`/`super::`/`self::` paths, and `"crate::..."` strings.
fn paths_in(text: &str, here: &[String]) -> Vec<Found> {
    let tokens = tokenize(text);
    let mut out = Vec::new();
    // The inline modules (`mod tests { ... }`) the scan is in, with the brace depth each
    // opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let module: Vec<String> = here
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _)| m.clone()))
            .collect();
        let t = &tokens[i];
        match &t.kind {
            Kind::Punct(p) if p == "{" => {
                depth += 1;
                i += 1;
            }
            Kind::Punct(p) if p == "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Kind::Ident(w) if w == "mod" => {
                if let (Some(name), Some(open)) = (tokens.get(i + 1), tokens.get(i + 2)) {
                    if let (Kind::Ident(name), true) = (&name.kind, open.is_punct("{")) {
                        inline.push((name.clone(), depth + 1));
                    }
                }
                i += 1;
            }
            Kind::Ident(w) if w == "use" => {
                let mut leaves = Vec::new();
                i = use_tree(&tokens, i + 1, &[], &mut leaves);
                for leaf in leaves {
                    if let Some(segments) = absolute(&leaf.segments, &module) {
                        out.push(Found {
                            line: leaf.line,
                            written: leaf.segments.join("::"),
                            segments,
                        });
                    }
                }
            }
            Kind::Ident(w)
                if (w == "crate" || w == "super" || w == "self")
                    && tokens.get(i + 1).is_some_and(|n| n.is_punct("::"))
                    && !(i > 0 && tokens[i - 1].is_punct("::")) =>
            {
                let (segments, next) = plain_path(&tokens, i);
                if let Some(abs) = absolute(&segments, &module) {
                    out.push(Found {
                        line: t.line,
                        written: segments.join("::"),
                        segments: abs,
                    });
                }
                i = next;
            }
            Kind::Str(s) if s.starts_with("crate::") => {
                let segments: Vec<String> = s.split("::").map(str::to_string).collect();
                if segments.iter().all(|s| is_ident(s)) {
                    if let Some(abs) = absolute(&segments, &module) {
                        out.push(Found {
                            line: t.line,
                            written: s.clone(),
                            segments: abs,
                        });
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// `crate::a::b`, `super::a`, `self::a` as a path from the crate root, `module` being where
/// it is written; `None` for a path outside the crate.
fn absolute(segments: &[String], module: &[String]) -> Option<Vec<String>> {
    let first = segments.first()?;
    match first.as_str() {
        "crate" | "$crate" => Some(segments[1..].to_vec()),
        "self" => Some(module.iter().chain(&segments[1..]).cloned().collect()),
        "super" => {
            let mut base = module.to_vec();
            let mut rest = segments;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            Some(base.into_iter().chain(rest.iter().cloned()).collect())
        }
        _ => None,
    }
}

/// The path starting at `tokens[i]`: identifiers joined by `::` (stopping before a `::{`,
/// `::<` or `::*`), and the index after it.
fn plain_path(tokens: &[Token], mut i: usize) -> (Vec<String>, usize) {
    let mut segments = Vec::new();
    if let Kind::Ident(w) = &tokens[i].kind {
        segments.push(w.clone());
    }
    i += 1;
    while i + 1 < tokens.len() && tokens[i].is_punct("::") {
        match &tokens[i + 1].kind {
            Kind::Ident(w) => {
                segments.push(w.clone());
                i += 2;
            }
            _ => break,
        }
    }
    (segments, i)
}

/// One leaf of a `use` tree.
#[derive(Debug)]
struct Leaf {
    line: usize,
    segments: Vec<String>,
    alias: Option<String>,
}

/// Reads a `use` tree from `tokens[i]` under `prefix` into `out`, up to the `;` ending the
/// item (or the `,`/`}` ending a nested tree); returns the index after the item's `;` (or of
/// the nested tree's end).
fn use_tree(tokens: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<Leaf>) -> usize {
    let mut segments = prefix.to_vec();
    // Whether this tree named anything of its own (a `self` in a group names its prefix).
    let mut named = false;
    let mut line = tokens.get(i).map_or(0, |t| t.line);
    if tokens.get(i).is_some_and(|t| t.is_punct("::")) {
        i += 1;
    }
    loop {
        let Some(t) = tokens.get(i) else { return i };
        match &t.kind {
            Kind::Ident(w) if w == "as" => {
                let alias = match tokens.get(i + 1).map(|t| &t.kind) {
                    Some(Kind::Ident(a)) => Some(a.clone()),
                    _ => None,
                };
                out.push(Leaf {
                    line,
                    segments: std::mem::take(&mut segments),
                    alias,
                });
                named = false;
                i += 2;
            }
            Kind::Ident(w) => {
                // `self` inside a group names the group's prefix itself.
                if !(w == "self" && !prefix.is_empty() && segments.len() == prefix.len()) {
                    segments.push(w.clone());
                }
                named = true;
                line = t.line;
                i += 1;
            }
            Kind::Punct(p) if p == "::" => i += 1,
            Kind::Punct(p) if p == "*" => {
                segments.push("*".into());
                named = true;
                i += 1;
            }
            Kind::Punct(p) if p == "{" => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        None => return i,
                        Some(t) if t.is_punct("}") => {
                            i += 1;
                            break;
                        }
                        Some(t) if t.is_punct(",") => i += 1,
                        Some(_) => i = use_tree(tokens, i, &segments, out),
                    }
                }
                segments.clear();
                named = false;
            }
            Kind::Punct(p) if p == ";" || p == "," || p == "}" => {
                if named && !segments.is_empty() {
                    out.push(Leaf {
                        line,
                        segments,
                        alias: None,
                    });
                }
                // A nested tree leaves its `,` or `}` to the group; the item's `;` is eaten.
                return if p == ";" { i + 1 } else { i };
            }
            _ => i += 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Str(String),
    Punct(String),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
}

impl Token {
    fn is_punct(&self, p: &str) -> bool {
        matches!(&self.kind, Kind::Punct(q) if q == p)
    }

    fn is_ident(&self, w: &str) -> bool {
        matches!(&self.kind, Kind::Ident(v) if v == w)
    }
}

/// Rust source as identifiers (`$crate` one of them), string literals' contents and
/// punctuation (`::` one token), with their lines; comments, numbers, characters and
/// lifetimes dropped.
fn tokenize(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let push = |out: &mut Vec<Token>, kind: Kind, line: usize| out.push(Token { kind, line });
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut nest = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    nest += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    nest -= 1;
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"'
            || ((ch == 'r' || ch == 'b') && (next == Some('"') || next == Some('#')))
            || (ch == 'b' && next == Some('r'))
        {
            // A string: plain, byte, raw (`r#"..."#`) or raw byte.
            let start_line = line;
            let mut j = i;
            if c[j] == 'b' {
                j += 1;
            }
            let raw = c.get(j) == Some(&'r');
            if raw {
                j += 1;
            }
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                // `r#ident` or an identifier starting with r/b.
                let (word, end) = ident_at(&c, i);
                push(&mut out, Kind::Ident(word), line);
                i = end.max(i + 1);
                continue;
            }
            j += 1;
            let mut s = String::new();
            while j < c.len() {
                if c[j] == '\n' {
                    line += 1;
                }
                if !raw && c[j] == '\\' {
                    s.push(c[j]);
                    if let Some(&e) = c.get(j + 1) {
                        if e == '\n' {
                            line += 1;
                        }
                        s.push(e);
                    }
                    j += 2;
                    continue;
                }
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                s.push(c[j]);
                j += 1;
            }
            push(&mut out, Kind::Str(s), start_line);
            i = j;
        } else if ch == '\'' {
            // A character literal, or a lifetime / label (dropped either way).
            if next == Some('\\') {
                // `'\n'`, `'\''`, `'\u{1f}'`: past the escaped character, then to the quote.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && (c[i] == '_' || c[i].is_alphanumeric()) {
                    i += 1;
                }
            }
        } else if ch == '$' && c.get(i + 1..i + 6) == Some(&['c', 'r', 'a', 't', 'e'][..]) {
            push(&mut out, Kind::Ident("$crate".into()), line);
            i += 6;
        } else if ch == '_' || ch.is_alphabetic() {
            let (word, end) = ident_at(&c, i);
            push(&mut out, Kind::Ident(word), line);
            i = end;
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i] == '_' || c[i].is_alphanumeric()) {
                i += 1;
            }
        } else if ch == ':' && next == Some(':') {
            push(&mut out, Kind::Punct("::".into()), line);
            i += 2;
        } else {
            push(&mut out, Kind::Punct(ch.to_string()), line);
            i += 1;
        }
    }
    out
}

/// The identifier at `c[i]` (a raw `r#ident` without its `r#`) and the index after it.
fn ident_at(c: &[char], mut i: usize) -> (String, usize) {
    if c[i] == 'r' && c.get(i + 1) == Some(&'#') {
        i += 2;
    }
    let start = i;
    while i < c.len() && (c[i] == '_' || c[i].is_alphanumeric()) {
        i += 1;
    }
    (c[start..i].iter().collect(), i)
}

/// The circles of `graph`: per strongly connected component of more than one node, its members
/// and its shortest cycle through the first of them (that node repeated at the end), in a
/// stable order.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<(Vec<String>, Vec<String>)> {
    // Tarjan's algorithm, recursive: the graphs are a few dozen nodes.
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'g str, usize>,
        low: HashMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        components: Vec<Vec<&'g str>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(succ) = s.graph.get(v) {
            for w in succ {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut s = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    let mut out = Vec::new();
    for component in s.components.into_iter().filter(|c| c.len() > 1) {
        let members: BTreeSet<&str> = component.iter().copied().collect();
        let start = *members.iter().next().expect("non-empty");
        // The shortest way round from `start` back to it, inside the component.
        let mut prev: HashMap<&str, &str> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        'search: while let Some(v) = queue.pop_front() {
            for w in graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !members.contains(w) {
                    continue;
                }
                if w == start {
                    last = Some(v);
                    break 'search;
                }
                if !prev.contains_key(w) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        let mut cycle = vec![start.to_string()];
        let mut v = last.expect("a component of two or more nodes has a cycle");
        while v != start {
            cycle.push(v.to_string());
            v = prev[v];
        }
        cycle.push(start.to_string());
        cycle.reverse();
        out.push((members.iter().map(|m| (*m).to_string()).collect(), cycle));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small layered crate, as (path, text) pairs, with `extra` files added or replacing.
    fn crate_with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut files: BTreeMap<String, String> = [
            (
                "lib.rs",
                "//! A crate.\nmod record;\nmod hooks;\nmod track;\nmod act;\nmod emit;\n\
                 pub use emit::render;\npub use emit::render::Snapshot;\n\
                 pub use track::tracker::{Tracker, TrackerBuilder as Builder};\n",
            ),
            ("record/mod.rs", "pub(crate) mod info;\n"),
            ("record/info.rs", "//! Records.\npub struct Info;\n"),
            ("hooks/mod.rs", "pub(crate) mod hook;\n"),
            (
                "hooks/hook.rs",
                "use crate::record::info::Info;\npub trait Hook { fn on(&self, _: &Info) {} }\n",
            ),
            (
                "track/mod.rs",
                "pub(crate) mod state;\npub(crate) mod tracker;\n",
            ),
            (
                "track/state.rs",
                "use crate::hooks::hook::Hook;\npub struct State;\n",
            ),
            (
                "track/tracker.rs",
                "use super::state::State;\nuse crate::{hooks::hook::Hook, record::info::Info};\n\
                 pub struct Tracker(State);\npub struct TrackerBuilder;\n\
                 #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::state;\n}\n",
            ),
            ("act/mod.rs", "pub(crate) mod control;\n"),
            (
                "act/control.rs",
                "use crate::Tracker;\nfn f(t: &crate::track::tracker::Tracker) {}\n",
            ),
            ("emit/mod.rs", "pub mod render;\n"),
            (
                "emit/render.rs",
                "use crate::act::control;\n#[derive(Debug)]\npub struct Snapshot {\n    \
                 #[serde(serialize_with = \"crate::record::info::secs\")]\n    x: u8,\n}\n",
            ),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
        for (p, t) in extra {
            files.insert((*p).to_string(), (*t).to_string());
        }
        files.into_iter().collect()
    }

    fn one_problem(files: &[(String, String)], expect: &[&str]) {
        let problems = check(files);
        assert!(!problems.is_empty(), "expected a problem with {expect:?}");
        let found = problems
            .iter()
            .any(|p| expect.iter().all(|needle| p.contains(needle)));
        assert!(found, "no problem with {expect:?} in {problems:#?}");
    }

    #[test]
    fn a_layered_crate_passes() {
        assert_eq!(check(&crate_with(&[])), Vec::<String>::new());
    }

    #[test]
    fn a_planted_upward_use_fails_naming_file_and_line() {
        let files = crate_with(&[(
            "record/info.rs",
            "//! Records.\n\nuse crate::emit::render::Snapshot;\npub struct Info;\n",
        )]);
        one_problem(
            &files,
            &[
                "record/info.rs:3:",
                "crate::emit::render::Snapshot",
                "`emit`",
            ],
        );
    }

    #[test]
    fn a_grouped_use_reaching_up_is_found_on_its_own_line() {
        let files = crate_with(&[(
            "track/state.rs",
            "use crate::{\n    hooks::hook::Hook,\n    act::{control, control::f},\n};\n",
        )]);
        one_problem(
            &files,
            &["track/state.rs:3:", "crate::act::control", "`act`"],
        );
    }

    #[test]
    fn an_inline_path_reaching_up_fails() {
        let files = crate_with(&[(
            "hooks/hook.rs",
            "pub trait Hook {}\nfn f() {\n    let _ = crate::track::tracker::Tracker::new();\n}\n",
        )]);
        one_problem(
            &files,
            &["hooks/hook.rs:3:", "crate::track::tracker::Tracker"],
        );
    }

    #[test]
    fn a_root_reexport_is_followed_to_its_file() {
        // `crate::Tracker` is `track::tracker::Tracker`, `crate::Builder` an alias of it.
        let files = crate_with(&[(
            "hooks/hook.rs",
            "use crate::Builder;\npub fn f(_: crate::Tracker) {}\n",
        )]);
        one_problem(&files, &["hooks/hook.rs:1:", "crate::Builder", "`track`"]);
        one_problem(&files, &["hooks/hook.rs:2:", "crate::Tracker", "`track`"]);
        // ... and so is a public module's path (`crate::render` is `emit::render`).
        let files = crate_with(&[("act/control.rs", "fn f(_: crate::render::Snapshot) {}\n")]);
        one_problem(
            &files,
            &["act/control.rs:1:", "crate::render::Snapshot", "`emit`"],
        );
    }

    #[test]
    fn super_climbing_out_of_a_folder_is_resolved() {
        let files = crate_with(&[(
            "track/state.rs",
            "pub struct State;\nuse super::super::act::control;\n",
        )]);
        one_problem(&files, &["track/state.rs:2:", "super::super::act::control"]);
    }

    #[test]
    fn attribute_strings_count_and_comments_do_not() {
        let files = crate_with(&[(
            "record/info.rs",
            "//! See [`Tracker`](crate::track::tracker::Tracker).\n\
             /* crate::emit::render */ pub struct Info;\n\
             // use crate::act::control;\n\
             #[serde(serialize_with = \"crate::emit::render::secs\")]\npub struct T;\n\
             const S: &str = \"use crate::act::control; is text\";\n\
             fn f<'a>(x: &'a str) -> char { '\"' }\n",
        )]);
        let problems = check(&files);
        let upward: Vec<&String> = problems
            .iter()
            .filter(|p| p.contains("reaches up"))
            .collect();
        assert_eq!(upward.len(), 1, "{problems:#?}");
        assert!(upward[0].starts_with("record/info.rs:4:"), "{problems:#?}");
        for line in [1, 2, 3, 5, 6, 7] {
            let at = format!("record/info.rs:{line}");
            assert!(!problems.iter().any(|p| p.contains(&at)), "{problems:#?}");
        }
    }

    #[test]
    fn a_circle_between_files_of_one_folder_fails() {
        let files = crate_with(&[(
            "track/state.rs",
            "pub struct State;\nfn f() { let _ = crate::track::tracker::Tracker; }\n",
        )]);
        one_problem(
            &files,
            &[
                "import circle between files",
                "track/state.rs → track/tracker.rs → track/state.rs",
                "track/state.rs:2",
                "track/tracker.rs:1",
            ],
        );
    }

    #[test]
    fn a_file_outside_the_layers_fails() {
        let files = crate_with(&[("util.rs", "pub fn f() {}\n")]);
        one_problem(&files, &["util.rs:1:", "outside every layer"]);
    }

    #[test]
    fn folder_circles_are_named() {
        let mut graph = BTreeMap::new();
        graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
        graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
        graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
        graph.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
        assert_eq!(
            circles(&graph),
            vec![(
                vec!["a".into(), "b".into(), "c".into()],
                vec!["a".into(), "b".into(), "c".into(), "a".into()]
            )]
        );
    }

    #[test]
    fn conntrack_core_is_layered() {
        let root = crate::workspace_root().unwrap();
        let files = read_tree(&root.join(CORE_SRC)).unwrap();
        assert!(files.len() > 20, "read {} files", files.len());
        let problems = check(&files);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_code_map_lists_the_layers_and_their_files() {
        let root = crate::workspace_root().unwrap();
        let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
        let map_at = doc
            .find("## Code map: conntrack-core")
            .expect("the code map section");
        let map_end = doc[map_at + 3..]
            .find("\n## ")
            .map_or(doc.len(), |i| map_at + 3 + i);
        let map = &doc[map_at..map_end];
        // The folders' lines, in the order of the layers.
        let mut starts = Vec::new();
        let mut at = 0;
        for (name, _) in LAYERS {
            let needle = format!("\n- `{name}/`");
            let found = map[at..].find(&needle).unwrap_or_else(|| {
                panic!("docs/architecture.md's code map: no `{needle}` after the previous layer")
            });
            at += found + needle.len();
            starts.push(at);
        }
        starts.push(map.len());
        // Every folder of the crate is a layer, and each of its files is named in its part
        // of the map.
        let files = read_tree(&root.join(CORE_SRC)).unwrap();
        for (path, _) in &files {
            let Some((folder, file)) = path.split_once('/') else {
                continue;
            };
            let layer = LAYERS
                .iter()
                .position(|(l, _)| *l == folder)
                .unwrap_or_else(|| panic!("src/{folder}/ is in no layer"));
            if file == "mod.rs" {
                continue;
            }
            let part = &map[starts[layer]..starts[layer + 1]];
            assert!(
                part.contains(&format!("`{file}`")),
                "docs/architecture.md's code map does not name `{file}` under `{folder}/`"
            );
        }
    }
}
