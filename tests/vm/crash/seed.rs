//! Seeding cells: `ship --to DIR` (primary/seed.rs) stopped dead while it
//! writes the seed, or `serve --from SEED` (the standby's seed reader)
//! stopped dead in its receive or commit; each rerun. Then the standby
//! holds the seeded set committed, the network ship sends nothing of it
//! again, and the invariants of [`check_invariants`] hold.

use super::*;

pub(super) fn seed_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    s.write("mysql", "m0", 1, 256 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    let set = s.snapshot();
    let usb = s.dir.join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let usb = usb.to_str().unwrap().to_string();
    let write = ["ship", "--to", usb.as_str(), "--json"];
    let seed = Path::new(&usb).join(format!("{set}.seed"));
    let import = ["serve", "--from", seed.to_str().unwrap()];
    let before = snapshot_of_both(&s);
    if fp.starts_with("seed.") {
        crash(&s.a_cfg, &write, fp);
        assert!(
            !seed.join("index.json").exists(),
            "{fp}: a half-written seed has no index"
        );
    }
    let rep = snapsite_json(&s.a_cfg, &write);
    assert_eq!(rep["set_id"].as_str(), Some(set.as_str()), "{rep}");
    for e in std::fs::read_dir(&seed).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            n == "index.json" || n.starts_with("part-"),
            "{fp}: {n} in the seed"
        );
    }
    if !fp.starts_with("seed.") {
        crash(&s.b_cfg, &import, fp);
    }
    snapsite_ok(&s.b_cfg, &import);
    assert_eq!(
        manifests(&s.state('b')).into_keys().collect::<Vec<_>>(),
        [set],
        "{fp}: the seeded set is committed on B"
    );
    let rep = snapsite_json(&s.a_cfg, &["ship", "--json"]);
    assert!(
        rep["snapshots"].as_array().unwrap().is_empty(),
        "{fp}: the ship sent the seeded set again: {rep}"
    );
    check_invariants(&s, &before);
}
