//! The documentation set against the program: every command line the docs
//! show names a real subcommand and only flags its `--help` lists, and every
//! relative link (file and `#anchor`) resolves. The paths the docs name are
//! checked against the installed .deb by tests/package.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, docs/*.md, plugins/README.md, vagrant/README.md.
fn doc_files() -> Vec<PathBuf> {
    let mut v = vec![
        root().join("README.md"),
        root().join("plugins/README.md"),
        root().join("vagrant/README.md"),
    ];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            v.push(p);
        }
    }
    v.sort();
    v
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

/// Command lines: inline code spans and lines of fenced blocks that run
/// `snapsite VERB ...` (also after `&&`, `;` or a `$ ` prompt).
fn command_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        let mut pieces: Vec<String> = Vec::new();
        if fence {
            let l = line.split(" #").next().unwrap();
            pieces.extend(l.split("&&").flat_map(|p| p.split(';')).map(str::to_string));
        } else {
            let mut rest = line;
            while let Some(i) = rest.find('`') {
                let after = &rest[i + 1..];
                let Some(j) = after.find('`') else { break };
                let span = &after[..j];
                pieces.extend(span.split("&&").map(str::to_string));
                rest = &after[j + 1..];
            }
        }
        for p in pieces {
            let p = p.trim().trim_start_matches("$ ").trim_start_matches("# ");
            if let Some(cmd) = p.strip_prefix("snapsite ") {
                out.push((n + 1, cmd.replace("\\|", "|")));
            }
        }
    }
    out
}

struct Help {
    exe: &'static str,
    cache: BTreeMap<String, Option<String>>,
}

impl Help {
    fn get(&mut self, verb: &str) -> Option<String> {
        let exe = self.exe;
        self.cache
            .entry(verb.to_string())
            .or_insert_with(|| {
                let mut c = Command::new(exe);
                if !verb.is_empty() {
                    c.arg(verb);
                }
                let o = c.arg("--help").output().unwrap();
                o.status
                    .success()
                    .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
            })
            .clone()
    }
}

#[test]
fn every_documented_command_line_matches_the_programs_help() {
    let mut help = Help {
        exe: common::snapsite_exe(),
        cache: BTreeMap::new(),
    };
    let global = help.get("").unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in doc_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        for (line, cmd) in command_lines(&text) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            // Global options before the verb (`--config FILE`, `--log-format json`).
            let mut i = 0;
            while i < words.len() && words[i].starts_with('-') {
                let flag = words[i].split('=').next().unwrap();
                if !global.contains(flag) {
                    problems.push(format!(
                        "{}:{line}: `snapsite {cmd}`: no global option {flag}",
                        rel(&f)
                    ));
                }
                i += if words[i].contains('=') || flag == "--help" || flag == "--version" {
                    1
                } else {
                    2
                };
            }
            let Some(verb) = words.get(i) else { continue };
            if !verb.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                continue; // prose like `snapsite <command>`
            }
            checked += 1;
            let Some(text) = help.get(verb) else {
                problems.push(format!(
                    "{}:{line}: `snapsite {cmd}`: no subcommand `{verb}`",
                    rel(&f)
                ));
                continue;
            };
            for w in &words[i + 1..] {
                let w = w.trim_matches(|c| "[](){}".contains(c));
                for alt in w.split('|') {
                    let Some(flag) = alt.strip_prefix("--") else {
                        continue;
                    };
                    let flag = format!("--{}", flag.split('=').next().unwrap());
                    if flag.len() > 2 && !text.contains(&flag) && !global.contains(&flag) {
                        problems.push(format!(
                            "{}:{line}: `snapsite {cmd}`: `snapsite {verb} --help` has no {flag}",
                            rel(&f)
                        ));
                    }
                }
            }
        }
    }
    assert_scan(checked, 30, "command lines", &problems);
}

/// A scan of the docs checked more than `at_least` `what` (else the scan
/// is broken) and found no problem.
fn assert_scan(checked: usize, at_least: usize, what: &str, problems: &[String]) {
    assert!(
        checked > at_least,
        "only {checked} {what} found: the scan is broken"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// GitHub's heading anchors: lower case, punctuation dropped, spaces to `-`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        }
        if fence || !line.starts_with('#') {
            continue;
        }
        let h = line.trim_start_matches('#').trim().to_lowercase();
        let slug: String = h
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        out.insert(slug);
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in doc_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let dir = f.parent().unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(j) = after.find(')') else { break };
            let target = &after[..j];
            rest = &after[j..];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, a)) => (file, Some(a)),
                None => (target, None),
            };
            let path = if file.is_empty() {
                f.clone()
            } else {
                dir.join(file)
            };
            if !path.exists() {
                problems.push(format!("{}: link to `{target}`: no such file", rel(&f)));
                continue;
            }
            if let Some(a) = anchor {
                let t = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&t).contains(a) {
                    problems.push(format!(
                        "{}: link to `{target}`: no heading with that anchor",
                        rel(&f)
                    ));
                }
            }
        }
    }
    assert_scan(checked, 20, "links", &problems);
}

#[test]
fn the_readme_is_a_front_page() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: the reference belongs in docs/"
    );
    // The two commands come first.
    let head: Vec<&str> = text.lines().take(6).collect();
    assert!(
        head.iter().any(|l| l.starts_with("scripts/demo")),
        "{head:?}"
    );
    assert!(
        head.iter().any(|l| l.starts_with("scripts/test")),
        "{head:?}"
    );
}
