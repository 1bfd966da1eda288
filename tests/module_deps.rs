//! Guards the module structure (issues 12 and 26).
//!
//! `src/` is laid out in folders by role (issue 26). Each folder's modules
//! may import only the folders [`ALLOWED`] lists for it (and the few named
//! module-to-module [`EXCEPTIONS`], each with its reason); the table is
//! layered (no folder can reach itself through it), nothing imports `cli`
//! (the binary) or `testing`, and the modules import each other without
//! circles (issue 12: `config` used to import `prune`, `run` and `status`
//! imported each other). The same table is written in each folder's
//! `mod.rs` doc.
//!
//! The test reads `src/**/*.rs` as text and collects every `crate::` path of
//! the library's files and every `snapsite::` path of the binary's
//! (`src/cli/`), groups included (`use crate::{a::b, c::{d, e}}`). A module
//! is `folder::name` for a file `src/folder/name.rs` or anything under
//! `src/folder/name/`; `backend`, `cli` and a module at the top level are one
//! module each; `lib.rs`,
//! `main.rs` and the folders' `mod.rs` are roots and left out. Line comments
//! are ignored (doc links are not dependencies); `#[cfg(test)]` code counts:
//! a test module that needs a circle to compile is a circle too.
//!
//! `MODULE_DEPS_SRC=/path/to/src cargo test --test module_deps` checks
//! another tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Folders whose files are modules of their own (`base::config`).
const FOLDERS: [&str; 7] = ["base", "wire", "primary", "standby", "dr", "ops", "testing"];

/// What each unit of `src/` may import (besides itself). Layered: base <
/// backend < wire < primary, standby < dr < ops < testing, cli. The redo
/// stream is split by side (issue 26 item 2): its model in
/// `wire::redostream`, the follower in `primary`, the spool, checkpoint and
/// matching in `standby`, the apply in `dr`, its status in `ops`.
const ALLOWED: [(&str, &[&str]); 9] = [
    ("base", &[]),
    ("backend", &["base"]),
    ("wire", &["base", "backend"]),
    ("primary", &["base", "backend", "wire"]),
    ("standby", &["base", "backend", "wire"]),
    ("dr", &["base", "backend", "wire", "primary", "standby"]),
    (
        "ops",
        &["base", "backend", "wire", "primary", "standby", "dr"],
    ),
    (
        "testing",
        &["base", "backend", "wire", "primary", "standby", "dr", "ops"],
    ),
    (
        "cli",
        &["base", "backend", "wire", "primary", "standby", "dr", "ops"],
    ),
];

/// Imports against the folder table, each allowed by name and for a
/// reason. An exception no longer used fails the test: drop it.
const EXCEPTIONS: [(&str, &str, &str); 13] = [
    // `[[archive]]` (issue 30) holds its compression and bandwidth limit.
    (
        "base::archiveconf",
        "wire::compress",
        "the [[archive]] compression setting",
    ),
    (
        "base::archiveconf",
        "wire::ratelimit",
        "the [[archive]] bwlimit setting",
    ),
    // The schema holds each section's setting type, defined beside the code
    // that acts on it; those modules import only `base` themselves.
    (
        "base::config",
        "wire::compress",
        "the [stream] compression setting",
    ),
    ("base::config", "wire::ratelimit", "the bwlimit setting"),
    ("base::config", "primary::hooks", "the [hooks] section"),
    ("base::config", "ops::notify", "the [notify] section"),
    (
        "base::config",
        "dr::replay",
        "the [replay] template and time format",
    ),
    ("base::site", "backend", "the local site opens its stores"),
    (
        "primary::seed",
        "standby::serve",
        "seed.rs holds both ends: the reader feeds a serve session (split it by side)",
    ),
    // The daemon loop drives the operations after each cycle.
    (
        "primary::run",
        "ops::prune",
        "run prunes by the retention grid",
    ),
    (
        "primary::run",
        "ops::status",
        "run refreshes the metrics it serves",
    ),
    ("primary::run", "ops::notify", "run notifies on failure"),
    (
        "primary::run",
        "ops::systemd",
        "run tells systemd it is ready",
    ),
];

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

/// The module a file belongs to; `None` for a root (`lib.rs`, `main.rs`,
/// a folder's `mod.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    let stem = |s: &str| s.strip_suffix(".rs").unwrap_or(s).to_string();
    match parts.as_slice() {
        ["lib.rs" | "main.rs"] => None,
        [f, "mod.rs"] if FOLDERS.contains(f) => None,
        [f, m, ..] if FOLDERS.contains(f) => Some(format!("{f}::{}", stem(m))),
        [first, ..] => Some(stem(first)),
        [] => None,
    }
}

/// The folder (or top-level unit) of a module: `base` for `base::config`.
fn folder_of(module: &str) -> &str {
    module.split("::").next().unwrap()
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

/// The paths of a use tree at the start of `s` (`a::b`, `a::{b, c::d}`,
/// `{a, b::c}`), each cut to its first two segments.
fn use_tree(s: &str, out: &mut BTreeSet<Vec<String>>, prefix: &[String]) {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        // split the group's top-level items
        let mut depth = 0usize;
        let mut start = 0;
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    use_tree(&group[start..j], out, prefix);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_tree(&group[start..j], out, prefix);
                    start = j + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let id = ident_at(s);
    if id.is_empty() {
        return;
    }
    let mut path = prefix.to_vec();
    path.push(id.to_string());
    if path.len() < 2 {
        if let Some(rest) = s[id.len()..].trim_start().strip_prefix("::") {
            use_tree(rest, out, &path);
            return;
        }
    }
    out.insert(path);
}

/// Every path after `root::` in `text` (`crate` or `snapsite`), groups
/// expanded, each cut to two segments.
fn refs(text: &str, root: &str) -> BTreeSet<Vec<String>> {
    let text = strip_line_comments(text);
    let pat = format!("{root}::");
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find(&pat) {
        // `snapsite_crate::` or `my_crate::` are not this crate.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + pat.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        use_tree(rest, &mut out, &[]);
    }
    out
}

/// The unit a path names: `base::config`, `backend`, `cli`, a bare
/// folder (`base`), or `None` for a root item (`crate::Error`, a macro).
fn target(path: &[String], units: &BTreeSet<String>) -> Option<String> {
    let first = path.first()?;
    if FOLDERS.contains(&first.as_str()) {
        return Some(match path.get(1) {
            Some(m) => format!("{first}::{m}"),
            None => first.clone(),
        });
    }
    units.contains(first).then(|| first.clone())
}

/// Module -> modules (or bare folders) it names.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let units: BTreeSet<String> = modules.iter().map(|m| folder_of(m).to_string()).collect();
    let mut g: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let Some(m) = module_of(src, f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        // The binary names the library `snapsite::`; its `crate::` is itself.
        let root = if folder_of(&m) == "cli" {
            "snapsite"
        } else {
            "crate"
        };
        for p in refs(&text, root) {
            if let Some(t) = target(&p, &units) {
                if t != m {
                    g.get_mut(&m).unwrap().insert(t);
                }
            }
        }
    }
    g
}

/// Only module nodes (not bare folders) take part in the circle check.
fn module_graph(g: &Graph) -> Graph {
    g.iter()
        .map(|(m, deps)| {
            let d = deps
                .iter()
                .filter(|d| g.contains_key(*d))
                .cloned()
                .collect();
            (m.clone(), d)
        })
        .collect()
}

fn allowed(folder: &str) -> Option<&'static [&'static str]> {
    ALLOWED.iter().find(|(f, _)| *f == folder).map(|(_, a)| *a)
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
fn modules_import_each_other_without_circles() {
    let src = src_dir();
    let g = graph(&src);
    assert!(
        g.len() >= 10 && g.contains_key("base::config") && g.contains_key("backend"),
        "read too few modules from {}: {g:?}",
        src.display()
    );
    eprintln!("module graph of {}:\n{}", src.display(), render(&g));
    if let Some(c) = find_cycle(&module_graph(&g)) {
        panic!(
            "import circle between modules: {}\nwhole graph:\n{}",
            c.join(" -> "),
            render(&g)
        );
    }
}

/// Every import between folders goes a way the table allows (or is a named
/// exception); every module is in a folder the table knows.
#[test]
fn folders_import_only_the_allowed_directions() {
    let g = graph(&src_dir());
    let mut wrong = Vec::new();
    let mut used = BTreeSet::new();
    for (m, deps) in &g {
        let from = folder_of(m);
        let Some(ok) = allowed(from) else {
            wrong.push(format!(
                "{m}: not in a folder the table knows (move it into one of {FOLDERS:?}, or add it to ALLOWED)"
            ));
            continue;
        };
        for d in deps {
            let to = folder_of(d);
            if to == from || ok.contains(&to) {
                continue;
            }
            if let Some(e) = EXCEPTIONS.iter().find(|(a, b, _)| a == m && b == d) {
                used.insert((e.0, e.1));
                continue;
            }
            wrong.push(format!("{m} -> {d}: {from} may import only {ok:?}"));
        }
    }
    for (a, b, why) in EXCEPTIONS {
        if !used.contains(&(a, b)) {
            wrong.push(format!(
                "exception {a} -> {b} ({why}) is no longer used: drop it from EXCEPTIONS"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the folder table (tests/module_deps.rs ALLOWED):\n  {}\nwhole graph:\n{}",
        wrong.join("\n  "),
        render(&g)
    );
}

/// The table itself is layered, and nothing may import `cli` or `testing`.
#[test]
fn the_folder_table_is_layered() {
    let mut t = Graph::new();
    for (f, ok) in ALLOWED {
        t.insert(f.into(), ok.iter().map(|s| s.to_string()).collect());
        for o in ok {
            assert!(
                allowed(o).is_some(),
                "{f} allows {o}, which the table lacks"
            );
            assert!(!["cli", "testing"].contains(o), "{f} may not import {o}");
        }
    }
    assert_eq!(find_cycle(&t), None, "the folder table has a circle");
    for f in FOLDERS {
        assert!(allowed(f).is_some(), "folder {f} is not in ALLOWED");
    }
}

/// Issue 26: the top level of `src/` holds `lib.rs`, `main.rs` and folders.
#[test]
fn src_top_level_holds_only_the_roots_and_folders() {
    let src = src_dir();
    let mut loose: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| !["lib.rs", "main.rs"].contains(&n.as_str()))
        .collect();
    loose.sort();
    assert!(
        loose.is_empty(),
        "files at the top of {}: {loose:?}",
        src.display()
    );
}

/// The layering issue 12 asked for, stated directly: the pure grid knows no
/// snapsite module, the schema does not know the code that prunes, and
/// `status` reads `run`'s record from the catalog, not from `run` (`run`
/// may call `status` to refresh the metrics it serves).
#[test]
fn pure_modules_stay_pure() {
    let g = graph(&src_dir());
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    if g.contains_key("base::retention") {
        assert!(
            deps("base::retention").is_empty(),
            "retention imports {:?}",
            deps("base::retention")
        );
    }
    for (m, forbidden) in [
        ("base::config", "ops::prune"),
        ("base::config", "backend"),
        ("ops::status", "primary::run"),
        ("base::mountinfo", "base::config"),
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
                use crate::{\n    h::I,\n    j,\n};\nuse crate::k::{l, m::N};\n\
                use crate::base::{config::{self, Config}, model};";
    let got: Vec<String> = refs(text, "crate")
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        got,
        [
            "a::X",
            "b",
            "base::config",
            "base::model",
            "c::D",
            "c::E",
            "d::f",
            "h::I",
            "j",
            "k::l",
            "k::m",
            "self_::F"
        ]
    );
    let units: BTreeSet<String> = ["backend".to_string()].into();
    let t = |p: &[&str]| target(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &units);
    assert_eq!(t(&["base", "config"]).as_deref(), Some("base::config"));
    assert_eq!(t(&["backend", "Stores"]).as_deref(), Some("backend"));
    assert_eq!(t(&["Error"]), None);
    let src = Path::new("/s");
    assert_eq!(
        module_of(src, Path::new("/s/base/config.rs")).as_deref(),
        Some("base::config")
    );
    assert_eq!(module_of(src, Path::new("/s/base/mod.rs")), None);
    assert_eq!(
        module_of(src, Path::new("/s/backend/lvm/thin.rs")).as_deref(),
        Some("backend")
    );
    assert_eq!(
        module_of(src, Path::new("/s/cli/ship.rs")).as_deref(),
        Some("cli")
    );
    assert_eq!(
        module_of(src, Path::new("/s/backend/mod.rs")).as_deref(),
        Some("backend")
    );
    assert_eq!(module_of(src, Path::new("/s/lib.rs")), None);

    let mut g = Graph::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "w")] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    assert_eq!(find_cycle(&g), None);
    g.get_mut("z").unwrap().insert("x".into());
    assert_eq!(find_cycle(&g).unwrap(), ["x", "y", "z", "x"]);
}
