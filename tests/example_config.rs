//! The annotated example config must stay valid.

#[test]
fn example_config_is_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/snapsite.toml");
    let cfg = snapsite::config::Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.volumes.len(), 4);
    assert_eq!(cfg.redolog().role, "redolog");
    assert!(cfg.standby.is_some() && cfg.replay.is_some());
}
