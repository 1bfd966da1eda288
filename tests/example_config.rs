//! The annotated example config must stay valid.

#[test]
fn example_config_is_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/snapsite.toml");
    let cfg = snapsite::base::config::Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.volumes.len(), 4);
    assert_eq!(cfg.redolog().role, "redolog");
    assert!(cfg.standby.is_some() && cfg.replay.is_some());
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
