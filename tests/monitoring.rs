//! The operator's pictures shipped in the .deb (packaging/monitoring/):
//! Prometheus's own `promtool` checks the alerting rules and runs their unit
//! tests (the alerts fire on the series snapsite writes, and stay quiet on a
//! healthy pair), and the rules and the Grafana dashboard name only metrics
//! the code exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/promtool");
    if p.exists() {
        return Some(p);
    }
    let reason = "promtool is missing (apt-get install prometheus)";
    if common::must_be_real() {
        panic!("monitoring test cannot run under CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
    None
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = root().join("packaging/monitoring");
    for args in [
        vec!["check", "rules", "snapsite.rules.yml"],
        vec!["test", "rules", "snapsite.rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        common::output::success(&format!("promtool {args:?}"), &out);
    }
}

/// Every metric name the code can write: the string literals given to the
/// metrics writers' `metric(` / `m(` helpers anywhere under src/.
fn exported() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for opener in ["metric(", " m("] {
            for (i, _) in text.match_indices(opener) {
                let rest = text[i + opener.len()..].trim_start();
                let Some(lit) = rest.strip_prefix('"') else {
                    continue;
                };
                let name: String = lit
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if lit[name.len()..].starts_with('"') && !name.is_empty() {
                    names.insert(format!("snapsite_{name}"));
                }
            }
        }
    }
    names
}

fn used_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("snapsite_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

#[test]
fn rules_and_dashboard_name_only_exported_metrics() {
    let exported = exported();
    // The scan itself works: the metrics the README documents are found.
    for m in [
        "snapsite_status",
        "snapsite_recovery_point_age_seconds",
        "snapsite_volume_lag_seconds",
        "snapsite_stream_lag_seconds",
        "snapsite_spool_usable",
        "snapsite_rehearsal_ok",
    ] {
        assert!(exported.contains(m), "{m} not found in src/: {exported:?}");
    }
    let dir = root().join("packaging/monitoring");
    let rules = std::fs::read_to_string(dir.join("snapsite.rules.yml")).unwrap();
    let dash = std::fs::read_to_string(dir.join("snapsite-dashboard.json")).unwrap();
    let dash_json: serde_json::Value = serde_json::from_str(&dash).expect("dashboard is JSON");
    let mut exprs = String::new();
    for p in dash_json["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    exprs.push_str(&dash_json["templating"].to_string());
    for (what, text) in [("snapsite.rules.yml", rules), ("the dashboard", exprs)] {
        let used = used_in(&text);
        assert!(used.len() >= 5, "{what}: only {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics snapsite does not export: {unknown:?} (exported: {exported:?})"
        );
    }
}
