//! `snapsite init`: both sites' configs from the application's data
//! directories, asking nothing the machine can tell.
//!
//! For each volume (`ROLE=PATH`; the Zimbra defaults when none is given)
//! the mount table says which filesystem holds PATH, and so the backend and
//! its address: a btrfs subvolume (and a snapshot directory on the same
//! filesystem, outside every volume), a mounted ZFS dataset (and a replica
//! name under `<pool>/snapsite/`), or a thin LV (and a replica LV in the same
//! volume group). Anything else is refused with the reason. The two configs
//! written name each other in `[standby]` and both carry a `[replay]`, so
//! either site can be primary with no edit; both are validated by the same
//! parser `check` uses before anything is written, and an existing file is
//! never overwritten. The peer's config assumes the peer lays its volumes
//! out as this host does (the usual case for a standby built as a twin).

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::base::cmd::Cmd;
use crate::base::config::Config;
use crate::base::error::{Error, ErrorKind, Result};
use crate::base::mountinfo::{self, Mount};

/// Zimbra's data directories, in snapshot order (redolog last).
pub const ZIMBRA_DEFAULTS: &[(&str, &str)] = &[
    ("mysql", "/opt/zimbra/db/data"),
    ("blob", "/opt/zimbra/store"),
    ("index", "/opt/zimbra/index"),
    ("redolog", "/opt/zimbra/redolog"),
];

/// What `init` was asked.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// This site's name.
    pub site: String,
    /// The other site's host name (ssh) and site name.
    pub peer_host: String,
    pub peer_site: String,
    /// `ROLE=PATH` in snapshot order; empty: the Zimbra defaults.
    pub volumes: Vec<(String, PathBuf)>,
    /// The volume holding the application's redo log (snapshotted alone,
    /// last in a set).
    pub redolog: String,
    /// Where the two files go.
    pub out_dir: PathBuf,
    /// The installed binary (for `remote_command` and authorized_keys).
    pub exe: PathBuf,
    /// Where the plugins are installed.
    pub plugins: PathBuf,
    pub state_dir: PathBuf,
    pub identity: PathBuf,
}

/// One volume as detected.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub role: String,
    pub path: PathBuf,
    pub backend: &'static str,
    /// The `[[volume]]` keys after `role` and `backend`, as TOML lines.
    pub keys: Vec<(String, String)>,
    /// What was found, for the summary (`btrfs subvolume on /dev/loop3`).
    pub found: String,
}

/// What `init` wrote (or would write) and what is left to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub volumes: Vec<Detected>,
    pub here: (PathBuf, String),
    pub peer: (PathBuf, String),
    pub next_steps: Vec<String>,
}

fn refuse(msg: String) -> Error {
    Error::new(ErrorKind::Refused, msg)
}

/// The mount holding `path`: the one with the longest mount point that is a
/// prefix of it (the last such one when several are stacked).
fn holding<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
}

/// Detect one volume from the mount table; `lvs` resolves an LVM device.
pub fn detect(role: &str, path: &Path, mounts: &[Mount]) -> Result<Detected> {
    crate::base::model::validate_role(role).map_err(|e| refuse(format!("volume `{role}`: {e}")))?;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("volume `{role}`: {}", path.display()), e))?;
    if !meta.is_dir() {
        return Err(refuse(format!(
            "volume `{role}`: {} is not a directory",
            path.display()
        )));
    }
    let path = path
        .canonicalize()
        .map_err(|e| Error::io(format!("volume `{role}`: {}", path.display()), e))?;
    let m = holding(mounts, &path).ok_or_else(|| {
        refuse(format!(
            "volume `{role}`: no mount holds {} (is /proc mounted?)",
            path.display()
        ))
    })?;
    let s = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    match m.fstype.as_str() {
        "btrfs" => {
            // A subvolume's root directory has inode 256 on btrfs.
            if meta.ino() != 256 {
                return Err(refuse(format!(
                    "volume `{role}`: {} is a directory inside a btrfs subvolume, not a subvolume of its own: \
                     move its data into one (`btrfs subvolume create`) so it can be snapshotted alone",
                    path.display()
                )));
            }
            let snapshot_dir = btrfs_snapshot_dir(role, &path, m, mounts)?;
            Ok(Detected {
                role: role.into(),
                path: path.clone(),
                backend: "btrfs",
                keys: vec![
                    ("source".into(), s(&path.to_string_lossy())),
                    ("snapshot_dir".into(), s(&snapshot_dir.to_string_lossy())),
                ],
                found: format!("btrfs subvolume on {}", m.source),
            })
        }
        "zfs" => {
            if m.mount_point != path {
                return Err(refuse(format!(
                    "volume `{role}`: {} is a directory inside ZFS dataset `{}`, not a dataset of its own: \
                     `zfs create` one for it so it can be snapshotted alone",
                    path.display(),
                    m.source
                )));
            }
            let dataset = m.source.clone();
            let pool = dataset.split('/').next().unwrap_or(&dataset).to_string();
            let replica = format!("{pool}/snapsite/{role}");
            Ok(Detected {
                role: role.into(),
                path: path.clone(),
                backend: "zfs",
                keys: vec![
                    ("source".into(), s(&dataset)),
                    ("replica".into(), s(&replica)),
                    ("mountpoint".into(), s(&path.to_string_lossy())),
                ],
                found: format!("ZFS dataset {dataset}"),
            })
        }
        "ext4" | "xfs" | "ext3" | "ext2" if m.source.starts_with("/dev/") => {
            let (vg, lv) = lvm_of(role, &m.source).map_err(|e| {
                refuse(format!(
                    "volume `{role}`: {} is on {} ({}), which has no snapshots snapsite can ship \
                     ({}): put it on btrfs, a ZFS dataset or an LVM thin LV",
                    path.display(),
                    m.source,
                    m.fstype,
                    e.message
                ))
            })?;
            if m.mount_point != path {
                return Err(refuse(format!(
                    "volume `{role}`: {} is a directory inside LV {vg}/{lv}, not a volume of its own: \
                     give it a thin LV of its own so it can be snapshotted alone",
                    path.display()
                )));
            }
            Ok(Detected {
                role: role.into(),
                path: path.clone(),
                backend: "lvm",
                keys: vec![
                    ("source".into(), s(&format!("{vg}/{lv}"))),
                    ("replica".into(), s(&format!("{vg}/snapsite-{role}"))),
                    ("mountpoint".into(), s(&path.to_string_lossy())),
                ],
                found: format!("LVM thin LV {vg}/{lv} ({})", m.fstype),
            })
        }
        other => Err(refuse(format!(
            "volume `{role}`: {} is on {} ({other}), which has no snapshots snapsite can ship: \
             put it on btrfs, a ZFS dataset or an LVM thin LV",
            path.display(),
            m.source
        ))),
    }
}

/// A snapshot directory on the same btrfs filesystem, outside the volume:
/// `<mount>/.snapsite/<role>` when the subvolume is below the mount, else
/// below another mount of the same filesystem that is not inside it.
fn btrfs_snapshot_dir(role: &str, path: &Path, m: &Mount, mounts: &[Mount]) -> Result<PathBuf> {
    if m.mount_point != path {
        return Ok(m.mount_point.join(".snapsite").join(role));
    }
    let other = mounts
        .iter()
        .filter(|o| o.fstype == "btrfs" && o.source == m.source)
        .filter(|o| !o.mount_point.starts_with(path))
        .min_by_key(|o| o.mount_point.as_os_str().len());
    match other {
        Some(o) => Ok(o.mount_point.join(".snapsite").join(role)),
        None => Err(refuse(format!(
            "volume `{role}`: {} is a subvolume mounted on its own and no other mount of {} exists for \
             its snapshots: mount the filesystem's top level (`mount -o subvolid=5 {} /srv/.btrfs-top`) \
             and run init again",
            path.display(),
            m.source,
            m.source
        ))),
    }
}

/// `vg`, `lv` of a device, asked of `lvs`; a thin LV or refused.
fn lvm_of(role: &str, dev: &str) -> Result<(String, String)> {
    let out = Cmd::new("lvs")
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .args([
            "--noheadings",
            "--separator",
            "|",
            "-o",
            "vg_name,lv_name,segtype",
            dev,
        ])
        .output()
        .map_err(|_| refuse(format!("{dev} is not an LVM logical volume")))?;
    parse_lvs(role, dev, &out)
}

/// Parse `lvs --noheadings --separator '|' -o vg_name,lv_name,segtype DEV`.
pub fn parse_lvs(role: &str, dev: &str, out: &str) -> Result<(String, String)> {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| {
            refuse(format!(
                "volume `{role}`: {dev} is not an LVM logical volume"
            ))
        })?;
    let f: Vec<&str> = line.split('|').map(str::trim).collect();
    if f.len() != 3 {
        return Err(refuse(format!(
            "volume `{role}`: unexpected `lvs` output for {dev}: {line}"
        )));
    }
    if f[2] != "thin" {
        return Err(refuse(format!(
            "volume `{role}`: {dev} is the {} LV {}/{}, not a thin LV: snapsite ships thin LVs \
             incrementally (a classic LV would go as a full image every time)",
            f[2], f[0], f[1]
        )));
    }
    Ok((f[0].to_string(), f[1].to_string()))
}

/// One site's config text.
fn render(opts: &InitOptions, vols: &[Detected], site: &str, peer_host: &str) -> String {
    let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# snapsite config for site `{site}`, written by `snapsite init`.\n\
         # Its pair (the other site's) names this site in [standby]; both carry\n\
         # [replay], so either site can be the primary with no edit.\n\
         # Every key: `man snapsite.toml` or /usr/share/doc/snapsite/docs/configuration-reference.md.\n"
    );
    let _ = writeln!(o, "site = {}", q(site));
    let _ = writeln!(o, "state_dir = {}\n", q(&opts.state_dir.to_string_lossy()));
    for v in vols {
        let _ = writeln!(o, "# {} ({})", v.path.display(), v.found);
        let _ = writeln!(
            o,
            "[[volume]]\nrole = {}\nbackend = {}",
            q(&v.role),
            q(v.backend)
        );
        for (k, val) in &v.keys {
            let _ = writeln!(o, "{k} = {val}");
        }
        o.push('\n');
    }
    let order: Vec<String> = vols.iter().map(|v| q(&v.role)).collect();
    let _ = writeln!(
        o,
        "[set]\norder = [{}]\nredolog = {}\nsafety_margin = \"5s\"\n",
        order.join(", "),
        q(&opts.redolog)
    );
    let exe = opts.exe.to_string_lossy();
    let _ = writeln!(
        o,
        "# Where this site ships while it is the primary: the other site.\n\
         [standby]\ntransport = \"ssh\"\nhost = {}\nuser = \"root\"\nidentity = {}\n\
         ssh_options = [\"StrictHostKeyChecking=yes\"]\nremote_command = [{}, \"serve\", \"--stdio\"]\n\
         compress = \"zstd:3\"\n",
        q(peer_host),
        q(&opts.identity.to_string_lossy()),
        q(&exe)
    );
    let _ = writeln!(
        o,
        "[schedule]\nfull_set_interval = \"1h\"\nredolog_interval = \"15m\"\n\n\
         [retention]\ngrid = \"1x1h(keep=all) | 24x1h | 30x1d | 11x30d\"\n\
         redolog_grid = \"1x1h(keep=all) | 6x1h\"\nkeep_min_age = \"7d\"\n"
    );
    let zimbra = vols.len() == ZIMBRA_DEFAULTS.len()
        && vols
            .iter()
            .zip(ZIMBRA_DEFAULTS)
            .all(|(v, (r, p))| v.role == *r && v.path == Path::new(p));
    let plugins = opts.plugins.to_string_lossy();
    if zimbra {
        let _ = writeln!(
            o,
            "# Failover (and rehearse) run this once the copies are mounted.\n\
             [replay]\ncommand = [{}, \"--fromTime\", \"{{from_time}}\", \"--redolog\", \"{{mount:redolog}}\"]",
            q(&format!("{plugins}/zimbra/replay"))
        );
    } else {
        let mut argv = vec![
            q(&format!("{plugins}/generic/replay")),
            q("--from-time"),
            q("{from_time_utc}"),
        ];
        for v in vols {
            argv.push(q("--volume"));
            argv.push(q(&format!("{{mount:{}}}", v.role)));
        }
        let _ = writeln!(
            o,
            "# Failover (and rehearse) run this once the copies are mounted. It checks the\n\
             # copies and replays nothing: add your application's recovery command after\n\
             # \"--\" and `--start UNIT` to start it (plugins/README.md).\n\
             [replay]\ncommand = [{}]\ntime_format = \"rfc3339\"",
            argv.join(", ")
        );
    }
    o
}

/// Detect, render, validate and (unless `dry_run`) write both configs.
pub fn init(opts: &InitOptions, dry_run: bool) -> Result<Plan> {
    init_with(opts, &mountinfo::read(), dry_run)
}

pub fn init_with(opts: &InitOptions, mounts: &[Mount], dry_run: bool) -> Result<Plan> {
    if opts.site == opts.peer_site {
        return Err(refuse(format!(
            "both sites are named `{}`: give the other one its own name (--peer-site)",
            opts.site
        )));
    }
    let wanted: Vec<(String, PathBuf)> = if opts.volumes.is_empty() {
        ZIMBRA_DEFAULTS
            .iter()
            .map(|(r, p)| (r.to_string(), PathBuf::from(p)))
            .collect()
    } else {
        opts.volumes.clone()
    };
    if !wanted.iter().any(|(r, _)| *r == opts.redolog) {
        return Err(refuse(format!(
            "no volume is the redo log `{}`: name it with --volume {}=PATH, or say which volume \
             holds the application's redo log with --redolog ROLE",
            opts.redolog, opts.redolog
        )));
    }
    let mut vols = Vec::new();
    for (role, path) in &wanted {
        if vols.iter().any(|v: &Detected| v.role == *role) {
            return Err(refuse(format!("volume `{role}` is given twice")));
        }
        vols.push(detect(role, path, mounts)?);
    }
    // The redo log goes last in a set (plugins/README.md).
    let at = vols.iter().position(|v| v.role == opts.redolog).unwrap();
    let r = vols.remove(at);
    vols.push(r);
    for (i, a) in vols.iter().enumerate() {
        for b in &vols[i + 1..] {
            if a.path.starts_with(&b.path) || b.path.starts_with(&a.path) {
                return Err(refuse(format!(
                    "volumes `{}` ({}) and `{}` ({}) overlap",
                    a.role,
                    a.path.display(),
                    b.role,
                    b.path.display()
                )));
            }
        }
    }
    let here_text = render(opts, &vols, &opts.site, &opts.peer_host);
    let peer_text = render(opts, &vols, &opts.peer_site, &this_host_guess(&opts.site));
    let here_path = opts.out_dir.join(format!("{}.toml", opts.site));
    let peer_path = opts.out_dir.join(format!("{}.toml", opts.peer_site));
    for (p, t) in [(&here_path, &here_text), (&peer_path, &peer_text)] {
        Config::parse(t, p).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "the config init wrote for {} does not validate: {e}",
                    p.display()
                ),
            )
        })?;
        if p.symlink_metadata().is_ok() {
            return Err(refuse(format!(
                "{} exists: init never overwrites a config (move it away, or --out DIR)",
                p.display()
            )));
        }
    }
    let exe = opts.exe.display();
    // ZFS replicas land under `<pool>/snapsite`, which a receive does not
    // create: the standby makes it once (unmounted: replicas are not live).
    let mut zfs_parents: Vec<String> = Vec::new();
    for v in vols.iter().filter(|v| v.backend == "zfs") {
        if let Some((_, r)) = v.keys.iter().find(|(k, _)| k == "replica") {
            let r = r.trim_matches('"');
            if let Some((parent, _)) = r.rsplit_once('/') {
                if !zfs_parents.iter().any(|p| p == parent) {
                    zfs_parents.push(parent.to_string());
                }
            }
        }
    }
    let mut next_steps = vec![
        format!(
            "here: mv {} /etc/snapsite/snapsite.toml; copy {} to the other host as \
             /etc/snapsite/snapsite.toml (with your own admin access: the keys below only run `serve`)",
            here_path.display(),
            peer_path.display()
        ),
        format!(
            "on both hosts: ssh-keygen -t ed25519 -N '' -f {}",
            opts.identity.display()
        ),
        format!(
            "on each host, append the OTHER host's {}.pub to /root/.ssh/authorized_keys as\n      \
             from=\"<other host's address>\",restrict,command=\"{exe} serve --stdio\" ssh-ed25519 AAAA... snapsite@<other site>",
            opts.identity.display()
        ),
        "on both hosts: ssh-keyscan <other host> >> /root/.ssh/known_hosts".to_string(),
        format!(
            "here: snapsite role --init primary; on {}: snapsite role --init standby",
            opts.peer_site
        ),
        "on both: snapsite check; then here: snapsite snapshot && snapsite ship".to_string(),
    ];
    for parent in zfs_parents {
        next_steps.insert(
            next_steps.len() - 1,
            format!("on the other host, once: zfs create -p -o mountpoint=none {parent}"),
        );
    }
    if !dry_run {
        std::fs::create_dir_all(&opts.out_dir)
            .map_err(|e| Error::io(format!("create {}", opts.out_dir.display()), e))?;
        for (p, t) in [(&here_path, &here_text), (&peer_path, &peer_text)] {
            write_new(p, t.as_bytes())?;
        }
    }
    Ok(Plan {
        volumes: vols,
        here: (here_path, here_text),
        peer: (peer_path, peer_text),
        next_steps,
    })
}

/// This host's name for the peer's `[standby] host`: the kernel's host
/// name (the admin checks it against DNS; `check` on the peer tries it).
fn this_host_guess(site: &str) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
        })
        .unwrap_or_else(|| site.to_string())
}

/// Create `p` exclusively (never over an existing file), write, fsync.
fn write_new(p: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", p.display()), e))
}

/// The human summary `init` prints.
pub fn render_plan(p: &Plan, dry_run: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "volumes found:");
    for v in &p.volumes {
        let _ = writeln!(o, "  {:<10} {:<28} {}", v.role, v.path.display(), v.found);
    }
    let verb = if dry_run { "would write" } else { "wrote" };
    let _ = writeln!(o, "{verb} {} (this site)", p.here.0.display());
    let _ = writeln!(o, "{verb} {} (the other site)", p.peer.0.display());
    let _ = writeln!(o, "next:");
    for (i, s) in p.next_steps.iter().enumerate() {
        let _ = writeln!(o, "  {}. {s}", i + 1);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvs_output_is_parsed_and_only_thin_lvs_pass() {
        assert_eq!(
            parse_lvs("blob", "/dev/mapper/vg-blob", "  vg|blob|thin\n").unwrap(),
            ("vg".to_string(), "blob".to_string())
        );
        let e = parse_lvs("blob", "/dev/sda1", "  vg|blob|linear\n").unwrap_err();
        assert!(e.message.contains("not a thin LV"), "{}", e.message);
        assert!(parse_lvs("blob", "/dev/sda1", "\n").is_err());
        assert!(parse_lvs("blob", "/dev/sda1", "vg|blob\n").is_err());
    }

    #[test]
    fn the_mount_holding_a_path_is_the_longest_prefix() {
        let ms = mountinfo::parse(
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
             40 22 0:40 / /srv rw - btrfs /dev/loop3 rw\n\
             41 40 0:41 / /srv/mail rw - zfs tank/mail rw\n",
        );
        assert_eq!(
            holding(&ms, Path::new("/srv/mail/x")).unwrap().source,
            "tank/mail"
        );
        assert_eq!(
            holding(&ms, Path::new("/srv/other")).unwrap().source,
            "/dev/loop3"
        );
        assert_eq!(holding(&ms, Path::new("/etc")).unwrap().source, "/dev/sda1");
    }
}
