//! Named failpoints: places in a multi-step verb where a test can stop the
//! process dead, the way a power cut or an OOM kill would, to prove that a
//! rerun finishes the work (tests/crash_matrix.rs).
//!
//! `failpoint!("demote.after_keep_divergent")` exits the process with
//! [`EXIT_CODE`] through `_exit` (no destructors, no buffered output, no
//! cleanup: the same as SIGKILL for everything on disk) when the
//! environment variable [`ENV`] names that point. Only debug builds and
//! builds with the cargo feature `failpoints` have them; in a release build
//! the macro compiles to nothing.
//!
//! Every failpoint is listed in [`ALL`] with the verb that reaches it and
//! the one-line recovery the runbook prints; the macro refuses, at compile
//! time, a name that is not listed there.

/// The environment variable naming the failpoint to stop at.
pub const ENV: &str = "SNAPSITE_FAILPOINT";

/// The exit status of a process stopped at a failpoint.
pub const EXIT_CODE: i32 = 86;

/// A failpoint: where it is, which verb reaches it, and how to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint {
    pub name: &'static str,
    /// The verbs whose run passes through it.
    pub verbs: &'static [&'static str],
    /// What the process had done when it stopped there.
    pub state: &'static str,
    /// The recovery (one line, for the runbook).
    pub recovery: &'static str,
}

const FB: &[&str] = &["failback", "switchover"];

/// Every failpoint, in the order a run reaches them.
pub const ALL: &[Failpoint] = &[
    Failpoint {
        name: "take_set.after_intent",
        verbs: &["snapshot", "switchover"],
        state: "the set's intent is in state_dir/pending/<id>.json; no snapshot taken",
        recovery: "nothing to finish by hand: the next `snapsite snapshot`, `ship` or `run` drops the intent",
    },
    Failpoint {
        name: "take_set.after_snapshot",
        verbs: &["snapshot", "switchover"],
        state: "some members of the set are snapshotted (one atomic group), no manifest",
        recovery: "nothing to finish by hand: the next `snapsite snapshot`, `ship` or `run` destroys the set's snapshots and drops the intent",
    },
    Failpoint {
        name: "catalog.before_summary",
        verbs: &["snapshot"],
        state: "a manifest is written (and its line in sets.index), sets.summary not yet updated (it describes the sets before it: stale); reached by every verb that writes a manifest, here a set's (its intent not yet removed)",
        recovery: "nothing to finish by hand: the next command that reads the catalog rebuilds sets.summary from the manifests; the next `snapsite snapshot`, `ship` or `run` keeps the set and drops the intent",
    },
    Failpoint {
        name: "take_set.after_manifest",
        verbs: &["snapshot", "switchover"],
        state: "the set is complete (manifest written); its intent is not yet removed",
        recovery: "nothing to finish by hand: the next `snapsite snapshot`, `ship` or `run` keeps the set and drops the intent",
    },
    Failpoint {
        name: "ship.after_ack",
        verbs: &["ship", "switchover"],
        state: "the standby acknowledged a snapshot (its receipt is durable there); its set's commit was sent, its answer not read; standby.json is not rewritten per ack (it says what the last recorded set left: behind)",
        recovery: "rerun `snapsite ship` (or let `run` do it): what the standby holds or committed is not sent again",
    },
    Failpoint {
        name: "ship.after_committed",
        verbs: &["ship", "switchover"],
        state: "the standby committed a set; this site has not recorded it (nor protected its members)",
        recovery: "rerun `snapsite ship`: the handshake shows the set committed; it is recorded and its members protected",
    },
    Failpoint {
        name: "ship.before_record",
        verbs: &["ship", "switchover"],
        state: "every set the session sent is committed on the standby and its members protected here; standby.json not yet rewritten for the last one (behind: it lacks that set and the session's end)",
        recovery: "rerun `snapsite ship` (or let `run` do it): the handshake shows the sets committed; nothing is sent again and the record is rewritten",
    },
    Failpoint {
        name: "serve.mid_receive",
        verbs: &["serve", "seed"],
        state: "standby: a snapshot's receive has started (marker and partial data in snapshot_dir), not verified, no receipt",
        recovery: "rerun `snapsite ship` on the primary: the next serve session stops the receive program the dead one left running, removes the partial receive (or the snapshot it finished unverified: no receipt) and the snapshot is sent again (resumed where the backend can)",
    },
    Failpoint {
        name: "serve.after_receipt",
        verbs: &["serve", "seed"],
        state: "standby: a snapshot is received and verified, its receipt written; the backend has not marked it complete (btrfs: the marker is still there), no ack sent",
        recovery: "rerun `snapsite ship`: the next serve session keeps the snapshot its receipt vouches for (btrfs and ZFS: nothing is sent again; LVM: that one snapshot is sent again and its receipt rewritten)",
    },
    Failpoint {
        name: "lvm.receive.after_snapshot",
        verbs: &["serve", "seed"],
        state: "standby, LVM: a snapshot's data are verified, its receipt written and its read-only snapshot LV made; no ack sent",
        recovery: "rerun `snapsite ship`: the snapshot its receipt vouches for is kept, nothing is sent again",
    },
    Failpoint {
        name: "serve.before_manifest",
        verbs: &["serve", "seed"],
        state: "standby: every member of a set is received and acknowledged; the set's commit arrived and was checked, no manifest written",
        recovery: "rerun `snapsite ship`: nothing is sent again; the set is committed",
    },
    Failpoint {
        name: "serve.after_manifest",
        verbs: &["serve", "seed"],
        state: "standby: the set's manifest is written (committed); its members not yet protected, no answer sent",
        recovery: "rerun `snapsite ship`: the handshake shows the set committed; a repeated commit protects its members",
    },
    Failpoint {
        name: "spool.after_append",
        verbs: &["spool"],
        state: "standby: a spool batch is appended to state_dir/spool/journal and fsynced; its ack is not sent (the primary sees a lost ack)",
        recovery: "nothing to finish by hand: the primary's follower reconnects, finds the standby at the batch it sent last and continues the spool (a resume, not a restart)",
    },
    Failpoint {
        name: "spool.checkpoint.after_rewrite",
        verbs: &["spool"],
        state: "standby: after a redolog set's commit, the spool journal is rewritten without the events the snapshot covers; spool/broken.json (if any) not yet removed, no answer sent",
        recovery: "rerun `snapsite ship` (or let `run` do it): the set is committed; the next matching checkpoint removes a stale broken.json, and failover matches the rewritten spool",
    },
    Failpoint {
        name: "seed.after_member",
        verbs: &["seed"],
        state: "`ship --to DIR`: a member's stream is in DIR/<set>.seed/part-*; no index.json (the seed is incomplete)",
        recovery: "rerun `snapsite ship --to DIR`: the half-written seed (parts, no index) is removed and written again",
    },
    Failpoint {
        name: "seed.before_index",
        verbs: &["seed"],
        state: "`ship --to DIR`: every part written and fsynced; no index.json (the seed is incomplete)",
        recovery: "rerun `snapsite ship --to DIR`: the half-written seed (parts, no index) is removed and written again",
    },
    Failpoint {
        name: "archive.after_part",
        verbs: &["archive"],
        state: "`archive`: the set's first two parts are in the bucket and recorded in state_dir/journal-archive-NAME.json; no index (the set is not archived)",
        recovery: "rerun `snapsite archive --to NAME` (or let `run` do it): the parts the bucket holds are used again, not re-sent; the rest and the index are written",
    },
    Failpoint {
        name: "archive.before_index",
        verbs: &["archive"],
        state: "`archive`: every part of the set is in the bucket and recorded in the journal; no index (the set is not archived)",
        recovery: "rerun `snapsite archive --to NAME` (or let `run` do it): no part is re-sent; the index is written",
    },
    Failpoint {
        name: "restore.mid_download",
        verbs: &["restore"],
        state: "`restore`: some parts of a set are downloaded and checked into state_dir/restore/SET.seed/ (the receive may have read the first ones); nothing of the set committed",
        recovery: "rerun `snapsite restore --from NAME` (the journal names the set): checked parts are kept, the others downloaded",
    },
    Failpoint {
        name: "restore.before_receive",
        verbs: &["restore"],
        state: "`restore`: every part of a set is downloaded and checked (the receive may have begun); nothing of it committed",
        recovery: "rerun `snapsite restore --from NAME`: nothing is downloaded again; the set is received",
    },
    Failpoint {
        name: "switchover.after_final_set",
        verbs: &["switchover"],
        state: "the final set is taken, nothing shipped",
        recovery: "rerun `snapsite switchover`: it ships the recorded final set (no new set) and demotes",
    },
    Failpoint {
        name: "switchover.after_ship",
        verbs: &["switchover"],
        state: "the final set is committed on the peer; this site is still primary",
        recovery: "rerun `snapsite switchover`: nothing is sent again; it plans the demote and does it",
    },
    Failpoint {
        name: "failback.after_plan",
        verbs: &["failback"],
        state: "the failback plan is recorded in state_dir/journal-failback.json; nothing changed yet",
        recovery: "rerun `snapsite failback`: it carries out the recorded plan (the peer is not asked again)",
    },
    Failpoint {
        name: "switchover.after_plan",
        verbs: &["switchover"],
        state: "the demote plan is recorded in state_dir/journal-switchover.json; nothing demoted yet",
        recovery: "rerun `snapsite switchover` (or, once the peer failed over, `snapsite failback`): it carries out the recorded plan",
    },
    Failpoint {
        name: "demote.after_keep_divergent",
        verbs: FB,
        state: "a volume's live data is kept as read-only divergent-<label>",
        recovery: "rerun the verb: the divergent snapshot is found and reused, not taken twice",
    },
    Failpoint {
        name: "zfs.keep_divergent.after_rename",
        verbs: FB,
        state: "ZFS: the live dataset is renamed to <source>-divergent-<label>; not yet read-only nor mounted under /run/snapsite/divergent",
        recovery: "rerun the verb: it finds the renamed dataset, makes it read-only and mounts it (nothing renamed twice)",
    },
    Failpoint {
        name: "zfs.keep_divergent.after_readonly",
        verbs: FB,
        state: "ZFS: the renamed dataset <source>-divergent-<label> is read-only with its mountpoint under /run/snapsite/divergent set, not yet mounted",
        recovery: "rerun the verb: it sets the same properties again and mounts the divergent dataset",
    },
    Failpoint {
        name: "lvm.keep_divergent.after_rename",
        verbs: FB,
        state: "LVM: the live LV is renamed to <lv>-divergent-<label>; not yet read-only nor tagged snapsite-divergent",
        recovery: "rerun the verb: it finds the renamed LV, makes it read-only and tags it (nothing renamed twice)",
    },
    Failpoint {
        name: "lvm.keep_divergent.after_umount",
        verbs: FB,
        state: "LVM: the live LV is unmounted from the volume's mountpoint, not yet renamed",
        recovery: "rerun the verb: the LV is not mounted, so it is renamed, made read-only and tagged",
    },
    Failpoint {
        name: "demote.after_divergent_record",
        verbs: FB,
        state: "state_dir/divergent/<label>.json is written",
        recovery: "rerun the verb: it moves the divergent sets out of the catalog and goes on",
    },
    Failpoint {
        name: "demote.after_sets_moved",
        verbs: FB,
        state: "the sets the peer never committed are under divergent/<label>/sets/",
        recovery: "rerun the verb: it marks the common sets committed and goes on",
    },
    Failpoint {
        name: "demote.after_mark_committed",
        verbs: FB,
        state: "the sets both sites hold are marked committed here",
        recovery: "rerun the verb: it unmounts and removes the live copies and goes on",
    },
    Failpoint {
        name: "demote.after_unmount",
        verbs: FB,
        state: "a live copy's mountpoint is unmounted",
        recovery: "rerun the verb: mountpoints already unmounted are skipped",
    },
    Failpoint {
        name: "demote.after_remove_copy",
        verbs: FB,
        state: "a volume's live copy is removed (its data is in divergent-<label>)",
        recovery: "rerun the verb: removed copies are skipped; it makes the bases receivable",
    },
    Failpoint {
        name: "btrfs.make_receivable.after_rename",
        verbs: FB,
        state: "btrfs: the base snapshot is renamed to .orig-<id>; its received form does not exist yet",
        recovery: "rerun the verb: it makes the received form from .orig-<id> and deletes .orig-<id> (no re-seed, no older base)",
    },
    Failpoint {
        name: "btrfs.make_receivable.after_copy",
        verbs: FB,
        state: "btrfs: <id>/<id> is a writable snapshot of .orig-<id> without a Received UUID",
        recovery: "rerun the verb: it sets the Received UUID, makes it read-only and deletes .orig-<id>",
    },
    Failpoint {
        name: "btrfs.make_receivable.after_received_uuid",
        verbs: FB,
        state: "btrfs: <id>/<id> has its Received UUID, still writable",
        recovery: "rerun the verb: it makes <id>/<id> read-only and deletes .orig-<id>",
    },
    Failpoint {
        name: "btrfs.make_receivable.after_readonly",
        verbs: FB,
        state: "btrfs: <id>/<id> is in the received form (read-only); .orig-<id> still exists",
        recovery: "rerun the verb: it checks the received form (no write to the read-only copy) and deletes .orig-<id>",
    },
    Failpoint {
        name: "zfs.make_receivable.after_destroy",
        verbs: FB,
        state: "ZFS: the replica, an empty clone left by promoting the live dataset, is destroyed; not yet cloned again from the base snapshot",
        recovery: "rerun the verb: the replica is missing, so it is cloned from the base snapshot and promoted",
    },
    Failpoint {
        name: "zfs.make_receivable.after_clone",
        verbs: FB,
        state: "ZFS: the replica is a clone of the base snapshot, not yet promoted (it holds no snapshot of its own)",
        recovery: "rerun the verb: the unpromoted clone is destroyed, cloned again and promoted",
    },
    Failpoint {
        name: "lvm.make_receivable.after_rename",
        verbs: FB,
        state: "LVM: one of this site's snapshot LVs is renamed into the replica's (or the divergent LV's) chain, not yet tagged with the uuid the peer knows it by",
        recovery: "rerun the verb: the other snapshots are renamed and every moved one without the tag gets it",
    },
    Failpoint {
        name: "demote.after_receivable",
        verbs: FB,
        state: "a volume's base is in the received form",
        recovery: "rerun the verb: bases already receivable are skipped",
    },
    Failpoint {
        name: "demote.after_failover_state",
        verbs: FB,
        state: "the completed failover's record is moved aside (state-until-<label>.json)",
        recovery: "rerun the verb: it records this site as the standby",
    },
    Failpoint {
        name: "demote.after_role_record",
        verbs: FB,
        state: "this site is recorded as the standby; the journal is not yet removed",
        recovery: "rerun the verb: it finds every step done and removes the journal",
    },
    Failpoint {
        name: "follow.after_plan",
        verbs: &["follow"],
        state: "the follow plan is recorded in state_dir/journal-follow.json; nothing changed yet",
        recovery: "rerun `snapsite follow`: it carries out the recorded plan (the new primary is not asked again)",
    },
    Failpoint {
        name: "follow.after_set_aside",
        verbs: &["follow"],
        state: "a volume's snapshots newer than the base are renamed divergent-<label>-<id> (kept)",
        recovery: "rerun `snapsite follow`: volumes already set aside are skipped",
    },
    Failpoint {
        name: "zfs.set_aside.after_rename",
        verbs: &["follow"],
        state: "ZFS: the replica is renamed <replica>-divergent-<label> (with every snapshot); no replica dataset yet",
        recovery: "rerun `snapsite follow`: the renamed dataset is made read-only and the replica cloned from its base",
    },
    Failpoint {
        name: "zfs.set_aside.after_clone",
        verbs: &["follow"],
        state: "ZFS: the replica is a clone of the set-aside dataset's base snapshot, not yet promoted",
        recovery: "rerun `snapsite follow`: the clone is promoted",
    },
    Failpoint {
        name: "follow.after_divergent_record",
        verbs: &["follow"],
        state: "state_dir/divergent/<label>.json (how = follow) is written",
        recovery: "rerun `snapsite follow`: it moves the divergent sets out of the catalog and goes on",
    },
    Failpoint {
        name: "follow.after_sets_moved",
        verbs: &["follow"],
        state: "the sets the new primary never committed are under divergent/<label>/sets/",
        recovery: "rerun `snapsite follow`: it marks the common sets committed and goes on",
    },
    Failpoint {
        name: "follow.after_mark_committed",
        verbs: &["follow"],
        state: "the sets both sites hold are marked committed here",
        recovery: "rerun `snapsite follow`: it makes the bases receivable and goes on",
    },
    Failpoint {
        name: "follow.after_receivable",
        verbs: &["follow"],
        state: "a volume's base is ready for the new primary's incremental streams",
        recovery: "rerun `snapsite follow`: bases already receivable are skipped",
    },
    Failpoint {
        name: "follow.after_role_record",
        verbs: &["follow"],
        state: "this site is recorded as the new primary's standby; the journal is not yet removed",
        recovery: "rerun `snapsite follow`: it finds every step done and removes the journal",
    },
    Failpoint {
        name: "failover.after_copy",
        verbs: &["failover"],
        state: "a volume's writable copy is made, not yet recorded in failover/state.json",
        recovery: "rerun `snapsite failover` (same --set, or none): the copy is checked against the plan and reused",
    },
    Failpoint {
        name: "zfs.writable_copy.after_clone",
        verbs: &["failover"],
        state: "ZFS: the writable clone of the received snapshot exists (mounted by `zfs clone` unless its pool does not mount it), not checked, not recorded as made",
        recovery: "rerun `snapsite failover`: the clone is checked and reused; a clone that is not mounted is mounted",
    },
    Failpoint {
        name: "lvm.writable_copy.after_snapshot",
        verbs: &["failover"],
        state: "LVM: the writable thin snapshot of the received snapshot exists, not yet mounted nor recorded as made",
        recovery: "rerun `snapsite failover`: the snapshot is reused and mounted at the volume's mountpoint",
    },
    Failpoint {
        name: "failover.after_mount",
        verbs: &["failover"],
        state: "btrfs: a copy is bind-mounted at its mountpoint, not yet recorded (ZFS and LVM mount the copy while making it, so they never reach this point)",
        recovery: "rerun `snapsite failover`: a copy already mounted is not mounted twice; after a reboot it is mounted again",
    },
    Failpoint {
        name: "failover.after_promote",
        verbs: &["failover"],
        state: "copies made and mounted; this site is recorded as the primary of the next generation; no replay yet",
        recovery: "rerun `snapsite failover`: it keeps the recorded generation and runs the replay",
    },
    Failpoint {
        name: "spool_apply.after_plan",
        verbs: &["failover"],
        state: "the spool's files are built and verified in <redolog copy>/.snapsite-spool-apply/, the plan written; the copy itself unchanged",
        recovery: "rerun `snapsite failover`: the interrupted apply is undone (the copy is the snapshot's content) and the spool applied again",
    },
    Failpoint {
        name: "spool_apply.after_backups",
        verbs: &["failover"],
        state: "the files the spool replaces are moved into <redolog copy>/.snapsite-spool-apply/; the new ones not yet in place",
        recovery: "rerun `snapsite failover`: the plan puts the moved files back (the copy is the snapshot's content) and the spool is applied again",
    },
    Failpoint {
        name: "spool_apply.after_done",
        verbs: &["failover"],
        state: "the spool is applied to the redolog copy and verified, the plan marked done; the scratch directory (old files) not yet removed",
        recovery: "rerun `snapsite failover`: the done plan's scratch directory is removed; the copy already holds the spool (nothing applied twice)",
    },
    Failpoint {
        name: "failover.after_replay",
        verbs: &["failover"],
        state: "the replay finished (its exit recorded); no report yet, the failover not recorded as complete",
        recovery: "rerun `snapsite failover`: a replay that exited 0 is not run again; it writes the report and completes",
    },
    Failpoint {
        name: "rehearse.after_clone",
        verbs: &["rehearse"],
        state: "a scratch clone (snapshot_dir/.rehearsal) is made; no replay yet",
        recovery: "rerun `snapsite rehearse` (or `snapsite prune`): the clones of the killed rehearsal are removed first",
    },
    Failpoint {
        name: "zfs.rehearsal_copy.after_clone",
        verbs: &["rehearse"],
        state: "ZFS: a rehearsal clone <replica>-rehearsal exists (recorded in rehearsal/state.json), its mount not yet checked",
        recovery: "rerun `snapsite rehearse` (or `snapsite prune`): the recorded clone is destroyed first",
    },
    Failpoint {
        name: "lvm.rehearsal_copy.after_snapshot",
        verbs: &["rehearse"],
        state: "LVM: a rehearsal thin snapshot exists (recorded in rehearsal/state.json), not yet mounted",
        recovery: "rerun `snapsite rehearse` (or `snapsite prune`): the recorded snapshot is removed first",
    },
    Failpoint {
        name: "rehearse.after_replay",
        verbs: &["rehearse"],
        state: "the replay ran on the clones; they are not torn down",
        recovery: "rerun `snapsite rehearse` (or `snapsite prune`): the clones of the killed rehearsal are removed first",
    },
    Failpoint {
        name: "rehearse.after_teardown",
        verbs: &["rehearse"],
        state: "the clones are removed; no report written",
        recovery: "nothing to finish (no verdict was recorded): rerun `snapsite rehearse` for one",
    },
    Failpoint {
        name: "prune.after_intent",
        verbs: &["prune", "run"],
        state: "the sets to prune are recorded in state_dir/journal-prune.json; nothing destroyed",
        recovery: "rerun `snapsite prune` (or let `run` do it): it plans again and prunes",
    },
    Failpoint {
        name: "prune.after_member",
        verbs: &["prune", "run"],
        state: "a set's first member snapshot is destroyed; its manifest is still there (the set is shown incomplete, never usable)",
        recovery: "rerun `snapsite prune`: the incomplete set is finished off (its other members, receipts and manifest)",
    },
    Failpoint {
        name: "prune.after_members",
        verbs: &["prune", "run"],
        state: "every member of a set is destroyed (and, on a standby, its receipts removed); its manifest is still there",
        recovery: "rerun `snapsite prune`: the manifest of the incomplete set is removed",
    },
    Failpoint {
        name: "prune.after_manifest",
        verbs: &["prune", "run"],
        state: "a set is pruned whole (manifest removed); the other sets of the plan not yet",
        recovery: "rerun `snapsite prune`: the rest of the plan is pruned",
    },
];

/// Whether `name` is listed in [`ALL`] (usable in a const context: the
/// macro checks its argument at compile time).
pub const fn known(name: &str) -> bool {
    let n = name.as_bytes();
    let mut i = 0;
    while i < ALL.len() {
        let m = ALL[i].name.as_bytes();
        if m.len() == n.len() {
            let mut j = 0;
            while j < n.len() && m[j] == n[j] {
                j += 1;
            }
            if j == n.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Stop here, now, if [`ENV`] names this failpoint.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {{
        const _: () = assert!(
            $crate::base::failpoint::known($name),
            "failpoint not listed in failpoint::ALL"
        );
        $crate::base::failpoint::hit($name)
    }};
}

#[cfg(any(debug_assertions, feature = "failpoints"))]
pub fn hit(name: &'static str) {
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        // A line on stderr so that a test (or a person) can tell where it
        // stopped; then out without unwinding, flushing or unmounting.
        let msg = format!("snapsite: stopped at failpoint {name}\n");
        // SAFETY: write(2) and _exit(2) on a valid buffer.
        unsafe {
            nix::libc::write(2, msg.as_ptr().cast(), msg.len());
            nix::libc::_exit(EXIT_CODE);
        }
    }
}

#[cfg(not(any(debug_assertions, feature = "failpoints")))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Whether this build has failpoints compiled in.
pub const ENABLED: bool = cfg!(any(debug_assertions, feature = "failpoints"));

/// The crash-recovery runbook: one line per failpoint (docs/crash-recovery.md).
pub fn runbook() -> String {
    let mut s = String::from(
        "# Crash recovery: one line per interrupted step\n\n\
         Generated from `src/base/failpoint.rs` (`failpoint::ALL`); tests/crash_matrix.rs\n\
         checks that this file matches it and crashes each verb at each point.\n\
         `snapsite status` and `snapsite role` name an interrupted verb and the command\n\
         that finishes it. Progress is kept in `state_dir/journal-<verb>.json`\n\
         (failback, follow, switchover, prune), `state_dir/failover/state.json` (failover) and\n\
         `state_dir/rehearsal/state.json` (rehearse). Stop at a point with\n\
         `SNAPSITE_FAILPOINT=<name>` (debug builds or `--features failpoints`; exit 86).\n\n\
         After a reboot (not a crash): the divergent data a completed failback or\n\
         switchover kept on ZFS (`<source>-divergent-<label>`, read-only,\n\
         `canmount=noauto`, mountpoint under /run/snapsite/divergent) is kept but\n\
         not mounted; nothing is lost. `snapsite role` lists each volume's kept data,\n\
         says whether it is mounted and gives the command that mounts it read-only\n\
         (`zfs mount <dataset>`); a rerun of an interrupted failback or switchover\n\
         mounts it by itself. On btrfs it is a read-only snapshot in the volume's\n\
         snapshot directory, on LVM a read-only LV (never mounted).\n\n\
         | failpoint | verbs | stopped after | recovery |\n\
         |---|---|---|---|\n",
    );
    for f in ALL {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.name,
            f.verbs.join(", "),
            f.state,
            f.recovery
        ));
    }
    s.push_str(SHIP_SYNCS);
    s
}

/// The runbook's section on the syncs of a ship: which exist, what each
/// makes durable, and which were cut (issue 27).
const SHIP_SYNCS: &str = "
## Syncs of a ship: what each makes durable

A ship's cost on a small change is mostly its syncs (1–8 ms each on a
virtual disk). Each one left is there because a power cut just before it
would make a record say more than the disk holds; the ones a record can do
without are gone (issue 27). \"Written\" below is temp file → fsync →
rename → fsync of the directory (`write_atomic`, 2 syncs) unless it says
otherwise.

Standby (`serve`), once a session:

- `serve.json`, written once (with the primary's name: the hello is checked
  first). Synced: after a power cut it must still say that a session died,
  so the next one removes a snapshot a receive finished with no receipt
  (ZFS, LVM: `remove_unverified`). Its removal at the end is not synced: a
  record a power cut brings back only makes the next session check for
  leftovers it does not have.

Standby, per snapshot received (the order is the guarantee: data durable →
receipt says so → marker gone):

- btrfs: the receive marker `.receiving-<id>` and the empty chroot, then one
  fsync of `snapshot_dir`: a power cut after the receive began must leave
  the marker, or the half-received directory would pass for a snapshot.
- the signals the meter measured (`signals/<role>/<id>.json`, when
  `[detect]` is on), written before the receipt: a receipt that survives a
  power cut has its signals, so the set's verdict at commit never lacks a
  volume's measure (before, they were written after the receipt).
- the receipt (`received/<role>/<id>.json`): the ack tells the primary the
  snapshot is here; the next session keeps a received snapshot only with
  its receipt. Written after the backend's receive is complete and its
  data durable — btrfs: the subvolume read-only with its Received UUID,
  then one `syncfs` of the receiving filesystem (added with this section:
  before it nothing wrote the received data back, and a `sync -f` right
  after a local ship of 80 MiB took 0.5 s, so a power cut could take a
  snapshot its receipt vouched for); ZFS: `zfs receive` returned (its end
  waits for the transaction group); LVM: the data fsynced and read back.
- the marker's removal: not synced (a marker a power cut brings back beside a
  receipt is adopted, `adopt_verified`).

Standby, per set: the manifest (the commit record) and its verdict. The
`sets.index` line and `sets.summary` are caches, not synced (a stale one is
rebuilt).

Primary (`ship`), per session:

- `peer.json` (what the peer said in the handshake: the split-brain record),
  written when the peer says something new (site, role, generation, a
  refusal) or when the one recorded was seen an hour ago or more (its
  `seen_at` is for display: `status` says when the peer last said it);
  a ship every few minutes to the same standby no longer rewrites it (2
  syncs) each time. A power cut can only leave the older record, which
  says the same.
- `standby.json`, the record of what the standby holds (prune's common
  snapshot, `status`): written once per committed set, the last set's write
  being the session's end (with `last_ship_ok`). Before, it was also written
  before the first snapshot was sent and after every acknowledged snapshot
  (4 volumes: 6 more writes, 12 syncs, per set). The standby's welcome and
  receipts are the truth; the record is a cache that a crash leaves behind,
  never ahead: it is written only after the standby's answers (every ack
  comes after that snapshot's receipt is synced there; the commit answer
  after the manifest), so it never names a snapshot or set the standby does
  not hold. Behind is safe: prune keeps the common snapshot the record
  names, an older one still on both sites (the standby keeps its newest
  committed set, and a snapshot acknowledged but not committed is never a
  standby's only base); ship plans from the welcome, not the record; `ship`
  and `prune` share the site lock, so no prune runs while a record is
  behind within a session; the next ship's handshake rewrites it. A set's
  members are protected (ZFS hold) before the record says it is committed,
  so a record that says so never leaves them unheld (the next ship protects
  only a set the record lacks). `standby.head.json` is a cache of the
  record, written by rename without sync (see `catalog::standbys`).
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_known() {
        let mut names: Vec<&str> = ALL.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(known("demote.after_unmount"));
        assert!(!known("demote.after_unmoun"));
        assert!(!known(""));
    }

    #[test]
    fn an_unnamed_point_does_nothing() {
        // The variable is not set in unit tests: this returns.
        crate::failpoint!("demote.after_unmount");
    }
}
