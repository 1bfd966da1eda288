//! What `init`'s end-to-end tests (tests/init.rs on btrfs, tests/vm/init.rs
//! on ZFS and LVM thin, which includes this file by path) do with the two
//! configs `init` wrote: reach the standby locally, then check and ship.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::output::{success, text};

/// The arguments of `snapsite init` for site mail-a, peer mail-b, writing
/// to `dir/out` with state in `dir/state`, the repository's plugins, and
/// each role's live path from `live`, then `extra`.
pub fn init_args(dir: &Path, live: &dyn Fn(&str) -> PathBuf, extra: &[&str]) -> Vec<String> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let mut args: Vec<String> = ["init", "--site", "mail-a", "--peer", "mail-b.example.org"]
        .map(String::from)
        .into();
    for (flag, path) in [
        ("--out", dir.join("out")),
        ("--state-dir", dir.join("state")),
        ("--plugins", plugins),
    ] {
        args.push(flag.into());
        args.push(path.to_str().expect("utf-8 path").into());
    }
    for r in ["mysql", "blob", "index", "redolog"] {
        args.push("--volume".into());
        args.push(format!("{r}={}", live(r).display()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// mail-a's config `a_text` with its `[standby]` section (up to
/// `[schedule]`) replaced by a command transport that runs `wrapper`
/// (entering mail-b's namespace) instead of ssh to mail-b's address.
pub fn with_command_standby(a_text: &str, wrapper: &Path) -> String {
    let start = a_text.find("\n[standby]\n").expect("[standby]") + 1;
    let end = a_text.find("\n[schedule]\n").expect("[schedule]") + 1;
    format!(
        "{}[standby]\ntransport = \"command\"\ncommand = [\"unshare\", \"--mount\", \"--propagation\", \"private\", \"sh\", \"{}\", \"serve\", \"--stdio\"]\n\n{}",
        &a_text[..start],
        wrapper.display(),
        &a_text[end..]
    )
}

/// `check` passes on both sites, mail-a snapshots and ships, and mail-b
/// then holds exactly one complete set. `primary` and `standby` run
/// snapsite with that site's config.
pub fn assert_checks_and_ships(
    primary: &dyn Fn(&[&str]) -> Output,
    standby: &dyn Fn(&[&str]) -> Output,
) {
    let o = standby(&["check"]);
    assert!(o.status.success(), "check on mail-b: {}", text(&o));
    let o = primary(&["check"]);
    assert!(o.status.success(), "check on mail-a: {}", text(&o));
    success("snapshot", &primary(&["snapshot"]));
    success("ship", &primary(&["ship"]));
    let sets: serde_json::Value =
        serde_json::from_str(&success("sets on mail-b", &standby(&["sets", "--json"]))).unwrap();
    let complete = sets
        .as_array()
        .map(|a| a.iter().filter(|s| s["complete"] == true).count())
        .unwrap_or(0);
    assert_eq!(complete, 1, "{sets:#}");
}
