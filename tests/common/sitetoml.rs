//! A site's config text with a btrfs volume per role under one directory
//! (nothing there needs to exist until a command touches storage). Shared
//! by the host tests (`common::sitetoml`: `common::standby_config`, the
//! in-process standby of `common::memsite`) and examples/perfguard.rs,
//! which includes this file.

use std::path::Path;

/// The config text of site `name`: its state in `dir/state`, one btrfs
/// volume per role of `roles`: source `dir/live/ROLE`, snapshots in
/// `dir/SNAPS/ROLE`, and with `mounts` a mountpoint `dir/MOUNTS/ROLE`.
pub fn volumes_toml(
    name: &str,
    dir: &Path,
    roles: &[&str],
    snaps: &str,
    mounts: Option<&str>,
) -> String {
    let d = dir.display();
    let mut text = format!("site = \"{name}\"\nstate_dir = \"{d}/state\"\n");
    for r in roles {
        text.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"{d}/live/{r}\"\nsnapshot_dir = \"{d}/{snaps}/{r}\"\n"
        ));
        if let Some(m) = mounts {
            text.push_str(&format!("mountpoint = \"{d}/{m}/{r}\"\n"));
        }
    }
    text
}
