//! set -> ship -> failover with the ssh transport: a real OpenSSH server in
//! a network namespace ("standby site") reached from another namespace
//! ("primary site") over a veth pair. The standby's key pins the command
//! with an authorized_keys forced command, as a production setup would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct SshSite {
    ns_pri: String,
    ns_stb: String,
    ip_stb: String,
    dir: PathBuf,
    sshd_pid: Option<i32>,
}

impl SshSite {
    fn new(dir: &Path, forced_command: &str) -> SshSite {
        let n = std::process::id() % 10000;
        let octet = std::process::id() % 250 + 1;
        let site = SshSite {
            ns_pri: format!("snapsite-t{n}-p"),
            ns_stb: format!("snapsite-t{n}-s"),
            ip_stb: format!("10.231.{octet}.2"),
            dir: dir.join("ssh"),
            sshd_pid: None,
        };
        std::fs::create_dir_all(&site.dir).unwrap();
        let (vp, vs) = (format!("ssv{n}p"), format!("ssv{n}s"));
        sh(&["ip", "netns", "add", &site.ns_pri]);
        sh(&["ip", "netns", "add", &site.ns_stb]);
        sh(&[
            "ip", "link", "add", &vp, "type", "veth", "peer", "name", &vs,
        ]);
        sh(&["ip", "link", "set", &vp, "netns", &site.ns_pri]);
        sh(&["ip", "link", "set", &vs, "netns", &site.ns_stb]);
        sh(&[
            "ip",
            "-n",
            &site.ns_pri,
            "addr",
            "add",
            &format!("10.231.{octet}.1/24"),
            "dev",
            &vp,
        ]);
        sh(&[
            "ip",
            "-n",
            &site.ns_stb,
            "addr",
            "add",
            &format!("{}/24", site.ip_stb),
            "dev",
            &vs,
        ]);
        for (ns, dev) in [(&site.ns_pri, &vp), (&site.ns_stb, &vs)] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        let d = site.dir.display().to_string();
        sh(&[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &format!("{d}/host_key"),
        ]);
        sh(&[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &format!("{d}/id"),
        ]);
        let pubkey = std::fs::read_to_string(format!("{d}/id.pub")).unwrap();
        std::fs::write(
            format!("{d}/authorized_keys"),
            format!("command=\"{forced_command}\",restrict {pubkey}"),
        )
        .unwrap();
        std::fs::write(
            format!("{d}/sshd_config"),
            format!(
                "ListenAddress {}:22\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
                site.ip_stb
            ),
        )
        .unwrap();
        // sshd's privilege separation directory; harmless to leave in place.
        std::fs::create_dir_all("/run/sshd").unwrap();
        sh(&[
            "ip",
            "netns",
            "exec",
            &site.ns_stb,
            "/usr/sbin/sshd",
            "-f",
            &format!("{d}/sshd_config"),
            "-E",
            &format!("{d}/sshd.log"),
        ]);
        let mut site = site;
        for _ in 0..100 {
            if let Ok(p) = std::fs::read_to_string(format!("{d}/sshd.pid")) {
                if let Ok(pid) = p.trim().parse() {
                    site.sshd_pid = Some(pid);
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            site.sshd_pid.is_some(),
            "sshd did not start: {}",
            std::fs::read_to_string(format!("{d}/sshd.log")).unwrap_or_default()
        );
        site
    }

    fn standby_section(&self) -> String {
        let d = self.dir.display();
        format!(
            "transport = \"ssh\"\nhost = \"{}\"\nuser = \"root\"\nidentity = \"{d}/id\"\nssh_options = [\"UserKnownHostsFile={d}/known_hosts\", \"StrictHostKeyChecking=accept-new\", \"ConnectTimeout=10\"]\n",
            self.ip_stb
        )
    }

    fn run_on_primary(&self, cfg: &Path, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns_pri, snapsite_exe(), "--config"])
            .arg(cfg)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for SshSite {
    fn drop(&mut self) {
        if let Some(pid) = self.sshd_pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_pri])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns_stb])
            .status();
    }
}

fn ssh_prerequisites() -> Option<String> {
    for p in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        if !Path::new(p).exists() {
            return Some(format!(
                "{p} is missing (apt-get install openssh-server openssh-client)"
            ));
        }
    }
    if Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("`ip netns` is not available (apt-get install iproute2)".into());
    }
    None
}

#[test]
fn set_ship_failover_over_ssh_between_namespaces() {
    require_real!();
    if let Some(reason) = ssh_prerequisites() {
        assert!(
            !must_be_real(),
            "ssh test cannot run under CI/SNAPSITE_REQUIRE_REAL=1: {reason}"
        );
        eprintln!("SKIP ssh: {reason}");
        return;
    }
    let lab = Lab::new("[\"/bin/echo\", \"zmplayredo\", \"--fromTime\", \"{from_time}\"]");
    let forced = format!(
        "{} serve --stdio --config {}",
        snapsite_exe(),
        lab.stb_cfg.display()
    );
    let site = SshSite::new(lab.dir.path(), &forced);
    let cfg = lab.primary_variant("primary-ssh", &site.standby_section());

    for (i, r) in ROLES.iter().enumerate() {
        write_file(&lab.live(r).join("data"), &random_bytes(i as u64, 3 << 20));
    }
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
        assert_eq!(
            tree_digest(&lab.standby_snap(r, id)),
            tree_digest(&lab.primary_snap(r, id)),
            "{r}"
        );
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
