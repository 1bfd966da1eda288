//! Guards the module structure: the crate's top-level modules must import
//! each other without circles (issue 12: `config` used to import `prune`,
//! `run` and `status` imported each other).
//!
//! The test reads `src/**/*.rs` as text, collects every `crate::X` path
//! (including `use crate::{a, b::c}` groups) per top-level module — a file
//! `src/X.rs` or anything under `src/X/` belongs to module `X`; `lib.rs` and
//! the binary's `main.rs` are the root and left out — and asserts the graph
//! is acyclic, printing a cycle if it is not. Line comments are ignored
//! (doc links are not dependencies); `#[cfg(test)]` code counts: a test
//! module that needs a circle to compile is a circle too.
//!
//! `MODULE_DEPS_SRC=/path/to/src cargo test --test module_deps` checks
//! another tree (used once on the pre-change tree: it found the circles).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    match std::env::var_os("MODULE_DEPS_SRC") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to; `None` for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if rel.components().count() > 1 {
        return Some(first);
    }
    let stem = first.strip_suffix(".rs")?;
    match stem {
        "lib" | "main" => None,
        s => Some(s.to_string()),
    }
}

fn strip_line_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every first path segment after `crate::` in `text`, with `crate::{a,
/// b::c, d::{e}}` groups expanded to `a`, `b`, `d`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let text = strip_line_comments(text);
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("crate::") {
        // `snapsite_crate::` or `my_crate::` are not this crate.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let r = rest.trim_start();
        if let Some(group) = r.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let id = ident_at(&group[j..]);
                        if !id.is_empty() {
                            out.insert(id.to_string());
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(r);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut g: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let Some(m) = module_of(src, f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        for r in crate_refs(&text) {
            // Root re-exports (`crate::Error`) and the module itself are no edge.
            if r != m && modules.contains(&r) {
                g.get_mut(&m).unwrap().insert(r);
            }
        }
    }
    g
}

/// A cycle `[a, b, ..., a]` if the graph has one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &str,
        g: &Graph,
        mark: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        mark.insert(n.to_string(), Mark::Open);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match mark.get(m.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(m, g, mark, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        mark.insert(n.to_string(), Mark::Done);
        None
    }
    let mut mark = BTreeMap::new();
    for n in g.keys() {
        if mark.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            let mut path = Vec::new();
            if let Some(c) = visit(n, g, &mut mark, &mut path) {
                return Some(c);
            }
        }
    }
    None
}

fn render(g: &Graph) -> String {
    g.iter()
        .map(|(m, deps)| {
            let d: Vec<&str> = deps.iter().map(String::as_str).collect();
            format!("  {m} -> {}\n", d.join(", "))
        })
        .collect()
}

#[test]
fn top_level_modules_import_each_other_without_circles() {
    let src = src_dir();
    let g = graph(&src);
    assert!(
        g.len() >= 10 && g.contains_key("config") && g.contains_key("backend"),
        "read too few modules from {}: {g:?}",
        src.display()
    );
    eprintln!("module graph of {}:\n{}", src.display(), render(&g));
    if let Some(c) = find_cycle(&g) {
        panic!(
            "import circle between modules: {}\nwhole graph:\n{}",
            c.join(" -> "),
            render(&g)
        );
    }
}

/// The layering issue 12 asked for, stated directly: the pure grid knows no
/// snapsite module, the schema does not know the code that prunes, and
/// `status` reads `run`'s record from the catalog, not from `run` (`run`
/// may call `status` to refresh the metrics it serves).
#[test]
fn pure_modules_stay_pure() {
    let g = graph(&src_dir());
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    if g.contains_key("retention") {
        assert!(
            deps("retention").is_empty(),
            "retention imports {:?}",
            deps("retention")
        );
    }
    for (m, forbidden) in [
        ("config", "prune"),
        ("config", "backend"),
        ("status", "run"),
        ("mountinfo", "config"),
    ] {
        assert!(
            !deps(m).contains(forbidden),
            "{m} imports {forbidden}: {:?}",
            deps(m)
        );
    }
}

#[test]
fn the_scanner_sees_groups_and_the_cycle_finder_finds_cycles() {
    let text = "use crate::a::X;\nuse crate::{b, c::{D, E}, self_::F};\n\
                // crate::commented\nlet x = crate::d::f(my_crate::e::g);\n\
                use crate::{\n    h::I,\n    j,\n};";
    let got: Vec<String> = crate_refs(text).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "d", "h", "j", "self_"]);

    let mut g = Graph::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "w")] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    assert_eq!(find_cycle(&g), None);
    g.get_mut("z").unwrap().insert("x".into());
    assert_eq!(find_cycle(&g).unwrap(), ["x", "y", "z", "x"]);
}
