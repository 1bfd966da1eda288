//! The configuration reference (src/base/config_keys.rs) against the real
//! parser: each section's keys are exactly the ones the parser accepts (its
//! own unknown-key error lists them), every key's sample parses, a required
//! key is required, every documented default is what the parser does when
//! the key is absent, and docs/configuration-reference.md and the
//! `snapsite.toml(5)` page are what `snapsite generate` writes now.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use snapsite::base::config::Config;
use snapsite::base::config_keys::{DefaultValue, KEYS, Key, SECTIONS};

/// A config as (header, key = value lines); `None` header: the top level.
type Doc = Vec<(Option<String>, Vec<(String, String)>)>;

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A valid config with every section present, holding only required keys.
/// `volume` decides the volume's backend (`btrfs`, `zfs`, `lvm`) and
/// `transport` the `[standby]` transport.
fn base(volume: &str, transport: &str) -> Doc {
    let vol = match volume {
        "zfs" => kv(&[
            ("role", "\"redolog\""),
            ("backend", "\"zfs\""),
            ("source", "\"tank/redolog\""),
        ]),
        "lvm" => kv(&[
            ("role", "\"redolog\""),
            ("backend", "\"lvm\""),
            ("source", "\"vg/redolog\""),
        ]),
        _ => kv(&[
            ("role", "\"redolog\""),
            ("backend", "\"btrfs\""),
            ("source", "\"/srv/live/redolog\""),
            ("snapshot_dir", "\"/srv/snap/redolog\""),
        ]),
    };
    let standby = match transport {
        "local" => kv(&[
            ("transport", "\"local\""),
            ("config", "\"/etc/snapsite/b.toml\""),
        ]),
        "command" => kv(&[("transport", "\"command\""), ("command", "[\"/bin/cat\"]")]),
        _ => kv(&[("transport", "\"ssh\""), ("host", "\"b.example.org\"")]),
    };
    vec![
        (
            None,
            kv(&[("site", "\"a\""), ("state_dir", "\"/var/lib/snapsite\"")]),
        ),
        (Some("[[volume]]".into()), vol),
        (Some("[set]".into()), vec![]),
        (Some("[standby]".into()), standby),
        (
            Some("[replay]".into()),
            kv(&[("command", "[\"/bin/true\"]")]),
        ),
        (
            Some("[schedule]".into()),
            kv(&[("full_set_interval", "\"1h\"")]),
        ),
        (Some("[retention]".into()), kv(&[("grid", "\"24x1h\"")])),
        (Some("[status]".into()), vec![]),
        (
            Some("[hooks.set]".into()),
            kv(&[("pre", "[\"/bin/true\"]")]),
        ),
        (
            Some("[hooks.volume.redolog]".into()),
            kv(&[("pre", "[\"/bin/true\"]")]),
        ),
        (
            Some("[notify]".into()),
            kv(&[("command", "[\"/bin/true\"]")]),
        ),
        (Some("[stream]".into()), vec![]),
        (Some("[detect]".into()), vec![]),
        (
            Some("[[archive]]".into()),
            kv(&[
                ("name", "\"offsite\""),
                ("endpoint", "\"http://127.0.0.1:7480\""),
                ("bucket", "\"mail-archive\""),
                ("credentials", "\"/etc/snapsite/archive.creds\""),
            ]),
        ),
    ]
}

fn render(doc: &Doc) -> String {
    let mut s = String::new();
    for (h, kvs) in doc {
        if let Some(h) = h {
            s.push_str(&format!("\n{h}\n"));
        }
        for (k, v) in kvs {
            s.push_str(&format!("{k} = {v}\n"));
        }
    }
    s
}

fn header(section: &str) -> Option<String> {
    match section {
        "" => None,
        "volume" | "volume.zfs" => Some("[[volume]]".into()),
        "archive" => Some("[[archive]]".into()),
        // The base config's one volume.
        "detect.volume" => Some("[detect.volume.redolog]".into()),
        s => Some(format!("[{s}]")),
    }
}

/// The base config a key lives in: a ZFS or LVM volume for their keys, the
/// standby transport the key belongs to.
fn base_for(key: &Key) -> Doc {
    let volume = if key.section == "volume.zfs" || key.applies.starts_with("zfs") {
        "zfs"
    } else if key.applies == "lvm" {
        "lvm"
    } else {
        "btrfs"
    };
    let transport = match key.applies {
        "local" | "command" => key.applies,
        _ => "ssh",
    };
    base(volume, transport)
}

/// The base config with the key's sample: `[replay] none = true` comes
/// without `command` (they exclude each other).
fn sample_doc(key: &Key) -> Doc {
    let mut doc = with(base_for(key), key, Some(key.sample));
    if key.section == "replay" && key.name == "none" {
        let replay = doc
            .iter_mut()
            .find(|(h, _)| h.as_deref() == Some("[replay]"))
            .unwrap();
        replay.1.retain(|(k, _)| k != "command");
    }
    doc
}

/// `doc` with `key = value` set (or removed, `None`) in its section.
fn with(mut doc: Doc, key: &Key, value: Option<&str>) -> Doc {
    let (name, value) = if key.section == "volume.zfs" {
        ("zfs", value.map(|v| format!("{{ {} = {v} }}", key.name)))
    } else {
        (key.name, value.map(str::to_string))
    };
    let h = header(key.section);
    if !doc.iter().any(|(x, _)| *x == h) {
        // A table the base config leaves out ([detect.volume.ROLE]).
        doc.push((h.clone(), vec![]));
    }
    let sect = doc.iter_mut().find(|(x, _)| *x == h).expect("section");
    sect.1.retain(|(k, _)| k != name);
    if let Some(v) = value {
        sect.1.push((name.to_string(), v));
    }
    doc
}

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/snapsite/test.toml")).map_err(|e| format!("{e:#}"))
}

/// The names a serde unknown-field error says it expected.
fn expected_names(err: &str) -> BTreeSet<String> {
    let tail = err
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("no `expected` in: {err}"));
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn table_names(section: &str) -> BTreeSet<String> {
    KEYS.iter()
        .filter(|k| k.section == section)
        .map(|k| k.name.to_string())
        .collect()
}

#[test]
fn every_section_lists_exactly_the_keys_the_parser_accepts() {
    assert!(parse(&render(&base("btrfs", "ssh"))).is_ok());
    let unknown = "zz_not_a_key";
    // Each section of the table, plus [hooks.volume.ROLE] (same keys as
    // [hooks.set]) and the [hooks] table itself.
    let mut cases: Vec<(&str, &str, BTreeSet<String>)> = SECTIONS
        .iter()
        .map(|(s, _)| (*s, *s, table_names(s)))
        .collect();
    cases.push((
        "hooks.volume.redolog",
        "hooks.set",
        table_names("hooks.set"),
    ));
    let sections: BTreeSet<String> = [
        "volume",
        "set",
        "standby",
        "replay",
        "schedule",
        "retention",
        "status",
        "hooks",
        "notify",
        "stream",
        "detect",
        "archive",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (where_, section, want) in cases {
        let key = Key {
            section: where_,
            name: unknown,
            ..KEYS[0]
        };
        let doc = if where_ == "volume.zfs" {
            with(base("zfs", "ssh"), &key, Some("1"))
        } else {
            let mut d = base("btrfs", "ssh");
            let h = header(where_);
            if !d.iter().any(|(x, _)| *x == h) {
                d.push((h, vec![]));
            }
            with(d, &key, Some("1"))
        };
        let err = parse(&render(&doc)).expect_err(where_);
        assert!(err.contains(unknown), "{where_}: {err}");
        let mut got = expected_names(&err);
        if section.is_empty() {
            // The top level also holds the section tables.
            assert!(sections.is_subset(&got), "top level: {got:?}");
            got.retain(|n| !sections.contains(n));
        }
        assert_eq!(
            got, want,
            "[{where_}]: the parser's keys (left) differ from src/base/config_keys.rs (right)"
        );
    }
    // [hooks] holds only the two kinds of hook tables.
    let mut d = base("btrfs", "ssh");
    d.push((Some("[hooks]".into()), kv(&[(unknown, "1")])));
    let err = parse(&render(&d)).expect_err("[hooks]");
    assert_eq!(
        expected_names(&err),
        ["set", "volume"].iter().map(|s| s.to_string()).collect()
    );
    // A few near misses are refused too.
    for (section, name) in [
        ("", "Site"),
        ("volume", "snapshot-dir"),
        ("standby", "bw_limit"),
        ("replay", "commands"),
        ("stream", "enable"),
    ] {
        let key = Key {
            section,
            name,
            ..KEYS[0]
        };
        let doc = with(base("btrfs", "ssh"), &key, Some("\"x\""));
        let err = parse(&render(&doc)).expect_err(name);
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn every_key_parses_required_keys_are_required_and_defaults_are_the_parsers() {
    for key in KEYS {
        let id = format!("[{}] {}", key.section, key.name);
        let doc = base_for(key);
        let text = render(&sample_doc(key));
        parse(&text).unwrap_or_else(|e| panic!("{id} = {}: {e}\n{text}", key.sample));
        match key.default {
            DefaultValue::Required => {
                let text = render(&with(doc, key, None));
                let err = parse(&text).expect_err(&id);
                assert!(err.contains(key.name), "{id}: {err}");
            }
            DefaultValue::Toml(v) => {
                let absent = parse(&render(&with(doc.clone(), key, None)))
                    .unwrap_or_else(|e| panic!("{id} absent: {e}"));
                let given = parse(&render(&with(doc, key, Some(v))))
                    .unwrap_or_else(|e| panic!("{id} = {v}: {e}"));
                assert_eq!(
                    format!("{absent:?}"),
                    format!("{given:?}"),
                    "{id}: the documented default {v} is not what the parser does without the key"
                );
                // The check can fail: the sample is not the default.
                if key.sample != v {
                    let other = parse(&render(&sample_doc(key))).expect("sample parses");
                    assert_ne!(
                        format!("{absent:?}"),
                        format!("{other:?}"),
                        "{id}: the sample {} changes nothing the test can see",
                        key.sample
                    );
                }
            }
            DefaultValue::Unset | DefaultValue::Text(_) => {
                parse(&render(&with(doc, key, None)))
                    .unwrap_or_else(|e| panic!("{id} may be left out: {e}"));
            }
        }
    }
}

#[test]
fn the_committed_reference_and_man_page_are_what_generate_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("ref.md");
    let out = Command::new(env!("CARGO_BIN_EXE_snapsite"))
        .arg("generate")
        .arg("--config-reference")
        .arg(&md)
        .arg("--man")
        .arg(dir.path().join("man"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let generated = std::fs::read_to_string(&md).unwrap();
    let committed =
        std::fs::read_to_string(root.join("docs/configuration-reference.md")).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/configuration-reference.md is stale: run `cargo run -- generate --config-reference docs/configuration-reference.md`"
    );
    for key in KEYS {
        assert!(
            generated.contains(&format!("| `{}` |", key.name)),
            "{}",
            key.name
        );
    }
    let man = std::fs::read_to_string(dir.path().join("man/snapsite.toml.5")).unwrap();
    assert!(man.starts_with(".TH SNAPSITE.TOML 5"));
    // Rendered by man-db when it is installed: every key is on the page.
    if Path::new("/usr/bin/man").exists() {
        let out = Command::new("/usr/bin/man")
            .args(["-P", "cat", "-l"])
            .arg(dir.path().join("man/snapsite.toml.5"))
            .env("MANWIDTH", "200")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(!warnings.contains("warning"), "{warnings}");
        for key in KEYS {
            assert!(text.contains(key.name), "{}: not on the man page", key.name);
        }
    }
}
