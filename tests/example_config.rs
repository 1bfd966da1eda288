//! The paired example configs must stay valid, and stay a pair.

fn load(name: &str) -> (snapsite::base::config::Config, String) {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let text = std::fs::read_to_string(&p).unwrap();
    let cfg = snapsite::base::config::Config::load(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
    (cfg, text)
}

#[test]
fn example_configs_are_valid_and_name_each_other() {
    let (a, a_text) = load("examples/primary.toml");
    let (b, b_text) = load("examples/standby.toml");
    for (cfg, name) in [(&a, "primary.toml"), (&b, "standby.toml")] {
        assert_eq!(cfg.volumes.len(), 4, "{name}");
        assert_eq!(cfg.redolog().role, "redolog", "{name}");
        // Each site can be either role: both ship somewhere and both replay.
        assert!(cfg.standby.is_some(), "{name}: no [standby]");
        assert!(cfg.replay.is_some(), "{name}: no [replay]");
        assert!(cfg.schedule.is_some(), "{name}: no [schedule]");
    }
    assert_ne!(a.site, b.site);
    // Each names the other as its ssh peer.
    assert!(a_text.contains(&format!("host = \"{}.example.org\"", b.site)));
    assert!(b_text.contains(&format!("host = \"{}.example.org\"", a.site)));
    // The paths are the .deb's (tests/package.rs checks them against it).
    for t in [&a_text, &b_text] {
        assert!(!t.contains("/usr/local/"), "examples name /usr/local paths");
    }
}

/// The configs in the Vagrant failover drill must stay valid too.
#[test]
fn vagrant_readme_configs_are_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vagrant/README.md");
    let text = std::fs::read_to_string(&p).unwrap();
    let blocks: Vec<&str> = text
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "primary and standby configs");
    for b in blocks {
        snapsite::base::config::Config::parse(b, &p).unwrap_or_else(|e| panic!("{e}\n{b}"));
    }
}
