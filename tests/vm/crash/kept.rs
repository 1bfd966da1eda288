//! After a failback that ran through (`failback:zfs.completed`), and in
//! its reboot variant after an ordinary reboot of A: the divergent data A
//! kept is findable and nothing is lost. `snapsite role` names the kept
//! dataset of each volume; mounted (no reboot) it says where; unmounted
//! (after the reboot: `canmount=noauto`, mountpoint under /run) it says so
//! and gives the command that mounts it read-only, which the test runs
//! and then reads A's last, never shipped write back.

use super::*;

pub(super) fn after_completed_failback(s: &Sites, label: &str) {
    reboot::after_crash(&s.a_cfg);
    let v = snapsite_json(&s.a_cfg, &["role", "--json"]);
    let kept = v["divergent"]
        .as_array()
        .expect("role lists divergent data");
    assert_eq!(kept.len(), ROLES.len(), "{v}");
    for k in kept {
        assert_eq!(k["label"].as_str(), Some(label), "{v}");
        let role = k["role"].as_str().unwrap();
        let at = k["at"].as_str().unwrap();
        assert_eq!(at, format!("{}/{role}-divergent-{label}", s.a_name), "{v}");
        let mounted = k["mounted"].as_bool().unwrap();
        assert_eq!(mounted, !reboot::on(), "{v}");
        assert_eq!(zfs_get("mounted", at) == "yes", mounted, "{at}");
        if !mounted {
            let cmd: Vec<&str> = k["mount_command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert_eq!(cmd, ["zfs", "mount", at], "{v}");
            let text = snapsite_ok(&s.a_cfg, &["role"]);
            assert!(
                text.contains(&format!("`zfs mount {at}`")),
                "role names the command: {text}"
            );
            sh(&cmd);
        }
        assert_eq!(zfs_get("readonly", at), "on", "{at}");
        let mp = PathBuf::from(k["mountpoint"].as_str().unwrap());
        assert_eq!(zfs_get("mountpoint", at), mp.display().to_string());
        if role == "mysql" {
            // A's write after the common set, never shipped: kept.
            assert_eq!(
                std::fs::read(mp.join("a-late")).unwrap(),
                pattern(3, 128 << 10),
                "{at}: A's last write"
            );
        }
    }
}
