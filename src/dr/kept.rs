//! Where the divergent data a demote kept is (`snapsite role` shows it).
//!
//! A failback or switchover keeps this site's data written after the
//! common base read-only (dr/failback.rs, `DivergentRecord`). On ZFS the
//! kept dataset is mounted read-only under /run/snapsite/divergent with
//! `canmount=noauto`: a boot never mounts it (it must not shadow anything,
//! and /run is empty after a reboot), so after an ordinary reboot the copy
//! is kept but not mounted. Nothing is lost: `role` names the dataset,
//! says it is not mounted and gives the command that mounts it
//! (`zfs mount DATASET`, read-only, at the same place); a failback or
//! switchover rerun mounts it again by itself. On btrfs the kept data is a
//! read-only snapshot in the volume's snapshot directory (always reachable);
//! on LVM a read-only LV (never mounted: `lvchange -ay -K` and
//! `mount -o ro` reach it).

use serde::Serialize;

use crate::backend::Stores;
use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::Result;

/// One volume's kept divergent data.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Kept {
    /// The demote's label (`divergent-<label>` in `snapsite sets`).
    pub label: String,
    pub role: String,
    /// The dataset, subvolume or LV (the record's value).
    pub at: String,
    /// ZFS: whether it is mounted now; `None` where the backend does not
    /// mount divergent data, or the volume left the config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    /// The command (argv) that mounts it read-only, when it is not mounted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_command: Option<Vec<String>>,
}

/// Every volume's kept divergent data on this site, oldest record first.
pub fn kept(cfg: &Config, catalog: &Catalog) -> Result<Vec<Kept>> {
    let records = crate::dr::failback::divergent_records(catalog)?;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let stores = Stores::open(cfg);
    let mut out = Vec::new();
    for d in records {
        for (role, at) in &d.snapshots {
            // A volume gone from the config: the record still names it.
            let mount = match stores.get(role) {
                Ok(s) => s.divergent_mount(at)?,
                Err(_) => None,
            };
            let (mounted, mountpoint) = match mount {
                Some((m, p)) => (Some(m), Some(p)),
                None => (None, None),
            };
            let mount_command = (mounted == Some(false))
                .then(|| vec!["zfs".to_string(), "mount".to_string(), at.clone()]);
            out.push(Kept {
                label: d.label.clone(),
                role: role.clone(),
                at: at.clone(),
                mounted,
                mountpoint,
                mount_command,
            });
        }
    }
    Ok(out)
}

/// One line for `snapsite role`.
pub fn render(k: &Kept) -> String {
    let place = match (k.mounted, &k.mountpoint, &k.mount_command) {
        (Some(true), Some(mp), _) => format!(", mounted read-only at {mp}"),
        (Some(false), mp, Some(cmd)) => format!(
            ", not mounted (a reboot unmounts it; nothing is lost): `{}` mounts it read-only{}",
            cmd.join(" "),
            mp.as_ref().map(|m| format!(" at {m}")).unwrap_or_default()
        ),
        _ => String::new(),
    };
    format!(
        "divergent data kept (divergent-{}) volume {}: {}{place}",
        k.label, k.role, k.at
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(mounted: Option<bool>) -> Kept {
        Kept {
            label: "g1-x".into(),
            role: "mysql".into(),
            at: "tank/mysql-divergent-g1-x".into(),
            mounted,
            mountpoint: mounted.map(|_| "/run/snapsite/divergent/tank_mysql".into()),
            mount_command: (mounted == Some(false)).then(|| {
                ["zfs", "mount", "tank/mysql-divergent-g1-x"]
                    .map(String::from)
                    .to_vec()
            }),
        }
    }

    #[test]
    fn role_says_where_the_kept_data_is_and_how_to_mount_it() {
        let up = render(&kept(Some(true)));
        assert!(
            up.ends_with("mounted read-only at /run/snapsite/divergent/tank_mysql"),
            "{up}"
        );
        let down = render(&kept(Some(false)));
        assert!(
            down.contains("not mounted") && down.contains("`zfs mount tank/mysql-divergent-g1-x`"),
            "{down}"
        );
        let lv = render(&kept(None));
        assert!(
            lv.ends_with("volume mysql: tank/mysql-divergent-g1-x"),
            "{lv}"
        );
    }
}
