//! Nothing privileged from the wire, on real btrfs (issue 24, item 1): a
//! send stream carrying a set-uid-root binary, a set-gid file or a device
//! node is refused at receive, with an error naming the file, and nothing
//! of it stays. The positive control first: with the volume's opt-out
//! (`allow_privileged_files = true`) the same stream arrives and the
//! unprivileged user `nobody` gets euid 0 from the received binary and
//! writes through the received device node — the hazard the check removes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::memsite::{begin, end, handshake};
use common::*;
use snapsite::base::config::Config;
use snapsite::base::model::{SetKind, new_set_id};
use snapsite::wire::stream::{Msg, Reader, Writer};

/// A standby config with one btrfs volume `blob` on `fs`.
fn standby(dir: &Path, fs: &BtrfsFs, allow: bool) -> Config {
    let text = format!(
        "site = \"standby\"\nstate_dir = \"{}\"\n[set]\nredolog = \"blob\"\n[[volume]]\nrole = \"blob\"\nbackend = \"btrfs\"\nsource = \"{}\"\nsnapshot_dir = \"{}\"\nallow_privileged_files = {allow}\n",
        dir.join(format!("state-{allow}")).display(),
        fs.path(&format!("live-{allow}")).display(),
        fs.path(&format!("recv-{allow}")).display(),
    );
    Config::parse(&text, &dir.join("standby.toml")).unwrap()
}

/// A read-only snapshot `id` of a subvolume filled by `fill`, and its send stream.
fn snapshot_stream(fs: &BtrfsFs, id: &str, fill: &dyn Fn(&Path)) -> (Vec<u8>, String) {
    snapshot_stream_with(fs, id, fill, &[])
}

fn snapshot_stream_with(
    fs: &BtrfsFs,
    id: &str,
    fill: &dyn Fn(&Path),
    send_args: &[&str],
) -> (Vec<u8>, String) {
    let src = fs.subvolume(&format!("src-{id}"));
    fill(&src);
    std::fs::create_dir_all(fs.path("snaps")).unwrap();
    let snap = fs.path("snaps").join(id);
    snapshot_readonly(&src, &snap);
    let uuid = show_field(&subvolume_show(&snap), "UUID");
    assert!(!uuid.is_empty(), "no UUID for {}", snap.display());
    (btrfs_send(&snap, send_args), uuid)
}

/// One snapshot through `serve` (real btrfs backend): the ack or nack.
fn receive(cfg: &Config, id: &str, stream: &[u8], uuid: &str) -> Msg {
    let (client, server) = UnixStream::pair().unwrap();
    let c = cfg.clone();
    let serve = std::thread::spawn(move || {
        snapsite::standby::serve::serve(&c, server.try_clone().unwrap(), server)
    });
    let mut w = Writer::new(client.try_clone().unwrap());
    let mut r = Reader::new(client);
    let welcome = handshake(&mut w, &mut r, "primary");
    assert!(matches!(welcome, Msg::Welcome { .. }), "{welcome:?}");
    w.msg(&begin(id, "blob", Some(uuid))).unwrap();
    for c in stream.chunks(64 * 1024) {
        w.data(c).unwrap();
    }
    w.msg(&end(stream)).unwrap();
    let reply = r.msg().unwrap();
    w.msg(&Msg::Bye).unwrap();
    serve.join().unwrap().unwrap();
    reply
}

/// Run `argv` as `nobody` (no groups): (exit ok, stdout, stderr).
fn as_nobody(argv: &[&str]) -> (bool, String, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .args(argv)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn setuid_id(src: &Path) {
    std::fs::create_dir(src.join("bin")).unwrap();
    let id = src.join("bin/id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    write_file(&src.join("mail.txt"), b"an ordinary file\n");
}

fn device(src: &Path) {
    // /dev/null's numbers, writable by anyone.
    let p = src.join("null");
    nix::sys::stat::mknod(
        &p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
}

fn setgid(src: &Path) {
    let p = src.join("g");
    std::fs::copy("/usr/bin/id", &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o2755)).unwrap();
}

fn received(cfg: &Config, id: &str) -> PathBuf {
    let snapsite::base::config::VolumeAddr::Btrfs { snapshot_dir, .. } = &cfg.volumes[0].addr
    else {
        unreachable!()
    };
    snapshot_dir.join(id).join(id)
}

#[test]
fn set_uid_files_and_device_nodes_from_the_wire_are_refused() {
    require_real!();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    // `nobody` must be able to reach the received files.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fs = BtrfsFs::new(dir.path(), "fs", "300M");
    std::fs::set_permissions(&fs.mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t0 = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let id = |n: i64| new_set_id(t0 + jiff::SignedDuration::from_secs(n), SetKind::Full);
    let (suid_id, dev_id, sgid_id) = (id(1), id(2), id(3));
    let (suid, suid_uuid) = snapshot_stream(&fs, &suid_id, &setuid_id);
    let (dev, dev_uuid) = snapshot_stream(&fs, &dev_id, &device);
    let (sgid, sgid_uuid) = snapshot_stream(&fs, &sgid_id, &setgid);

    // The hazard, with the opt-out: euid 0 and a working device node.
    let open = standby(dir.path(), &fs, true);
    assert!(matches!(
        receive(&open, &suid_id, &suid, &suid_uuid),
        Msg::Ack { .. }
    ));
    assert!(matches!(
        receive(&open, &dev_id, &dev, &dev_uuid),
        Msg::Ack { .. }
    ));
    let bin = received(&open, &suid_id).join("bin/id");
    let (ok, out, err) = as_nobody(&[bin.to_str().unwrap(), "-u"]);
    assert!(ok, "{err}");
    assert_eq!(
        out, "0",
        "control: a set-uid-root binary gives nobody euid 0"
    );
    let null = received(&open, &dev_id).join("null");
    let (ok, _, err) = as_nobody(&["sh", "-c", "echo x > \"$1\"", "sh", null.to_str().unwrap()]);
    assert!(
        ok,
        "control: nobody writes through the received device node: {err}"
    );

    // The default: refused at receive, naming the file; nothing stays.
    let cfg = standby(dir.path(), &fs, false);
    for (id, stream, uuid, want) in [
        (&suid_id, &suid, &suid_uuid, "`bin/id` set-uid (mode 4755)"),
        (&dev_id, &dev, &dev_uuid, "`null` a device node"),
        (&sgid_id, &sgid, &sgid_uuid, "`g` set-gid (mode 2755)"),
    ] {
        match receive(&cfg, id, stream, uuid) {
            Msg::Nack { error, .. } => {
                assert!(error.contains(want), "{id}: {error}");
                assert!(error.contains("allow_privileged_files"), "{error}");
            }
            other => panic!("{id}: {other:?}"),
        }
        let recv = received(&cfg, id);
        let area = recv.parent().unwrap().parent().unwrap();
        let left: Vec<_> = std::fs::read_dir(area)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{id}: left behind {left:?}");
    }
    let log = std::fs::read_to_string(cfg.state_dir.join("serve.log")).unwrap();
    assert!(
        log.contains("set-uid") && log.contains("device node"),
        "{log}"
    );

    // An ordinary snapshot still arrives.
    let plain_id = id(4);
    let (plain, plain_uuid) = snapshot_stream(&fs, &plain_id, &|src: &Path| {
        std::fs::create_dir(src.join("d")).unwrap();
        std::fs::set_permissions(src.join("d"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        write_file(&src.join("d/f"), &random_bytes(3, 200_000));
    });
    assert!(matches!(
        receive(&cfg, &plain_id, &plain, &plain_uuid),
        Msg::Ack { .. }
    ));
    assert_eq!(
        tree_digest(&received(&cfg, &plain_id)),
        tree_digest(&fs.path("snaps").join(&plain_id))
    );
    // Protocol 2 (DATA without a length, encoded writes) too.
    let v2_id = id(5);
    let (v2, v2_uuid) = snapshot_stream_with(
        &fs,
        &v2_id,
        &|src: &Path| write_file(&src.join("f"), &random_bytes(4, 300_000)),
        &["--proto", "2", "--compressed-data"],
    );
    assert_eq!(&v2[13..17], &2u32.to_le_bytes());
    assert!(matches!(
        receive(&cfg, &v2_id, &v2, &v2_uuid),
        Msg::Ack { .. }
    ));
    // And a set-uid file in a v2 stream is refused the same way.
    let v2s_id = id(6);
    let (v2s, v2s_uuid) = snapshot_stream_with(&fs, &v2s_id, &setuid_id, &["--proto", "2"]);
    assert!(matches!(
        receive(&cfg, &v2s_id, &v2s, &v2s_uuid),
        Msg::Nack { error, .. } if error.contains("`bin/id` set-uid")
    ));
}

/// The per-mount options of the mount at `mp` (from /proc/self/mountinfo).
fn mount_options(mp: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = mp.to_str().unwrap();
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(mp))
        .and_then(|l| l.split(' ').nth(5))
        .map(str::to_string)
}

/// Failover's bind mount of a btrfs copy at the volume's mountpoint is
/// `nosuid,nodev`: a set-uid-root binary that got into the copy (there
/// locally, or received with the opt-out) gives `nobody` root through the
/// filesystem's own mount, not through the mountpoint the application uses.
#[test]
fn failovers_bind_mounts_are_nosuid_nodev() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    lab.snapshot(false);
    lab.ship(&lab.pri_cfg);
    lab.ok(&lab.stb_cfg, &["failover"]);
    for r in ROLES {
        let mp = lab.dir.path().join("mnt-app").join(r);
        let opts = mount_options(&mp).unwrap_or_else(|| panic!("{} not mounted", mp.display()));
        let opts: Vec<&str> = opts.split(',').collect();
        assert!(
            opts.contains(&"nosuid") && opts.contains(&"nodev"),
            "{r}: {opts:?}"
        );
    }
    setuid_id(&lab.standby_live("blob"));
    let direct = lab.standby_live("blob").join("bin/id");
    let (ok, out, err) = as_nobody(&[direct.to_str().unwrap(), "-u"]);
    assert!(ok && out == "0", "control: {out} {err}");
    let through = lab.dir.path().join("mnt-app/blob/bin/id");
    let (ok, out, err) = as_nobody(&[through.to_str().unwrap(), "-u"]);
    assert!(ok, "{err}");
    assert_eq!(out, "65534", "no euid 0 through failover's mount");
}
