//! `scripts/package-deb` for real: build the .deb around the test binary
//! (uncompressed, to keep it quick), install it with dpkg on this machine,
//! use what it installed (`snapsite --help`, `man snapsite-ship`, the bash
//! completion), and remove it: nothing of it may stay behind.

mod common;

use std::path::Path;
use std::process::Command;

fn run(argv: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn ok(argv: &[&str], env: &[(&str, &str)]) -> String {
    common::output::success(&format!("{argv:?}"), &run(argv, env))
}

fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to install a package".into());
    }
    for t in ["/usr/bin/dpkg", "/usr/bin/dpkg-deb", "/usr/bin/man"] {
        if !Path::new(t).exists() {
            return Some(format!("{t} is missing (apt-get install dpkg-dev man-db)"));
        }
    }
    // Never clobber a snapsite installed by someone else.
    let st = run(&["dpkg-query", "-W", "-f=${Status}", "snapsite"], &[]);
    if String::from_utf8_lossy(&st.stdout).contains("installed") {
        return Some("a snapsite package is installed on this machine already".into());
    }
    None
}

#[test]
fn the_deb_installs_man_pages_completions_and_units_and_removes_cleanly() {
    if let Some(reason) = missing() {
        if common::must_be_real() {
            panic!("package test cannot run under CI: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package-deb");
    let deb = ok(
        &[
            script.to_str().unwrap(),
            "--binary",
            common::snapsite_exe(),
            "--out",
            out.path().to_str().unwrap(),
            "--fast",
        ],
        &[],
    );
    let deb = deb.trim();
    assert!(deb.ends_with(".deb") && Path::new(deb).exists(), "{deb}");
    let info = ok(&["dpkg-deb", "--info", deb], &[]);
    assert!(info.contains("Package: snapsite"), "{info}");
    assert!(
        info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    let contents = ok(&["dpkg-deb", "--contents", deb], &[]);
    for f in [
        "./usr/bin/snapsite",
        "./usr/lib/snapsite/plugins/mysql/quiesce",
        "./usr/lib/snapsite/plugins/zimbra/replay",
        "./lib/systemd/system/snapsite.service",
        "./usr/share/doc/snapsite/examples/primary.toml",
        "./usr/share/doc/snapsite/examples/standby.toml",
        "./usr/lib/snapsite/plugins/generic/replay",
        "./usr/share/snapsite/prometheus/snapsite.rules.yml",
        "./usr/share/snapsite/grafana/snapsite-dashboard.json",
        "./etc/snapsite/",
        "./usr/share/man/man1/snapsite-ship.1.gz",
        "./usr/share/man/man1/snapsite-failover.1.gz",
        "./usr/share/man/man5/snapsite.toml.5.gz",
        "./usr/share/zsh/vendor-completions/_snapsite",
        "./usr/share/fish/vendor_completions.d/snapsite.fish",
    ] {
        assert!(
            contents.contains(f),
            "{f} is not in the package:\n{contents}"
        );
    }

    ok(&["dpkg", "-i", deb], &[]);
    let files = ok(&["dpkg", "-L", "snapsite"], &[]);
    let result = std::panic::catch_unwind(|| {
        let help = ok(&["/usr/bin/snapsite", "--help"], &[]);
        assert!(help.contains("failover"), "{help}");
        // The man page of a subcommand, rendered by man-db.
        let page = ok(
            &["man", "-P", "cat", "snapsite-ship"],
            &[("MANWIDTH", "80")],
        );
        assert!(page.contains("snapsite-ship"), "{page}");
        assert!(page.contains("--dry-run"), "{page}");
        // The configuration reference as a man page.
        let page = ok(
            &["man", "-P", "cat", "5", "snapsite.toml"],
            &[("MANWIDTH", "80")],
        );
        assert!(page.contains("connect_timeout"), "{page}");
        // The bash completion completes subcommands.
        let words = ok(
            &[
                "bash",
                "-c",
                "source /usr/share/bash-completion/completions/snapsite; \
                 COMP_WORDS=(snapsite fail); COMP_CWORD=1; COMP_LINE='snapsite fail'; COMP_POINT=13; \
                 _snapsite snapsite fail snapsite; printf '%s\\n' \"${COMPREPLY[@]}\"",
            ],
            &[],
        );
        assert!(
            words.lines().any(|w| w == "failover"),
            "bash completion of `snapsite fail`: {words:?}"
        );
        // The units are installed, pointing at the packaged binary; none is
        // enabled (nothing under /etc/systemd).
        let unit = std::fs::read_to_string("/lib/systemd/system/snapsite.service").unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/snapsite "), "{unit}");
        assert!(unit.contains("WatchdogSec="), "{unit}");
        assert!(
            !Path::new("/etc/systemd/system/multi-user.target.wants/snapsite.service").exists()
        );
        // Every installed path the documentation names exists in the package.
        docs_name_only_installed_paths();
    });
    ok(&["dpkg", "-r", "snapsite"], &[]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let st = run(&["dpkg-query", "-W", "-f=${Status}", "snapsite"], &[]);
    assert!(
        !String::from_utf8_lossy(&st.stdout).contains(" installed"),
        "still installed: {}",
        String::from_utf8_lossy(&st.stdout)
    );
    for f in files.lines().filter(|f| !f.is_empty() && *f != "/.") {
        let p = Path::new(f);
        // Shared directories (/usr/bin, /usr/share/man/man1 ...) stay.
        if p.is_dir() {
            continue;
        }
        assert!(!p.exists(), "{f} was left behind by dpkg -r");
    }
}

/// The documentation set (README, docs/, the example configs, the plugins'
/// README and the systemd units): every path it names under the package's
/// own places must exist once the .deb is installed, and none may point at
/// /usr/local (the .deb installs nothing there).
fn docs_name_only_installed_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("README.md"),
        root.join("plugins/README.md"),
        root.join("examples/primary.toml"),
        root.join("examples/standby.toml"),
    ];
    for dir in ["docs", "scripts/systemd"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    const OURS: &[&str] = &[
        "/usr/bin/snapsite",
        "/usr/lib/snapsite",
        "/usr/share/snapsite",
        "/usr/share/doc/snapsite",
        "/lib/systemd/system/snapsite",
        "/etc/snapsite",
        "/usr/share/man/man5/snapsite",
    ];
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", f.strip_prefix(root).unwrap().display(), n + 1);
            if line.contains("/usr/local/bin/snapsite") || line.contains("/usr/local/lib/snapsite")
            {
                problems.push(format!(
                    "{at}: names /usr/local (the .deb installs /usr/bin, /usr/lib)"
                ));
            }
            for start in OURS {
                let mut rest = line;
                while let Some(i) = rest.find(start) {
                    let tail = &rest[i..];
                    let end = tail
                        .find(|c: char| c.is_whitespace() || "`\"',)]:;".contains(c))
                        .unwrap_or(tail.len());
                    let mut path = tail[..end].trim_end_matches('.').to_string();
                    rest = &tail[end.max(1)..];
                    // A placeholder or glob: check the directory before it.
                    if let Some(cut) = path.find(['*', '<', '{', '$']) {
                        path.truncate(cut);
                        path = path
                            .rsplit_once('/')
                            .map(|(d, _)| d.to_string())
                            .unwrap_or(path);
                    }
                    // The admin's own files under /etc/snapsite: the directory must exist.
                    if path.starts_with("/etc/snapsite/") {
                        path = "/etc/snapsite".into();
                    }
                    checked += 1;
                    if !Path::new(&path).exists() {
                        problems.push(format!("{at}: `{path}` is not installed by the .deb"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} paths found in the docs: the scan is broken"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
