//! Three-site cells: `follow` (dr/follow.rs) stopped dead at each of its
//! failpoints and rerun, and prune's release of a standby that left the
//! config (ops/prune.rs: holds, then records, then snapshots) stopped
//! dead and rerun. The lab is [`Sites`] (A primary, B its standby) plus a
//! third site C on its own pool or VG.
//!
//! Follow: A ships a set to B and C (on ZFS one more to C alone, which
//! C's follow must set aside, never destroy), A dies, B fails over and
//! writes, C's `follow` of B stops at the point; the rerun finishes it.
//! Then C is B's standby in generation 2, no journal is left, C's storage
//! holds the common set's snapshots and (ZFS) the set-aside dataset with
//! A's extra set, read-only, nothing else; B's first ship to C is
//! incremental from the common set and the data are equal on both. LVM's
//! follow refuses a set-aside (nothing to set aside here), so
//! `follow.after_set_aside` is a ZFS cell only. Follow mounts nothing, so
//! it has no reboot variant.
//!
//! Prune release: A ships to standbys `near` (B) and `far` (C); near
//! moves on; far leaves A's config; prune stops dead at the point
//! (`after_intent`: nothing released yet; `after_member`: far's holds and
//! records released, the old set half destroyed) and is rerun. Then A
//! holds near's tag only, far's record is gone, A keeps only near's
//! common set, nothing is leaked, and near's next ship is incremental.

use super::*;

/// C's storage: a pool (ZFS) or a VG with a thin pool (LVM).
struct SiteC {
    name: String,
    _vg: Option<VolumeGroup>,
    _loop: Option<LoopDevice>,
    _pool: Option<Zpool>,
}

struct Three {
    s: Sites,
    c: SiteC,
    c_cfg: PathBuf,
    /// A's head (site, state dir, volumes), without a standby.
    a_head: String,
}

impl Three {
    fn new(kind: Kind) -> Three {
        let s = Sites::new(kind, false);
        let dir = s.dir.clone();
        let mut vols = String::new();
        let c = match kind {
            Kind::Zfs => {
                let p = Zpool::on_file(&unique_name("czc"), 128 * MIB, &[]);
                sh(&[
                    "zfs",
                    "create",
                    "-o",
                    "mountpoint=none",
                    &p.dataset("replica"),
                ]);
                for r in ROLES {
                    vols.push_str(&format!(
                        "[[volume]]\nrole = \"{r}\"\nbackend = \"zfs\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}/c/{r}\"\n",
                        p.dataset(&format!("live-{r}")),
                        p.dataset(&format!("replica/{r}")),
                        dir.display()
                    ));
                }
                SiteC {
                    name: p.name.clone(),
                    _vg: None,
                    _loop: None,
                    _pool: Some(p),
                }
            }
            Kind::Lvm => {
                let name = unique_name("clc");
                let lo = LoopDevice::attach(&sparse_file(&name, 256 * MIB));
                let vg = VolumeGroup::create(&name, &[&lo.path]);
                sh(&[
                    "lvcreate",
                    "-y",
                    "-L",
                    "192M",
                    "--chunksize",
                    "64k",
                    "-T",
                    &vg.lv("pool"),
                ]);
                for r in ROLES {
                    vols.push_str(&format!(
                        "[[volume]]\nrole = \"{r}\"\nbackend = \"lvm\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}/c/{r}\"\n",
                        vg.lv(&format!("live-{r}")),
                        vg.lv(&format!("rep-{r}")),
                        dir.display()
                    ));
                }
                SiteC {
                    name: vg.name.clone(),
                    _vg: Some(vg),
                    _loop: Some(lo),
                    _pool: None,
                }
            }
        };
        let c_cfg = dir.join("c.toml");
        std::fs::write(
            &c_cfg,
            format!(
                "site = \"c\"\nstate_dir = \"{}/state-c\"\n{vols}[replay]\nnone = true\n",
                dir.display()
            ),
        )
        .unwrap();
        let a = std::fs::read_to_string(&s.a_cfg).unwrap();
        let a_head = a[..a.find("[standby]").expect("A's config names its standby")].to_string();
        Three {
            s,
            c,
            c_cfg,
            a_head,
        }
    }

    /// Writes config `name` in the lab dir.
    fn config(&self, name: &str, text: String) -> PathBuf {
        let p = self.s.dir.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// C's snapshots and datasets (ZFS) or LVs (LVM), bookmarks left out.
    fn c_objects(&self) -> BTreeSet<String> {
        let out = match self.s.kind {
            Kind::Zfs => sh(&[
                "zfs",
                "list",
                "-H",
                "-o",
                "name",
                "-t",
                "all",
                "-r",
                &self.c.name,
            ]),
            Kind::Lvm => sh(&["lvs", "--noheadings", "-o", "lv_name", &self.c.name]),
        };
        out.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.contains('#'))
            .collect()
    }
}

fn local(name: Option<&str>, cfg: &Path) -> String {
    match name {
        None => format!(
            "[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
            cfg.display()
        ),
        Some(n) => format!(
            "[[standby]]\nname = \"{n}\"\ntransport = \"local\"\nconfig = \"{}\"\n",
            cfg.display()
        ),
    }
}

pub(super) fn follow_cell(kind: Kind, fp: &str) {
    let t = Three::new(kind);
    let s = &t.s;
    let a_to_c = t.config("a-to-c", format!("{}{}", t.a_head, local(None, &t.c_cfg)));
    let b_text = std::fs::read_to_string(&s.b_cfg).unwrap();
    let b_to_c = t.config("b-to-c", format!("{b_text}{}", local(None, &t.c_cfg)));
    let c_text = std::fs::read_to_string(&t.c_cfg).unwrap();
    let c_follow = t.config("c-follow", format!("{c_text}{}", local(None, &s.b_cfg)));
    // A's set on B and C; on ZFS one more on C alone.
    s.write("mysql", "m0", 1, 256 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    let s0 = s.snapshot();
    snapsite_ok(&s.a_cfg, &["ship"]);
    snapsite_ok(&a_to_c, &["ship"]);
    let a1 = (kind == Kind::Zfs).then(|| {
        s.write("mysql", "a-late", 3, 128 << 10);
        let a1 = s.snapshot();
        snapsite_ok(&a_to_c, &["ship"]);
        a1
    });
    // A dies; B fails over and writes.
    let f = snapsite_json(&s.b_cfg, &["failover", "--no-replay", "--json"]);
    assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
    for (i, r) in ROLES.iter().enumerate() {
        write_pattern(
            &s.dir.join("b").join(r).join("b-new"),
            0,
            20 + i as u64,
            128 << 10,
        );
    }
    sh(&["sync"]);
    // C's follow stops dead, then is rerun.
    crash(&c_follow, &["follow"], fp);
    let state_c = s.dir.join("state-c");
    assert!(
        state_c.join("journal-follow.json").exists(),
        "{fp}: no journal"
    );
    let v = snapsite_json(&c_follow, &["role", "--json"]);
    assert_eq!(v["interrupted"][0]["verb"].as_str(), Some("follow"), "{v}");
    assert_eq!(
        v["interrupted"][0]["finish"].as_str(),
        Some("snapsite follow"),
        "{v}"
    );
    snapsite_ok(&c_follow, &["follow"]);
    assert_eq!(role_of(&c_follow), ("standby".to_string(), 2));
    for e in std::fs::read_dir(&state_c).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with("journal-") && !n.contains(".tmp"),
            "{fp}: C left {n}"
        );
    }
    // C's storage: the common set's snapshots and, on ZFS, A's extra
    // set kept in a read-only set-aside dataset; nothing else.
    let mut want = BTreeSet::new();
    let objs = t.c_objects();
    for r in ROLES {
        match kind {
            Kind::Zfs => {
                let rep = format!("{}/replica/{r}", t.c.name);
                want.insert(rep.clone());
                want.insert(format!("{rep}@{s0}"));
                if let Some(a1) = &a1 {
                    let kept: Vec<&String> = objs
                        .iter()
                        .filter(|o| o.starts_with(&format!("{rep}-divergent-")) && !o.contains('@'))
                        .collect();
                    assert_eq!(kept.len(), 1, "{fp}: {r}: one set-aside dataset: {objs:?}");
                    let kept = kept[0].clone();
                    assert_eq!(zfs_get("readonly", &kept), "on", "{fp}: {kept}");
                    want.insert(format!("{kept}@{a1}"));
                    // The set-aside dataset keeps what it was cloned from.
                    for o in objs.iter().filter(|o| o.starts_with(&format!("{kept}@"))) {
                        want.insert(o.clone());
                    }
                    want.insert(kept);
                }
            }
            Kind::Lvm => {
                want.insert(format!("rep-{r}"));
                want.insert(format!("rep-{r}.{s0}"));
            }
        }
    }
    match kind {
        Kind::Zfs => {
            want.insert(t.c.name.clone());
            want.insert(format!("{}/replica", t.c.name));
        }
        Kind::Lvm => {
            want.insert("pool".to_string());
        }
    }
    assert_eq!(objs, want, "{fp}: C's storage");
    assert_eq!(
        manifests(&state_c).into_keys().collect::<Vec<_>>(),
        [s0.as_str()],
        "{fp}: C's sets are the common one"
    );
    // B's first ship to C: incremental from the common set, equal data.
    sh(&["sync"]);
    let b2 = snapsite_json(&b_to_c, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shipped = snapsite_json(&b_to_c, &["ship", "--json"]);
    assert_eq!(shipped["committed"], serde_json::json!([b2]), "{shipped}");
    for x in shipped["snapshots"].as_array().unwrap() {
        assert_eq!(x["base"].as_str(), Some(s0.as_str()), "{fp}: {shipped}");
    }
    for r in ROLES {
        let (hb, hc) = match kind {
            Kind::Zfs => (
                zfs_get("guid", &format!("{}/live-{r}@{b2}", s.b_name)),
                zfs_get("guid", &format!("{}/replica/{r}@{b2}", t.c.name)),
            ),
            Kind::Lvm => (
                lv_hash(&s.b_name, &format!("live-{r}.{b2}")),
                lv_hash(&t.c.name, &format!("rep-{r}.{b2}")),
            ),
        };
        assert_eq!(hb, hc, "{fp}: volume {r} of {b2}: B and C differ");
    }
}

/// The `snapsite-common*` holds (ZFS) or tags (LVM) on A's snapshots:
/// (role, set, tag).
fn a_holds(s: &Sites) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    match s.kind {
        Kind::Zfs => {
            for r in ROLES {
                for snap in s.snaps('a', r) {
                    let full = format!("{}/{r}@{snap}", s.a_name);
                    for l in sh(&["zfs", "holds", "-H", &full]).lines() {
                        if let Some(tag) = l.split('\t').nth(1) {
                            out.insert((r.to_string(), snap.clone(), tag.to_string()));
                        }
                    }
                }
            }
        }
        Kind::Lvm => {
            let text = sh(&[
                "lvs",
                "--noheadings",
                "--separator",
                "|",
                "-o",
                "lv_name,lv_tags",
                &s.a_name,
            ]);
            for l in text.lines() {
                let Some((name, tags)) = l.trim().split_once('|') else {
                    continue;
                };
                let Some((role, id)) = name.split_once('.') else {
                    continue;
                };
                for tag in tags.split(',').filter(|t| t.starts_with("snapsite-common")) {
                    out.insert((role.to_string(), id.to_string(), tag.to_string()));
                }
            }
        }
    }
    out
}

pub(super) fn prune_release_cell(kind: Kind, fp: &str) {
    let t = Three::new(kind);
    let s = &t.s;
    let head = format!("{}[retention]\ngrid = \"1x1ms\"\n", t.a_head);
    let near = local(Some("near"), &s.b_cfg);
    let far = local(Some("far"), &t.c_cfg);
    let both = t.config("a-both", format!("{head}{near}{far}"));
    let near_only = t.config("a-near-only", format!("{head}{near}"));
    s.write("mysql", "m0", 1, 128 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    sh(&["sync"]);
    let s0 = snapsite_json(&both, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    snapsite_ok(&both, &["ship"]);
    s.write("mysql", "m1", 3, 128 << 10);
    sh(&["sync"]);
    let s1 = snapsite_json(&both, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    snapsite_ok(&both, &["ship", "--to", "near"]);
    let h = a_holds(s);
    assert!(
        h.iter()
            .any(|(_, id, tag)| *id == s0 && tag == "snapsite-common-far"),
        "far holds s0: {h:?}"
    );
    // far leaves the config; prune stops dead, then is rerun.
    crash(&near_only, &["prune"], fp);
    let p = snapsite_json(&near_only, &["prune", "--json"]);
    let h = a_holds(s);
    let want: BTreeSet<_> = ROLES
        .iter()
        .map(|r| {
            (
                r.to_string(),
                s1.clone(),
                "snapsite-common-near".to_string(),
            )
        })
        .collect();
    assert_eq!(h, want, "{fp}: only near's holds, on s1: {p}");
    assert!(
        !s.state('a').join("standbys").join("far").exists(),
        "{fp}: far's record left"
    );
    assert_eq!(
        manifests(&s.state('a')).into_keys().collect::<Vec<_>>(),
        [s1.as_str()],
        "{fp}: A keeps near's common set only: {p}"
    );
    assert_eq!(
        s.objects('a'),
        s.expected_objects('a'),
        "{fp}: A's storage holds its volumes and its set's snapshots"
    );
    no_journal(s, 'a');
    // near's next ship: incremental from s1.
    s.write("mysql", "m2", 4, 64 << 10);
    sh(&["sync"]);
    let s2 = snapsite_json(&near_only, &["snapshot", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = snapsite_json(&near_only, &["ship", "--json"]);
    assert!(r.to_string().contains(&s2), "{r}");
    assert!(!r.to_string().contains(&s0), "{fp}: s0 sent again: {r}");
}
