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

/// The two-site lab plus C on its own pool or VG.
struct Three {
    s: Sites,
    c: ThirdSite,
    c_cfg: PathBuf,
    /// A's head (site, state dir, volumes), without a standby.
    a_head: String,
}

impl Three {
    fn new(kind: Kind) -> Three {
        let s = Sites::new(kind, false);
        let dir = s.dir.clone();
        let c = match kind {
            Kind::Zfs => ThirdSite::zfs("czc", 128 * MIB),
            Kind::Lvm => ThirdSite::lvm("clc", 256 * MIB, "192M"),
        };
        let mut vols = String::new();
        for r in ROLES {
            vols.push_str(&c.volume(r, Some(&dir.join("c").join(r))));
        }
        let c_cfg = write_config(
            &dir,
            "c",
            &format!("{}{vols}{NO_REPLAY}", site_head(&dir, "c")),
        );
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
        write_config(&self.s.dir, name, &text)
    }
}

pub(super) fn follow_cell(kind: Kind, fp: &str) {
    let t = Three::new(kind);
    let s = &t.s;
    let a_to_c = t.config(
        "a-to-c",
        format!("{}{}", t.a_head, local_standby(None, &t.c_cfg)),
    );
    let b_text = std::fs::read_to_string(&s.b_cfg).unwrap();
    let b_to_c = t.config(
        "b-to-c",
        format!("{b_text}{}", local_standby(None, &t.c_cfg)),
    );
    let c_text = std::fs::read_to_string(&t.c_cfg).unwrap();
    let c_follow = t.config(
        "c-follow",
        format!("{c_text}{}", local_standby(None, &s.b_cfg)),
    );
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
    s.fail_over_to_b(128 << 10);
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
    let objs = t.c.objects();
    for r in ROLES {
        match kind {
            Kind::Zfs => {
                let rep = t.c.replica(r);
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
            want.insert(t.c.name().to_string());
            want.insert(t.c.vol("replica"));
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
    let b2 = snapshot_id(&b_to_c);
    let shipped = snapsite_json(&b_to_c, &["ship", "--json"]);
    assert_eq!(shipped["committed"], serde_json::json!([b2]), "{shipped}");
    for x in shipped["snapshots"].as_array().unwrap() {
        assert_eq!(x["base"].as_str(), Some(s0.as_str()), "{fp}: {shipped}");
    }
    for r in ROLES {
        let (hb, hc) = match kind {
            Kind::Zfs => (
                zfs_get("guid", &format!("{}/live-{r}@{b2}", s.b_name)),
                zfs_get("guid", &format!("{}@{b2}", t.c.replica(r))),
            ),
            Kind::Lvm => (
                lv_hash(&s.b_name, &format!("live-{r}.{b2}")),
                lv_hash(t.c.name(), &format!("rep-{r}.{b2}")),
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
        Kind::Lvm => out.extend(lvm_common_tags(&s.a_name)),
    }
    out
}

pub(super) fn prune_release_cell(kind: Kind, fp: &str) {
    let t = Three::new(kind);
    let s = &t.s;
    let head = format!("{}[retention]\ngrid = \"1x1ms\"\n", t.a_head);
    let near = local_standby(Some("near"), &s.b_cfg);
    let far = local_standby(Some("far"), &t.c_cfg);
    let both = t.config("a-both", format!("{head}{near}{far}"));
    let near_only = t.config("a-near-only", format!("{head}{near}"));
    s.write("mysql", "m0", 1, 128 << 10);
    s.write("redolog", "log1", 2, 16 << 10);
    sh(&["sync"]);
    let s0 = snapshot_id(&both);
    snapsite_ok(&both, &["ship"]);
    s.write("mysql", "m1", 3, 128 << 10);
    sh(&["sync"]);
    let s1 = snapshot_id(&both);
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
    let s2 = snapshot_id(&near_only);
    let r = snapsite_json(&near_only, &["ship", "--json"]);
    assert!(r.to_string().contains(&s2), "{r}");
    assert!(!r.to_string().contains(&s0), "{fp}: s0 sent again: {r}");
}
