//! The crash matrix's VM subset (issue 25 item 3): ship's and serve's
//! commit steps, prune and failback's backend steps, stopped dead at their failpoints
//! (`SNAPSITE_FAILPOINT`, src/base/failpoint.rs) on real OpenZFS and LVM thin,
//! then rerun. After every cell the invariants of tests/crash_matrix.rs
//! are checked:
//!
//! - no committed set lost or changed (manifests on both sites);
//! - the data equal on both sites (ZFS: the received snapshots carry the
//!   sender's guids; LVM: the snapshot LVs hash the same);
//! - nothing leaked: no snapshot, dataset or LV on either site that no
//!   committed set (or the replica itself) names, no resume state, no
//!   receipt without a set, no pending intent or journal;
//! - no resend beyond the unfinished volume.
//!
//! The default run is a small subset (see [`subset`]: each cell boots no
//! guest but costs 1-2 minutes of emulated LVM/ZFS work);
//! `SNAPSITE_CRASH_MATRIX=full` runs every snapshot, ship, serve and prune
//! failpoint (serve's receive and commit also on the first, full ship) and
//! the backend's own failback points (keep_divergent, make_receivable),
//! failover's copy, promote and replay steps, rehearse's clone and replay
//! steps, and switchover's own steps and its demote's backend points; the
//! steps inside the backends' failover and rehearsal copies and LVM's
//! receive end; switchover's other recovery (the peer fails over, then
//! `failback`: crash/cycle.rs) and a switch back onto an empty-clone
//! replica; the spool's apply at failover in the `[stream]` lab
//! (crash/spool.rs); seeding, `ship --to` and `serve --from` (crash/seed.rs);
//! and, for every failover, failback, rehearse and switchover cell, its
//! "reboot" variant `reboot+CELL` (the crashed site's leftover processes
//! killed, its mounts and its `/run/snapsite` files gone, LVM's VG
//! deactivated and auto-activated again before the rerun: crash/reboot.rs);
//! `SNAPSITE_CRASH_CELLS=a,b` only those named.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

mod cycle;
mod follow;
mod kept;
mod reboot;
mod seed;
mod spool;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    Zfs,
    Lvm,
}

impl Kind {
    fn backend(self) -> &'static str {
        match self {
            Kind::Zfs => "zfs",
            Kind::Lvm => "lvm",
        }
    }
}

const ROLES: [&str; 2] = ["mysql", "redolog"];

/// The default subset: the receive killed between its end (`zfs receive`
/// exited, or the LVM writes read back) and the backend's completion mark,
/// the step the backends differ in most, on the first (full) ship; and on
/// ZFS serve killed mid-receive, where `zfs receive` finishes the snapshot
/// on its own after serve is gone (the bug this matrix found), also on the
/// first, full ship; and on ZFS failback killed between make_receivable's
/// clone and its promote (the step issue 25 found on btrfs). A cell costs 0.5-4 minutes in the
/// emulated guest (LVM the most: an LVM failback cell about 4), so the
/// other steps (serve's commit, ship's, prune's, keep_divergent, LVM's
/// make_receivable; green when last run) are in the full run.
fn subset(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Zfs => &[
            "serve.after_receipt@first",
            "serve.mid_receive",
            // The full receive's program outliving its killed serve: the
            // next session must stop it before listing (found by the full
            // matrix on 2026-12-07; timing-dependent, 20-25 s).
            "serve.mid_receive@first",
            "failback:zfs.make_receivable.after_clone",
        ],
        Kind::Lvm => &["serve.after_receipt@first"],
    }
}

/// `SNAPSITE_CRASH_MATRIX=full`: every failpoint of these verbs (`@first`:
/// on the very first ship, full receives).
const FULL: &[&str] = &[
    "take_set.after_intent",
    "take_set.after_snapshot",
    "take_set.after_manifest",
    "ship.after_ack",
    "ship.after_committed",
    "ship.before_record",
    "serve.mid_receive",
    "serve.after_receipt",
    "serve.before_manifest",
    "serve.after_manifest",
    "serve.mid_receive@first",
    "serve.after_receipt@first",
    "serve.before_manifest@first",
    "prune.after_intent",
    "prune.after_member",
    "prune.after_members",
    "prune.after_manifest",
    "failback:zfs.keep_divergent.after_rename",
    "failback:zfs.make_receivable.after_clone",
    "failback:lvm.keep_divergent.after_rename",
    "failback:lvm.make_receivable.after_rename",
    "failback:zfs.keep_divergent.after_readonly",
    "failback:lvm.keep_divergent.after_umount",
    // A failback that ran through, then (reboot variant) an ordinary
    // reboot: `role` says where the kept ZFS dataset is (crash/kept.rs).
    "failback:zfs.completed",
    "lvm.receive.after_snapshot",
    "lvm.receive.after_snapshot@first",
    // (failover.after_mount is btrfs's bind mount: ZFS and LVM mount the
    // copy inside making it, so the point is never reached there.)
    "failover:failover.after_copy",
    "failover:failover.after_promote",
    "failover:failover.after_replay",
    "failover:zfs.writable_copy.after_clone",
    "failover:lvm.writable_copy.after_snapshot",
    "rehearse:rehearse.after_clone",
    "rehearse:zfs.rehearsal_copy.after_clone",
    "rehearse:lvm.rehearsal_copy.after_snapshot",
    "rehearse:rehearse.after_replay",
    "switchover:switchover.after_final_set",
    "switchover:switchover.after_ship",
    "switchover:switchover.after_plan",
    "switchover:zfs.keep_divergent.after_rename",
    "switchover:zfs.make_receivable.after_clone",
    "switchover:lvm.keep_divergent.after_rename",
    "switchover:lvm.make_receivable.after_rename",
    // Switchover's other recovery: the peer fails over, then `failback`.
    "peer-failover:switchover.after_plan",
    "peer-failover:zfs.keep_divergent.after_rename",
    "peer-failover:lvm.keep_divergent.after_rename",
    // The replica an empty clone (the promoted live dataset's leftover).
    "switchback:zfs.make_receivable.after_destroy",
    // `follow` on a third site (crash/follow.rs; on LVM no set-aside, so
    // not follow.after_set_aside), and prune's release of a standby that
    // left the config.
    "follow:follow.after_plan",
    "follow:zfs.set_aside.after_rename",
    "follow:zfs.set_aside.after_clone",
    "follow:follow.after_set_aside",
    "follow:follow.after_divergent_record",
    "follow:follow.after_sets_moved",
    "follow:follow.after_mark_committed",
    "follow:follow.after_receivable",
    "follow:follow.after_role_record",
    "prune-release:prune.after_intent",
    "prune-release:prune.after_member",
    // The spool's apply at failover, in the `[stream]` lab.
    "spool:spool_apply.after_plan",
    "spool:spool_apply.after_backups",
    "spool:spool_apply.after_done",
    // Seeding: `ship --to DIR` and `serve --from SEED`.
    "seed:seed.after_member",
    "seed:seed.before_index",
    "seed:serve.after_receipt",
    "seed:serve.before_manifest",
    "seed:lvm.receive.after_snapshot",
];

/// Cells that stop at no failpoint: the verb runs through (then, in the
/// reboot variant, an ordinary reboot: crash/kept.rs).
const RUNS_THROUGH: &[&str] = &["failback:zfs.completed"];

/// The verbs whose cells get a "reboot" variant (`reboot+CELL`): those
/// that mount (failover's copies, rehearse's clones, the demote's
/// divergent data) or leave a half-done demote. Snapshot, ship, serve,
/// prune, the spool and seeding leave no mount behind: the plain cell is
/// the same test.
const REBOOTS: &[&str] = &["failover:", "failback:", "rehearse:", "switchover:"];

/// `SNAPSITE_CRASH_MATRIX=full`: [`FULL`], then the reboot variants.
/// (The names live as long as the test: the spool cell keeps its point in
/// a static.)
fn full_matrix() -> Vec<&'static str> {
    let mut v = FULL.to_vec();
    for c in FULL {
        if REBOOTS.iter().any(|p| c.starts_with(p)) {
            v.push(Box::leak(format!("reboot+{c}").into_boxed_str()));
        }
    }
    v
}

thread_local! {
    /// Seconds the cell running now spent building its two-site lab
    /// ([`Sites::new`]), printed on the cell's line.
    static SETUP: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

/// Unmounts these on drop (A's live LVM filesystems).
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = run(&["umount", "-l", p.to_str().unwrap()]);
        }
    }
}

/// Two sites on one backend: A primary (live volumes mounted), B standby.
/// Fields drop in declaration order: mounts, then VGs (each before its
/// loop device), then pools.
pub(super) struct Sites {
    kind: Kind,
    pub(super) dir: PathBuf,
    pub(super) a_cfg: PathBuf,
    pub(super) b_cfg: PathBuf,
    /// ZFS: pool names; LVM: VG names (A, B).
    a_name: String,
    b_name: String,
    /// A's live mountpoints, in ROLES order.
    pub(super) mounts: Vec<PathBuf>,
    _unmount: Unmount,
    /// B's pool or VG.
    _b: ThirdSite,
    /// A's VG (LVM): it drops before its loop device.
    _vgs: Vec<ThinVg>,
    _pools: Vec<Zpool>,
}

impl Sites {
    pub(super) fn new(kind: Kind, retention: bool) -> Sites {
        let t_setup = Instant::now();
        let dir = scratch().join(unique_name("crash"));
        std::fs::create_dir_all(&dir).unwrap();
        let a_cfg = dir.join("a.toml");
        let b_cfg = dir.join("b.toml");
        let mut a = site_head(&dir, "a");
        let mut b = site_head(&dir, "b");
        let (mut pools, mut vgs, mut mounts) = (vec![], vec![], vec![]);
        let b_mp = |r: &str| dir.join("b").join(r);
        // A: its volumes on a pool or in a VG's thin pool; B: a site on its
        // own storage, received into `replica/<role>` or `rep-<role>`.
        let b_site = match kind {
            Kind::Zfs => {
                pools.push(Zpool::on_file(&unique_name("cza"), 128 * MIB, &[]));
                ThirdSite::zfs("czb", 128 * MIB)
            }
            Kind::Lvm => {
                vgs.push(ThinVg::new("cla", 256 * MIB, "192M"));
                ThirdSite::lvm("clb", 256 * MIB, "192M")
            }
        };
        for r in ROLES {
            let (source, mp) = match kind {
                Kind::Zfs => {
                    let pa = &pools[0];
                    sh(&["zfs", "create", &pa.dataset(r)]);
                    mounts.push(zfs_mountpoint(&pa.dataset(r)));
                    (pa.dataset(r), None)
                }
                Kind::Lvm => {
                    let va = &vgs[0].vg;
                    thin_lv(va, r, "32M");
                    let mp = dir.join("a").join(r);
                    mount_ext4_settled(&va.dev(r), &mp);
                    mounts.push(mp.clone());
                    (va.lv(r), Some(mp))
                }
            };
            a.push_str(&volume(r, kind.backend(), &source, None, mp.as_deref()));
            b.push_str(&b_site.volume(r, Some(&b_mp(r))));
        }
        let a_name = match kind {
            Kind::Zfs => pools[0].name.clone(),
            Kind::Lvm => vgs[0].vg.name.clone(),
        };
        let b_name = b_site.name().to_string();
        if retention {
            a.push_str("[retention]\ngrid = \"1x1ms\"\n");
            b.push_str("[retention]\ngrid = \"1x1ms\"\nkeep_min_age = \"0s\"\n");
        }
        a.push_str(&local_standby(None, &b_cfg));
        std::fs::write(&a_cfg, a).unwrap();
        std::fs::write(&b_cfg, b).unwrap();
        // A's live filesystems (LVM) and B's failover copies, when made.
        let mut unmount: Vec<PathBuf> = ROLES.iter().map(|r| dir.join("b").join(r)).collect();
        if kind == Kind::Lvm {
            unmount.extend(mounts.iter().cloned());
        }
        let unmount = Unmount(unmount);
        reboot::register(kind, &dir, &a_cfg, &a_name, &b_name);
        SETUP.with(|c| c.set(c.get() + t_setup.elapsed().as_secs_f64()));
        Sites {
            kind,
            dir,
            a_cfg,
            b_cfg,
            a_name,
            b_name,
            mounts,
            _unmount: unmount,
            _b: b_site,
            _vgs: vgs,
            _pools: pools,
        }
    }

    fn state(&self, site: char) -> PathBuf {
        self.dir.join(format!("state-{site}"))
    }

    fn cfg(&self, site: char) -> &Path {
        if site == 'a' {
            &self.a_cfg
        } else {
            &self.b_cfg
        }
    }

    /// Writes `len` pseudo-random bytes to file `name` of A's volume `role`.
    fn write(&self, role: &str, name: &str, seed: u64, len: usize) {
        let i = ROLES.iter().position(|r| *r == role).unwrap();
        write_pattern(&self.mounts[i].join(name), 0, seed, len);
    }

    /// A dies: B fails over (generation 2, no replay) and writes `len`
    /// new bytes (file `b-new`) into each of its volumes.
    pub(super) fn fail_over_to_b(&self, len: usize) {
        let rep = snapsite_json(&self.b_cfg, &["failover", "--no-replay", "--json"]);
        assert_eq!(rep["generation"].as_u64(), Some(2), "{rep}");
        for (i, r) in ROLES.iter().enumerate() {
            write_pattern(
                &self.dir.join("b").join(r).join("b-new"),
                0,
                20 + i as u64,
                len,
            );
        }
    }

    pub(super) fn snapshot(&self) -> String {
        sh(&["sync"]);
        snapshot_id(&self.a_cfg)
    }

    /// Snapshot names of volume `role` on `site`, from the storage itself.
    fn snaps(&self, site: char, role: &str) -> BTreeSet<String> {
        self.objects(site)
            .into_iter()
            .filter_map(|o| {
                let (vol, snap) = match self.kind {
                    Kind::Zfs => o.split_once('@')?,
                    Kind::Lvm => o.split_once('.')?,
                };
                let want = match (self.kind, site) {
                    (Kind::Zfs, 'a') => format!("{}/{role}", self.a_name),
                    (Kind::Zfs, _) => format!("{}/replica/{role}", self.b_name),
                    (Kind::Lvm, 'a') => role.to_string(),
                    (Kind::Lvm, _) => format!("rep-{role}"),
                };
                (vol == want).then(|| snap.to_string())
            })
            .collect()
    }

    /// Every dataset/snapshot (ZFS) or LV (LVM) of a site's pool or VG.
    fn objects(&self, site: char) -> BTreeSet<String> {
        let name = if site == 'a' {
            &self.a_name
        } else {
            &self.b_name
        };
        storage_objects(self.kind == Kind::Zfs, name)
    }

    /// What a site's storage should hold: its volumes, the snapshots of
    /// its committed sets, nothing else.
    fn expected_objects(&self, site: char) -> BTreeSet<String> {
        let ids = manifests(&self.state(site)).into_keys().collect::<Vec<_>>();
        let mut want = BTreeSet::new();
        let (n, b) = (&self.a_name, &self.b_name);
        match (self.kind, site) {
            (Kind::Zfs, 'a') => {
                want.insert(n.clone());
            }
            (Kind::Zfs, _) => {
                want.insert(b.clone());
                want.insert(format!("{b}/replica"));
            }
            (Kind::Lvm, _) => {
                want.insert("pool".to_string());
            }
        }
        for r in ROLES {
            let vol = match (self.kind, site) {
                (Kind::Zfs, 'a') => format!("{n}/{r}"),
                (Kind::Zfs, _) => format!("{b}/replica/{r}"),
                (Kind::Lvm, 'a') => r.to_string(),
                (Kind::Lvm, _) => format!("rep-{r}"),
            };
            for id in &ids {
                let sep = if self.kind == Kind::Zfs { '@' } else { '.' };
                want.insert(format!("{vol}{sep}{id}"));
            }
            want.insert(vol);
        }
        want
    }

    /// A hash of each member's data (ZFS: its guid, which names the
    /// content; LVM: sha256 of the snapshot LV).
    fn content(&self, site: char, role: &str, id: &str) -> String {
        match self.kind {
            Kind::Zfs => {
                let ds = if site == 'a' {
                    format!("{}/{role}@{id}", self.a_name)
                } else {
                    format!("{}/replica/{role}@{id}", self.b_name)
                };
                zfs_get("guid", &ds)
            }
            Kind::Lvm => {
                let (vg, lv) = if site == 'a' {
                    (&self.a_name, format!("{role}.{id}"))
                } else {
                    (&self.b_name, format!("rep-{role}.{id}"))
                };
                let full = format!("{vg}/{lv}");
                sh(&["lvchange", "-ay", "-K", &full]);
                let h = sha256(Path::new(&format!("/dev/{vg}/{lv}")));
                sh(&["lvchange", "-an", &full]);
                h
            }
        }
    }
}

/// A site's committed sets: id -> manifest.
fn manifests(state: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(state.join("sets")) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        out.insert(v["id"].as_str().unwrap().to_string(), v);
    }
    out
}

/// A manifest without what a site writes when it commits or protects.
fn comparable(m: &serde_json::Value) -> serde_json::Value {
    let mut m = m.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("committed_at");
        o.remove("standby_order");
        if let Some(ms) = o.get_mut("members").and_then(|x| x.as_array_mut()) {
            for x in ms {
                if let Some(x) = x.as_object_mut() {
                    x.remove("receipt");
                }
            }
        }
    }
    m
}

/// Runs `snapsite ARGS` stopped at `fp`; it must stop there.
fn crash(cfg: &Path, args: &[&str], fp: &str) {
    let o = Command::new(snapsite_bin())
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env(snapsite::base::failpoint::ENV, fp)
        .output()
        .unwrap();
    crate::crashcheck::assert_stopped_at(&o, &format!("snapsite {args:?}"), fp);
    reboot::after_crash(cfg);
}

/// Every set `site` had committed `before` is still there, unchanged;
/// returns the site's sets now.
fn sets_kept(s: &Sites, site: char, before: &Before) -> BTreeMap<String, serde_json::Value> {
    let now = manifests(&s.state(site));
    for (id, m) in &before[&site] {
        let got = now
            .get(id)
            .unwrap_or_else(|| panic!("site {site}: committed set {id} lost"));
        assert_eq!(
            comparable(got),
            comparable(m),
            "site {site}: set {id} changed"
        );
    }
    now
}

/// The invariants every cell ends with.
fn check_invariants(s: &Sites, before: &Before) {
    for site in ['a', 'b'] {
        // Nothing committed before the crash is lost or changed.
        sets_kept(s, site, before);
        // Nothing leaked on the storage.
        assert_eq!(
            s.objects(site),
            s.expected_objects(site),
            "site {site}: storage holds exactly its volumes and committed sets' snapshots"
        );
        // No pending intent or journal left.
        let st = s.state(site);
        let pending: Vec<_> = std::fs::read_dir(st.join("pending"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(pending.is_empty(), "site {site}: pending {pending:?}");
        no_journal(s, site);
    }
    if s.kind == Kind::Zfs {
        for r in ROLES {
            let ds = format!("{}/replica/{r}", s.b_name);
            assert_eq!(
                zfs_get("receive_resume_token", &ds),
                "-",
                "{ds}: resume state left"
            );
        }
    }
    // B's receipts are exactly its sets' members'.
    let b_sets = manifests(&s.state('b'));
    let mut want = BTreeSet::new();
    for (id, m) in &b_sets {
        for x in m["members"].as_array().unwrap() {
            want.insert(format!("{}/{id}.json", x["role"].as_str().unwrap()));
        }
    }
    let mut got = BTreeSet::new();
    for r in ROLES {
        if let Ok(rd) = std::fs::read_dir(s.state('b').join("received").join(r)) {
            for e in rd {
                got.insert(format!("{r}/{}", e.unwrap().file_name().to_string_lossy()));
            }
        }
    }
    assert_eq!(got, want, "B's receipts are its sets' members'");
    // The data on both sites equal, for the newest set both hold (what
    // failover would use; on LVM each comparison reads both devices).
    let a_sets = manifests(&s.state('a'));
    if let Some(id) = b_sets.keys().rfind(|id| a_sets.contains_key(*id)) {
        for r in ROLES {
            assert_eq!(
                s.content('a', r, id),
                s.content('b', r, id),
                "volume {r} of set {id}: the sites hold different data"
            );
        }
    }
}

/// Ships (once more) and checks that nothing B held is sent again, except
/// at most `allowed` snapshots of an unfinished receive.
fn ship_no_resend(s: &Sites, held: &BTreeSet<(String, String)>, allowed: usize) {
    let rep = snapsite_json(&s.a_cfg, &["ship", "--json"]);
    let resent: Vec<_> = rep["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["role"].as_str().unwrap().to_string(),
                x["snapshot"].as_str().unwrap().to_string(),
            )
        })
        .filter(|k| held.contains(k))
        .collect();
    assert!(
        resent.len() <= allowed,
        "resent {resent:?} that B held (at most {allowed} allowed): {rep}"
    );
}

fn held(s: &Sites) -> BTreeSet<(String, String)> {
    ROLES
        .iter()
        .flat_map(|r| s.snaps('b', r).into_iter().map(|n| (r.to_string(), n)))
        .collect()
}

/// Each site's committed sets (manifests by id), as [`snapshot_of_both`] takes them.
type Before = BTreeMap<char, BTreeMap<String, serde_json::Value>>;

fn snapshot_of_both(s: &Sites) -> Before {
    [
        ('a', manifests(&s.state('a'))),
        ('b', manifests(&s.state('b'))),
    ]
    .into_iter()
    .collect()
}

/// One set shipped, two more taken (the btrfs matrix's ship/serve setup).
fn one_shipped_two_pending(s: &Sites) {
    s.write("mysql", "m0", 1, 256 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    s.snapshot();
    snapsite_ok(&s.a_cfg, &["ship"]);
    s.write("mysql", "m1", 3, 512 << 10);
    s.snapshot();
    s.write("mysql", "m2", 4, 512 << 10);
    s.write("redolog", "log2", 5, 16 << 10);
    s.snapshot();
}

/// Ship and serve cells: A ships two pending sets; A's ship or B's serve
/// (the local transport's child inherits the failpoint) stops dead; the
/// rerun finishes without sending again what B holds.
fn ship_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    one_shipped_two_pending(&s);
    let before = snapshot_of_both(&s);
    crash(&s.a_cfg, &["ship"], fp);
    let held = held(&s);
    // A receive killed after it finished but before the backend called it
    // complete is the one volume that may be sent again.
    let allowed = usize::from(fp == "serve.after_receipt" || fp == "serve.mid_receive");
    ship_no_resend(&s, &held, allowed);
    check_invariants(&s, &before);
    let a = manifests(&s.state('a'));
    let b = manifests(&s.state('b'));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "every set of A is committed on B"
    );
    // Shipping goes on incrementally from there.
    s.write("mysql", "m3", 6, 64 << 10);
    let last = s.snapshot();
    let rep = snapsite_json(&s.a_cfg, &["ship", "--json"]);
    for x in rep["snapshots"].as_array().unwrap() {
        assert_eq!(x["snapshot"].as_str(), Some(last.as_str()), "{rep}");
        assert!(x["base"].is_string(), "incremental: {rep}");
    }
}

/// Serve cells on the very first ship (full receives; on ZFS the receive
/// creates the replica dataset): the same checks as [`ship_cell`].
fn first_ship_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    s.write("mysql", "m0", 1, 256 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    s.snapshot();
    let before = snapshot_of_both(&s);
    crash(&s.a_cfg, &["ship"], fp);
    let held = held(&s);
    ship_no_resend(&s, &held, 1);
    check_invariants(&s, &before);
    assert_eq!(
        manifests(&s.state('a')).keys().collect::<Vec<_>>(),
        manifests(&s.state('b')).keys().collect::<Vec<_>>(),
        "the set is committed on B"
    );
}

/// Snapshot cells: `snapshot` stops dead; the next ship finishes or drops
/// the set and ships what is complete.
fn snapshot_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    s.write("mysql", "m0", 1, 128 << 10);
    s.snapshot();
    snapsite_ok(&s.a_cfg, &["ship"]);
    let before = snapshot_of_both(&s);
    s.write("mysql", "m1", 2, 128 << 10);
    sh(&["sync"]);
    crash(&s.a_cfg, &["snapshot"], fp);
    let held = held(&s);
    ship_no_resend(&s, &held, 0);
    check_invariants(&s, &before);
}

/// Prune cells: A holds four sets (two shipped), B two; a grid keeping only
/// the newest makes each site prune; each prune stops dead and is rerun.
fn prune_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, true);
    let mut f = Vec::new();
    for i in 0..4u64 {
        s.write("mysql", &format!("m{i}"), 10 + i, 64 << 10);
        f.push(s.snapshot());
        if i == 0 || i == 2 {
            snapsite_ok(&s.a_cfg, &["ship"]);
        }
    }
    for site in ['a', 'b'] {
        crash(s.cfg(site), &["prune"], fp);
        snapsite_ok(s.cfg(site), &["prune", "--json"]);
    }
    let keys = |site| manifests(&s.state(site)).into_keys().collect::<Vec<_>>();
    crate::crashcheck::assert_pruned_to_newest(&f, keys('a'), keys('b'));
    check_invariants(&s, &snapshot_of_both(&s));
    let rep = snapsite_json(&s.a_cfg, &["ship", "--json"]);
    for x in rep["snapshots"].as_array().unwrap() {
        assert_eq!(x["snapshot"].as_str(), Some(f[3].as_str()), "{rep}");
        assert_eq!(x["base"].as_str(), Some(f[2].as_str()), "{rep}");
    }
}

/// Failback cells: A ships a set, takes one more (never shipped); B fails
/// over and writes; A's failback (its config now naming replicas) stops
/// dead inside the backend's keep_divergent or make_receivable and is
/// rerun. Then: A is the standby of generation 2 and B primary; A holds
/// only its replica chain and its divergent data (read-only), nothing
/// half-made; no journal left; B's next ship is incremental from the
/// common set and the data are equal on both sites.
fn failback_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    s.write("mysql", "m0", 1, 256 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    let common = s.snapshot();
    snapsite_ok(&s.a_cfg, &["ship"]);
    s.write("mysql", "a-late", 3, 128 << 10);
    let a1 = s.snapshot();
    s.fail_over_to_b(64 << 10);
    // A returns, its config naming a replica for each volume.
    name_replicas(&s);
    // `zfs.completed`: no crash; the failback runs through (and, in its
    // reboot variant, A reboots after it: crash/kept.rs).
    if fp != "zfs.completed" {
        crash(&s.a_cfg, &["failback"], fp);
    }
    let fb = snapsite_json(&s.a_cfg, &["failback", "--json"]);
    let label = fb["divergent"]["label"].as_str().unwrap().to_string();
    assert_eq!(
        fb["plan"]["divergent_sets"],
        serde_json::json!([a1]),
        "{fb}"
    );
    for (cfg, role) in [(&s.a_cfg, "standby"), (&s.b_cfg, "primary")] {
        // (B's status is critical until it ships: exit 2, JSON all the same)
        let o = snapsite_run(cfg, &["status", "--json"], None);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (st["role"].as_str(), st["generation"].as_u64()),
            (Some(role), Some(2)),
            "{st}"
        );
    }
    for e in std::fs::read_dir(s.state('a')).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with("journal-") && !n.contains(".tmp"),
            "site a: left {n}"
        );
    }
    // A's storage: the replica chain (the common set), the divergent
    // data (read-only) and nothing else: no live volume, no clone or LV
    // half-made, no snapshot outside both.
    let sep = if kind == Kind::Zfs { '@' } else { '.' };
    for r in ROLES {
        let (rep, div) = (format!("replica/{r}"), format!("{r}-divergent-{label}"));
        let objs: BTreeSet<String> = s
            .objects('a')
            .into_iter()
            .filter_map(|o| {
                let o = o
                    .strip_prefix(&format!("{}/", s.a_name))
                    .unwrap_or(&o)
                    .to_string();
                let base = o.split(sep).next().unwrap().to_string();
                let mine = base == r
                    || base == format!("replica/{r}")
                    || base == format!("rep-{r}")
                    || base.starts_with(&format!("{r}-"));
                mine.then_some(o)
            })
            .collect();
        let (rep, want) = match kind {
            Kind::Zfs => (
                rep.clone(),
                [
                    rep.clone(),
                    format!("{rep}@{common}"),
                    div.clone(),
                    format!("{div}@{a1}"),
                ],
            ),
            Kind::Lvm => (
                format!("rep-{r}"),
                [
                    format!("rep-{r}"),
                    format!("rep-{r}.{common}"),
                    div.clone(),
                    format!("{div}.{a1}"),
                ],
            ),
        };
        // LVM: the replica LV itself appears with the first receive.
        let want: BTreeSet<String> = want
            .into_iter()
            .filter(|w| kind == Kind::Zfs || *w != rep || objs.contains(w))
            .collect();
        assert_eq!(objs, want, "site a, volume {r}: what the storage holds");
        match kind {
            Kind::Zfs => {
                let d = format!("{}/{div}", s.a_name);
                assert_eq!(zfs_get("readonly", &d), "on", "{d}");
                assert_eq!(zfs_get("mounted", &d), "yes", "{d}");
                assert_eq!(zfs_get("origin", &format!("{}/{rep}", s.a_name)), "-");
            }
            Kind::Lvm => {
                let d = format!("{}/{div}", s.a_name);
                let attr = sh(&["lvs", "--noheadings", "-o", "lv_attr,lv_tags", &d]);
                assert!(
                    attr.trim().chars().nth(1) == Some('r') && attr.contains("snapsite-divergent"),
                    "{d}: read-only and tagged: {attr}"
                );
                let tags = sh(&[
                    "lvs",
                    "--noheadings",
                    "-o",
                    "lv_tags",
                    &format!("{}/rep-{r}.{common}", s.a_name),
                ]);
                assert!(tags.contains("snapsite-from-"), "{r}: {tags}");
            }
        }
    }
    // B ships its first set of generation 2 to A: incremental from the
    // common set (nothing sent again), committed; the data equal.
    ship_back(&s, &common);
    if fp == "zfs.completed" {
        kept::after_completed_failback(&s, &label);
    }
}

/// Names a replica for each of A's volumes in A's config (what a
/// failback or a switchover's demote needs).
fn name_replicas(s: &Sites) {
    let mut a = std::fs::read_to_string(&s.a_cfg).unwrap();
    for r in ROLES {
        let (src, rep) = match s.kind {
            Kind::Zfs => (
                format!("{}/{r}", s.a_name),
                format!("{}/replica/{r}", s.a_name),
            ),
            Kind::Lvm => (format!("{}/{r}", s.a_name), format!("{}/rep-{r}", s.a_name)),
        };
        let line = format!("source = \"{src}\"\n");
        assert!(a.contains(&line), "{a}");
        a = a.replace(&line, &format!("{line}replica = \"{rep}\"\n"));
    }
    std::fs::write(&s.a_cfg, a).unwrap();
}

/// B, now primary, ships its first set of the new generation to A:
/// incremental from `common` (nothing sent again), committed; the data
/// equal on both sites.
fn ship_back(s: &Sites, common: &str) {
    let b_peer = s.dir.join("b-peer.toml");
    std::fs::write(
        &b_peer,
        format!(
            "{}[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
            std::fs::read_to_string(&s.b_cfg).unwrap(),
            s.a_cfg.display()
        ),
    )
    .unwrap();
    sh(&["sync"]);
    let b2 = snapshot_id(&b_peer);
    let shipped = snapsite_json(&b_peer, &["ship", "--json"]);
    assert_eq!(shipped["committed"], serde_json::json!([b2]), "{shipped}");
    for x in shipped["snapshots"].as_array().unwrap() {
        assert_eq!(x["base"].as_str(), Some(common), "incremental: {shipped}");
    }
    for r in ROLES {
        let (ha, hb) = match s.kind {
            Kind::Zfs => (
                zfs_get("guid", &format!("{}/replica/{r}@{b2}", s.a_name)),
                zfs_get("guid", &format!("{}/live-{r}@{b2}", s.b_name)),
            ),
            Kind::Lvm => (
                lv_hash(&s.a_name, &format!("rep-{r}.{b2}")),
                lv_hash(&s.b_name, &format!("live-{r}.{b2}")),
            ),
        };
        assert_eq!(
            ha, hb,
            "volume {r} of set {b2}: the sites hold different data"
        );
    }
}

/// A replay for B that counts its runs in `dir/replays.log` (the log's
/// path is an argument, not part of the script).
fn counting_replay(s: &Sites) -> PathBuf {
    let log = s.dir.join("replays.log");
    let mut b = std::fs::read_to_string(&s.b_cfg).unwrap();
    b.push_str(&format!(
        "[replay]\ncommand = [\"sh\", \"-c\", \"echo replay >> \\\"$0\\\"\", \"{}\"]\n",
        log.display()
    ));
    std::fs::write(&s.b_cfg, b).unwrap();
    log
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Mount points (from /proc/self/mountinfo) at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| *m == d || m.starts_with(&format!("{d}/")))
        .collect()
}

/// `role --json` of a site: (role, generation).
fn role_of(cfg: &Path) -> (String, u64) {
    let v = snapsite_json(cfg, &["role", "--json"]);
    (
        v["role"].as_str().unwrap_or_default().to_string(),
        v["generation"].as_u64().unwrap_or_default(),
    )
}

/// No journal, temporary file or pending intent left in a site's state.
fn no_journal(s: &Sites, site: char) {
    for e in std::fs::read_dir(s.state(site)).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with("journal-") && !n.contains(".tmp"),
            "site {site}: left {n}"
        );
    }
}

/// One set with data in both volumes, shipped; returns its id and the
/// files written (role, name).
fn one_shipped(s: &Sites) -> (String, Vec<(&'static str, &'static str)>) {
    s.write("mysql", "m0", 1, 256 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    let set = s.snapshot();
    snapsite_ok(&s.a_cfg, &["ship"]);
    (set, vec![("mysql", "m0"), ("redolog", "log1")])
}

/// Failover cells: B fails over to A's shipped set; failover stops dead
/// at a step and is rerun. Then: B primary of generation 2, A untouched;
/// the replay ran once; each copy mounted once and holding what A
/// shipped; B's storage holds its replica chain and one copy per volume,
/// nothing else; no journal; no committed set changed.
fn failover_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    let log = counting_replay(&s);
    let (set, files) = one_shipped(&s);
    let before = snapshot_of_both(&s);
    let b_objects = s.objects('b');
    crash(&s.b_cfg, &["failover"], fp);
    if fp == "zfs.writable_copy.after_clone" && !reboot::on() {
        // `zfs clone` mounted it: unmount it, the state of a kill before
        // the mount (or of a pool that does not mount clones).
        let made = format!("{}/live-{}", s.b_name, ROLES[0]);
        assert_eq!(zfs_get("mounted", &made), "yes", "{made}");
        sh(&["zfs", "unmount", &made]);
    }
    let f = snapsite_json(&s.b_cfg, &["failover", "--json"]);
    assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
    assert_eq!(f["plan"]["set_id"].as_str(), Some(set.as_str()), "{f}");
    assert_eq!(count_lines(&log), 1, "the replay ran exactly once");
    no_journal(&s, 'b');
    assert_eq!(role_of(&s.a_cfg), ("primary".to_string(), 1));
    assert_eq!(role_of(&s.b_cfg), ("primary".to_string(), 2));
    assert_eq!(snapshot_of_both(&s), before, "no committed set changed");
    let mnt = s.dir.join("b");
    let mounts = mounts_below(&mnt);
    crate::crashcheck::assert_mounted_once(&mounts, &mnt, &ROLES);
    assert_eq!(mounts.len(), ROLES.len(), "only the copies: {mounts:?}");
    for (r, name) in files {
        let i = ROLES.iter().position(|x| *x == r).unwrap();
        assert_eq!(
            sha256(&mnt.join(r).join(name)),
            sha256(&s.mounts[i].join(name)),
            "{r}/{name}: B's copy holds what A shipped"
        );
    }
    let mut want = b_objects;
    for r in ROLES {
        want.insert(match kind {
            Kind::Zfs => format!("{}/live-{r}", s.b_name),
            Kind::Lvm => format!("live-{r}"),
        });
    }
    assert_eq!(s.objects('b'), want, "B: its replicas and one copy each");
    assert_eq!(s.objects('a'), s.expected_objects('a'), "A untouched");
}

/// Rehearse cells: B rehearses on scratch clones, stops dead and is
/// rerun: the rerun removes the killed rehearsal's clones first and
/// rehearses; then nothing is left (no clone, LV, mount, journal), the
/// roles are unchanged and every invariant of [`check_invariants`] holds.
fn rehearse_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    let log = counting_replay(&s);
    let (set, _) = one_shipped(&s);
    let before = snapshot_of_both(&s);
    crash(&s.b_cfg, &["rehearse"], fp);
    let r = snapsite_json(&s.b_cfg, &["rehearse", "--json"]);
    assert_eq!(r["ok"].as_bool(), Some(true), "{r}");
    assert_eq!(r["plan"]["set_id"].as_str(), Some(set.as_str()), "{r}");
    let ran_before = fp == "rehearse.after_replay";
    assert_eq!(count_lines(&log), 1 + usize::from(ran_before), "replays");
    assert!(!s.state('b').join("rehearsal/state.json").exists());
    let m = mounts_below(&s.dir.join("b"));
    assert!(m.is_empty(), "nothing mounted at B's mountpoints: {m:?}");
    let m = mounts_below(&s.state('b'));
    assert!(m.is_empty(), "nothing mounted in B's state: {m:?}");
    assert_eq!(role_of(&s.a_cfg), ("primary".to_string(), 1));
    assert_eq!(role_of(&s.b_cfg), ("standby".to_string(), 1));
    check_invariants(&s, &before);
    assert_eq!(snapshot_of_both(&s), before, "no committed set changed");
}

/// A's switchover stopped dead at `fp`: A has one set shipped and more
/// written since, replicas named, replays counted. Returns the lab and
/// both sites' sets from before the switchover.
fn switchover_stopped_at(kind: Kind, fp: &str) -> (Sites, Before) {
    let s = Sites::new(kind, false);
    counting_replay(&s);
    one_shipped(&s);
    s.write("mysql", "last", 3, 128 << 10);
    s.write("redolog", "log2", 4, 16 << 10);
    name_replicas(&s);
    let before = snapshot_of_both(&s);
    crash(&s.a_cfg, &["switchover"], fp);
    (s, before)
}

/// Switchover cells: A (one set shipped, more written) switches over to
/// B and stops dead at a step; the rerun finishes it, B fails over to the
/// final set. Then: A standby, B primary of generation 2; A's sets are
/// what they were plus the one final set; no journal; A's storage holds
/// nothing half-made; B's next ship is incremental from the final set
/// with the data equal on both sites.
fn switchover_cell(kind: Kind, fp: &str) {
    let (s, before) = switchover_stopped_at(kind, fp);
    let so = snapsite_json(&s.a_cfg, &["switchover", "--json"]);
    let fin = so["final_set"].as_str().unwrap().to_string();
    let f = snapsite_json(&s.b_cfg, &["failover", "--set", &fin, "--json"]);
    assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
    // The demote records A as the standby of its own generation.
    assert_eq!(role_of(&s.a_cfg), ("standby".to_string(), 1));
    assert_eq!(role_of(&s.b_cfg), ("primary".to_string(), 2));
    no_journal(&s, 'a');
    no_journal(&s, 'b');
    check_sets_and_storage(&s, &before, &fin);
    ship_back(&s, &fin);
}

/// After a switchover (however recovered): each site's sets are what they
/// were plus the final set `fin`; A's storage holds its volumes, replicas
/// and divergent data and snapshots of its sets only, nothing half-made.
fn check_sets_and_storage(s: &Sites, before: &Before, fin: &String) {
    let kind = s.kind;
    for site in ['a', 'b'] {
        let now = sets_kept(s, site, before);
        let mut want: BTreeSet<&String> = before[&site].keys().collect();
        want.insert(fin);
        assert_eq!(now.keys().collect::<BTreeSet<_>>(), want, "site {site}");
    }
    // A's storage: every object a volume, its replica or divergent
    // data, and every snapshot one of A's sets'; nothing half-made.
    let ids: BTreeSet<String> = manifests(&s.state('a')).into_keys().collect();
    let sep = if kind == Kind::Zfs { '@' } else { '.' };
    for o in s.objects('a') {
        let rel = o
            .strip_prefix(&format!("{}/", s.a_name))
            .unwrap_or(&o)
            .to_string();
        let (base, snap) = match rel.split_once(sep) {
            Some((b, n)) => (b.to_string(), Some(n.to_string())),
            None => (rel.clone(), None),
        };
        let known = o == s.a_name
            || base == "pool"
            || base == "replica"
            || ROLES.iter().any(|r| {
                base == *r
                    || base == format!("replica/{r}")
                    || base == format!("rep-{r}")
                    || base.starts_with(&format!("{r}-divergent-"))
            });
        assert!(known, "site a: {o} is no volume, replica or divergent data");
        if let Some(n) = snap {
            assert!(
                ids.contains(&n) || base.contains("-divergent-"),
                "site a: snapshot {o} of no set"
            );
        }
        assert!(
            !rel.contains("orig") && !rel.contains("tmp"),
            "site a: {o} half-made"
        );
    }
}

/// sha256 of a (thin snapshot) LV, activated for the read.
fn lv_hash(vg: &str, lv: &str) -> String {
    let full = format!("{vg}/{lv}");
    sh(&["lvchange", "-ay", "-K", &full]);
    let h = sha256(Path::new(&format!("/dev/{vg}/{lv}")));
    sh(&["lvchange", "-an", &full]);
    h
}

/// A cell's test on one backend, stopped at a failpoint.
type CellFn = fn(Kind, &'static str);

/// The verbs a ship cell's crashed command runs: `ship`, and the `serve`
/// it drives (the serve and LVM receive points).
const SHIP: &[&str] = &["ship", "serve"];

/// The cells of the other verbs and labs: `<prefix>FAILPOINT`, with the
/// verbs the cell's crashed command runs (its failpoint is reached by one
/// of them: `failpoint::ALL`'s `verbs`).
const PREFIXED: &[(&str, CellFn, &[&str])] = &[
    ("failback:", failback_cell, &["failback"]),
    ("failover:", failover_cell, &["failover"]),
    ("rehearse:", rehearse_cell, &["rehearse"]),
    ("switchover:", switchover_cell, &["switchover"]),
    ("peer-failover:", cycle::peer_failover_cell, &["switchover"]),
    ("seed:", seed::seed_cell, &["seed"]),
    ("spool:", spool::spool_apply_cell, &["failover"]),
    ("follow:", follow::follow_cell, &["follow"]),
    ("prune-release:", follow::prune_release_cell, &["prune"]),
    ("switchback:", cycle::switchback_cell, &["switchover"]),
];

/// The cell `fp` names (a prefixed cell, a first-ship, prune, snapshot,
/// or else a ship or serve cell): its test, the failpoint it stops at and
/// the verbs its crashed command runs.
fn route(fp: &'static str) -> (CellFn, &'static str, &'static [&'static str]) {
    for (prefix, cell, verbs) in PREFIXED {
        if let Some(point) = fp.strip_prefix(prefix) {
            return (*cell, point, verbs);
        }
    }
    if let Some(point) = fp.strip_suffix("@first") {
        (first_ship_cell, point, SHIP)
    } else if fp.starts_with("prune.") {
        (prune_cell, fp, &["prune"])
    } else if fp.starts_with("take_set.") {
        (snapshot_cell, fp, &["snapshot"])
    } else {
        (ship_cell, fp, SHIP)
    }
}

/// Runs the cell `fp` names ([`route`]).
fn run_cell(kind: Kind, fp: &'static str) {
    let (cell, point, _) = route(fp);
    cell(kind, point)
}

/// Whether cell `c` runs on `kind`: a backend's own failpoints (failback's,
/// switchover's) only on that backend; LVM sets nothing aside for follow.
fn runs_on(kind: Kind, c: &str) -> bool {
    let other = match kind {
        Kind::Zfs => "lvm.",
        Kind::Lvm => "zfs.",
    };
    let point = c.split_once(':').map_or(c, |(_, f)| f);
    let set_aside = kind == Kind::Lvm && c.ends_with("follow:follow.after_set_aside");
    !(point.starts_with(other) || set_aside)
}

fn run_matrix(kind: Kind) {
    let full = std::env::var("SNAPSITE_CRASH_MATRIX").as_deref() == Ok("full");
    // SNAPSITE_CRASH_CELLS=a,b: only these cells, in this order (while
    // working on one, or to split the full run into calls).
    let chosen = std::env::var("SNAPSITE_CRASH_CELLS").unwrap_or_default();
    let all = full_matrix();
    let chosen: Vec<&str> = chosen
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            all.iter()
                .copied()
                .find(|f| *f == c)
                .unwrap_or_else(|| panic!("SNAPSITE_CRASH_CELLS names `{c}`, no cell of the matrix (tests/vm/crash.rs FULL and its reboot+ variants)"))
        })
        .collect();
    let cells = if !chosen.is_empty() {
        &chosen[..]
    } else if full {
        &all[..]
    } else {
        subset(kind)
    };
    let cells: Vec<&str> = cells.iter().copied().filter(|c| runs_on(kind, c)).collect();
    let t0 = Instant::now();
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for &fp in &cells {
        let t = Instant::now();
        // `reboot+CELL`: CELL, with the crashed site rebooted before the
        // rerun (crash/reboot.rs).
        let (rebooted, cell) = match fp.strip_prefix("reboot+") {
            Some(c) => (true, c),
            None => (false, fp),
        };
        reboot::set(rebooted);
        SETUP.with(|c| c.set(0.0));
        let res = std::panic::catch_unwind(|| run_cell(kind, cell));
        reboot::set(false);
        let outcome = match &res {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                let m = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{fp}: {m}"));
                "FAILED".to_string()
            }
        };
        let line = format!(
            "{kind:?} {fp:<50} {outcome} ({:.1} s, lab setup {:.1} s)",
            t.elapsed().as_secs_f64(),
            SETUP.with(|c| c.get())
        );
        eprintln!("crash cell: {line}");
        lines.push(line);
    }
    eprintln!(
        "crash matrix on {kind:?} ({} cells, {:.1} s):\n{}",
        cells.len(),
        t0.elapsed().as_secs_f64(),
        lines.join("\n")
    );
    assert!(failed.is_empty(), "failed cells:\n{}", failed.join("\n\n"));
}

#[test]
fn zfs_crash_matrix_subset() {
    require_lab!();
    run_matrix(Kind::Zfs);
}

#[test]
fn lvm_crash_matrix_subset() {
    require_lab!();
    run_matrix(Kind::Lvm);
}

/// The dispatch covers the cell lists (no VM needed: a check of the tables
/// only): every cell of [`FULL`], its reboot variants and both subsets
/// routes to a test whose crashed command reaches the cell's failpoint
/// (listed in `failpoint::ALL` with one of that command's verbs; but
/// [`RUNS_THROUGH`]), and runs on a backend; the subsets and the reboot verbs are in the full
/// matrix; no table row is dead and no cell listed twice.
#[test]
fn crash_cells_all_route_to_a_test_that_reaches_their_failpoint() {
    use snapsite::base::failpoint;
    let all = full_matrix();
    let mut seen = BTreeSet::new();
    for c in FULL {
        assert!(seen.insert(*c), "{c} listed twice in FULL");
    }
    for kind in [Kind::Zfs, Kind::Lvm] {
        for c in subset(kind) {
            assert!(FULL.contains(c), "{kind:?} subset cell {c} is not in FULL");
            assert!(
                runs_on(kind, c),
                "{kind:?} subset cell {c} never runs there"
            );
        }
    }
    for r in REBOOTS {
        assert!(
            PREFIXED.iter().any(|(p, _, _)| p == r),
            "reboot verb {r} has no cell test"
        );
        assert!(
            all.iter().any(|c| c.starts_with(&format!("reboot+{r}"))),
            "no reboot cell of {r}"
        );
    }
    for (prefix, _, _) in PREFIXED {
        assert!(
            FULL.iter().any(|c| c.starts_with(prefix)),
            "dispatch row {prefix} serves no cell of FULL"
        );
    }
    for c in RUNS_THROUGH {
        assert!(FULL.contains(c), "{c} (runs through) is not in FULL");
    }
    for c in &all {
        let cell = c.strip_prefix("reboot+").unwrap_or(c);
        if RUNS_THROUGH.contains(&cell) {
            continue;
        }
        let (_, point, verbs) = route(cell);
        let fp = failpoint::ALL
            .iter()
            .find(|f| f.name == point)
            .unwrap_or_else(|| {
                panic!("cell {c}: its failpoint {point:?} is not in failpoint::ALL")
            });
        assert!(
            fp.verbs.iter().any(|v| verbs.contains(v)),
            "cell {c}: {point} is reached by {:?}, the cell's test runs {verbs:?}",
            fp.verbs
        );
        assert!(
            runs_on(Kind::Zfs, c) || runs_on(Kind::Lvm, c),
            "cell {c} runs on no backend"
        );
    }
}
