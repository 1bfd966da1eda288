//! set -> ship -> failover with the ssh transport: a real OpenSSH server in
//! a network namespace ("standby site") reached from another namespace
//! ("primary site") over a veth pair. The standby's key pins the command
//! with an authorized_keys forced command, as a production setup would.

mod common;

use common::sshlab::{SshLab, sshd_prerequisites};
use common::*;

#[test]
fn set_ship_failover_over_ssh_between_namespaces() {
    require_real!();
    if skip_because("ssh", sshd_prerequisites()) {
        return;
    }
    let lab = Lab::new("[\"/bin/echo\", \"zmplayredo\", \"--fromTime\", \"{from_time}\"]");
    let forced = format!(
        "{} serve --stdio --config {}",
        snapsite_exe(),
        lab.stb_cfg.display()
    );
    let site = SshLab::new(lab.dir.path(), "t", 231, &forced, &[]);
    let cfg = lab.primary_variant(
        "primary-ssh",
        &site.standby(
            "id",
            "known_hosts",
            &["StrictHostKeyChecking=accept-new", "ConnectTimeout=10"],
        ),
    );

    lab.fill(0, 3 << 20);
    let full = lab.snapshot(false);
    write_file(
        &lab.live("redolog").join("more"),
        &random_bytes(77, 1 << 20),
    );
    let redo = lab.snapshot(true);

    let out = site.run_on_primary(&cfg, &["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check over ssh failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("standby `standby`"), "{text}");

    let out = site.run_on_primary(&cfg, &["ship", "--json"]);
    assert!(
        out.status.success(),
        "ship over ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"].as_array().unwrap().len(), 2);
    assert!(
        report["standby"].as_str().unwrap().starts_with("ssh "),
        "{report}"
    );
    assert!(report["payload_bytes"].as_u64().unwrap() > 13 << 20);

    let id = full["id"].as_str().unwrap();
    for r in ROLES {
        lab.assert_received_same(r, id);
    }
    let rep: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["failover", "--json"])).unwrap();
    assert_eq!(rep["plan"]["set_id"], full["id"]);
    assert_eq!(rep["plan"]["redolog_set_id"], redo["id"]);
    assert_eq!(rep["replay"]["exit_code"], 0);
    assert!(lab.standby_live("redolog").join("more").exists());
}

#[test]
fn standby_refuses_volumes_it_does_not_know() {
    require_real!();
    // The standby's config names other roles than the primary's: ship
    // refuses before sending anything (the standby's own refusal of an
    // unknown volume, for a primary that skips this check, is in
    // tests/hostile.rs), and no set is committed.
    let lab = Lab::new("[\"/bin/true\"]");
    let stb = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    // Rename the standby's `index` volume to `search`.
    std::fs::write(
        &lab.stb_cfg,
        stb.replacen("role = \"index\"", "role = \"search\"", 1),
    )
    .unwrap();
    lab.snapshot(false);
    let out = lab.run(&lab.pri_cfg, &["ship"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the volumes differ"), "{err}");
    assert!(err.contains("`index`") && err.contains("`search`"), "{err}");
    assert!(lab.standby_manifests().is_empty());
    assert!(lab.standby_recv_entries().is_empty(), "nothing was sent");
}
