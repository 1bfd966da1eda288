//! Failover on the standby: pick the newest complete full set S and the
//! newest redolog snapshot R not older than S; make writable copies (the
//! received snapshots stay pristine), mount them, run the replay with
//! `{from_time}` = S's earliest member time, and report the truth: which set,
//! which redolog snapshot, the data-loss bound, replay status, durations.
//!
//! Progress is kept in `state_dir/failover/state.json`: an interrupted
//! failover resumes where it stopped; a failed step rolls back what this
//! failover created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backend;
use crate::catalog::{Catalog, read_json, write_json};
use crate::cmd::Cmd;
use crate::config::Config;
use crate::coordinator::{complete_locally, local_lists};
use crate::error::{Context, Error, Result};
use crate::model::{Manifest, SetKind};
use crate::replay::{TimeFormat, format_zmplayredo};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedCopy {
    pub role: String,
    /// Snapshot (set id) the writable copy is made from.
    pub snapshot: String,
    /// Where the writable copy is made (the volume's `source` here).
    pub target: String,
    pub mountpoint: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberTime {
    pub role: String,
    pub before: Timestamp,
    pub after: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub site: String,
    pub set_id: String,
    pub set_members: Vec<MemberTime>,
    /// The set the redolog copy comes from (S itself or a newer redolog set).
    pub redolog_set_id: String,
    pub redolog_before: Timestamp,
    pub redolog_after: Timestamp,
    pub from_time: Timestamp,
    /// `{from_time}` as handed to the replay command.
    pub from_time_arg: String,
    pub copies: Vec<PlannedCopy>,
    pub replay_argv: Option<Vec<String>>,
}

/// Pure selection: S = the requested or newest full set among `complete`,
/// R = the newest redolog-bearing set not older than S.
pub fn select<'a>(
    manifests: &'a [Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    redolog_role: &str,
    requested: Option<&str>,
) -> Result<(&'a Manifest, &'a Manifest)> {
    let fulls: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind == SetKind::Full)
        .collect();
    let s = match requested {
        Some(id) => {
            let m = fulls.iter().find(|m| m.id == id).ok_or_else(|| {
                Error::not_found(format!("no full set `{id}` on this site"))
                    .with_hint("`snapsite sets` lists them")
            })?;
            if !complete(m) {
                return Err(Error::not_found(format!(
                    "set {id} is not complete on this site"
                )));
            }
            *m
        }
        None => fulls
            .iter()
            .rev()
            .find(|m| complete(m))
            .copied()
            .ok_or_else(|| {
                Error::not_found("no complete full set on this standby").with_hint(
                    "ship one first: `snapsite snapshot && snapsite ship` on the primary",
                )
            })?,
    };
    s.member(redolog_role)
        .ok_or_else(|| Error::storage(format!("set {} has no `{redolog_role}` member", s.id)))?;
    // Order by sequence, never by the clock: a redolog snapshot taken after
    // S counts even when the primary's clock stepped back in between.
    let r = manifests
        .iter()
        .filter(|m| m.kind == SetKind::Redolog && complete(m))
        .filter(|m| m.member(redolog_role).is_some())
        .filter(|m| m.order_key() > s.order_key())
        .max_by_key(|m| m.order_key())
        .unwrap_or(s);
    Ok((s, r))
}

pub fn plan(cfg: &Config, requested: Option<&str>) -> Result<Plan> {
    let catalog = Catalog::new(&cfg.state_dir);
    let manifests = catalog.manifests()?;
    let lists = local_lists(cfg)?;
    let complete = |m: &Manifest| m.committed_at.is_some() && complete_locally(cfg, m, &lists);
    let (s, r) = select(&manifests, &complete, &cfg.redolog_role, requested)?;
    let from_time = s.from_time();
    let (tf, tz) = match &cfg.replay {
        Some(rp) => (rp.time_format.clone(), rp.timezone.clone()),
        None => (TimeFormat::Zmplayredo, jiff::tz::TimeZone::system()),
    };
    let from_time_arg = tf.format(from_time, &tz);
    let redo = r.member(&cfg.redolog_role).expect("selected for it");
    let copies: Vec<PlannedCopy> = cfg
        .volumes
        .iter()
        .map(|v| PlannedCopy {
            role: v.role.clone(),
            snapshot: if v.role == cfg.redolog_role {
                r.id.clone()
            } else {
                s.id.clone()
            },
            target: v.source.clone(),
            mountpoint: v.mountpoint.clone(),
        })
        .collect();
    for c in &copies {
        if s.member(&c.role).is_none() {
            return Err(Error::storage(format!(
                "set {} has no member for volume `{}`",
                s.id, c.role
            )));
        }
    }
    let mut vars = BTreeMap::new();
    vars.insert("from_time".to_string(), from_time_arg.clone());
    vars.insert(
        "from_time_utc".to_string(),
        TimeFormat::Rfc3339.format(from_time, &tz),
    );
    vars.insert("set_id".to_string(), s.id.clone());
    vars.insert("redolog_set_id".to_string(), r.id.clone());
    vars.insert("redolog_time".to_string(), tf.format(redo.before, &tz));
    for c in &copies {
        let at = c
            .mountpoint
            .clone()
            .unwrap_or_else(|| PathBuf::from(&c.target));
        vars.insert(format!("mount:{}", c.role), at.display().to_string());
    }
    Ok(Plan {
        site: cfg.site.clone(),
        set_id: s.id.clone(),
        set_members: s
            .members
            .iter()
            .map(|m| MemberTime {
                role: m.role.clone(),
                before: m.before,
                after: m.after,
            })
            .collect(),
        redolog_set_id: r.id.clone(),
        redolog_before: redo.before,
        redolog_after: redo.after,
        from_time,
        from_time_arg,
        copies,
        replay_argv: cfg.replay.as_ref().map(|rp| rp.command.render(&vars)),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct State {
    plan: Option<Plan>,
    started_at: Option<Timestamp>,
    /// Roles whose copy was about to be / has been made.
    copies_started: Vec<String>,
    copies_done: Vec<String>,
    mounts_done: Vec<String>,
    replay_exit: Option<i32>,
    completed_at: Option<Timestamp>,
    report: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayOutcome {
    pub argv: Vec<String>,
    pub exit_code: Option<i32>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub plan: Plan,
    /// Recovery point: data written on the primary after this instant (the
    /// redolog snapshot's before-time) is not on the standby.
    pub recovery_point: Timestamp,
    /// How old the recovery point was when failover started.
    pub data_loss_bound_seconds: f64,
    pub replay: Option<ReplayOutcome>,
    pub replay_skipped: bool,
    pub resumed: bool,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub seconds_copies: f64,
    pub seconds_mounts: f64,
    pub seconds_total: f64,
    pub report_path: Option<PathBuf>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.replay_skipped || self.replay.as_ref().is_none_or(|r| r.exit_code == Some(0))
    }
}

pub struct Options<'a> {
    pub set: Option<&'a str>,
    pub no_replay: bool,
}

fn stderr_stdio() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    }
}

fn state_path(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("failover").join("state.json")
}

fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The plan a (possibly resumed) failover would carry out, and whether it resumes.
pub fn current_plan(cfg: &Config, opts: &Options) -> Result<(Plan, bool)> {
    let sp = state_path(cfg);
    if sp.exists() {
        let st: State = read_json(&sp)?;
        if let Some(p) = st.plan {
            if st.completed_at.is_none() {
                if let Some(want) = opts.set {
                    if want != p.set_id {
                        return Err(Error::refused(format!(
                            "an interrupted failover with set {} is in progress; it must finish first", p.set_id
                        )).with_hint(format!("run `snapsite failover` without --set to resume it, or remove {} after undoing its copies", sp.display())));
                    }
                }
                return Ok((p, true));
            }
        }
    }
    Ok((plan(cfg, opts.set)?, false))
}

pub fn run(cfg: &Config, opts: &Options) -> Result<Report> {
    let catalog = Catalog::new(&cfg.state_dir);
    let _lock = catalog.lock("failover", std::time::Duration::from_secs(5))?;
    let sp = state_path(cfg);
    if sp.exists() {
        let st: State = read_json(&sp)?;
        if let Some(done) = st.completed_at {
            let prev = st
                .report
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(Error::refused(format!(
                "failover already completed at {done} (report: {prev})"
            ))
            .with_hint(format!("the standby is live; to fail over again, unmount and remove the copies and delete {}", sp.display())));
        }
    }
    let (plan, resumed) = current_plan(cfg, opts)?;
    let mut st: State = if resumed {
        read_json(&sp)?
    } else {
        State {
            plan: Some(plan.clone()),
            started_at: Some(Timestamp::now()),
            ..Default::default()
        }
    };
    write_json(&sp, &st)?;
    let started_at = Timestamp::now();
    let t0 = Instant::now();

    // 1. writable copies
    let result = (|| -> Result<()> {
        for c in &plan.copies {
            if st.copies_done.contains(&c.role) {
                continue;
            }
            let vol = cfg.volume(&c.role).ok_or_else(|| {
                Error::config(format!("volume `{}` vanished from the config", c.role))
            })?;
            let b = backend::for_volume(vol)?;
            if st.copies_started.contains(&c.role) && b.writable_copy_exists(vol)? {
                // Made by this failover before it was interrupted.
                tracing::info!(volume = %c.role, "resuming: writable copy already made");
            } else {
                if b.writable_copy_exists(vol)? {
                    return Err(Error::refused(format!(
                        "volume `{}`: {} already exists and was not made by this failover",
                        c.role, c.target
                    ))
                    .with_hint("move it away (it may be live data) and run failover again"));
                }
                st.copies_started.push(c.role.clone());
                write_json(&sp, &st)?;
                b.writable_copy(vol, &c.snapshot)?;
            }
            st.copies_done.push(c.role.clone());
            write_json(&sp, &st)?;
            eprintln!("  copy     {:<10} {} -> {}", c.role, c.snapshot, c.target);
        }
        Ok(())
    })();
    if let Err(e) = result {
        rollback(cfg, &mut st, &sp);
        return Err(e.context("failover failed; what it created was rolled back"));
    }
    let seconds_copies = t0.elapsed().as_secs_f64();

    // 2. mounts
    let t1 = Instant::now();
    let result = (|| -> Result<()> {
        for c in &plan.copies {
            let Some(mp) = &c.mountpoint else { continue };
            if st.mounts_done.contains(&c.role) {
                continue;
            }
            let vol = cfg.volume(&c.role).ok_or_else(|| {
                Error::config(format!("volume `{}` vanished from the config", c.role))
            })?;
            let data = backend::for_volume(vol)?.writable_copy_path(vol)?;
            if data == *mp {
                continue; // the backend mounted it there itself (ZFS clone)
            }
            if !is_mounted(mp) {
                std::fs::create_dir_all(mp).ctx(format!("create mountpoint {}", mp.display()))?;
                Cmd::new("mount")
                    .arg("--bind")
                    .arg(&data)
                    .arg(mp)
                    .run()
                    .ctx(format!("volume `{}`", c.role))?;
            }
            st.mounts_done.push(c.role.clone());
            write_json(&sp, &st)?;
            eprintln!(
                "  mount    {:<10} {} at {}",
                c.role,
                data.display(),
                mp.display()
            );
        }
        Ok(())
    })();
    if let Err(e) = result {
        rollback(cfg, &mut st, &sp);
        return Err(e.context("failover failed; what it created was rolled back"));
    }
    let seconds_mounts = t1.elapsed().as_secs_f64();

    // 3. replay
    let mut replay = None;
    let replay_skipped = opts.no_replay || plan.replay_argv.is_none();
    if !replay_skipped {
        let argv = plan.replay_argv.clone().expect("checked");
        eprintln!(
            "  replay   {}",
            crate::cmd::display_argv(&argv.iter().map(Into::into).collect::<Vec<_>>())
        );
        let t = Instant::now();
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("SNAPSITE_HOOK", "replay")
            .env("SNAPSITE_SET_ID", &plan.set_id)
            .env("SNAPSITE_REDOLOG_SET_ID", &plan.redolog_set_id)
            .env("SNAPSITE_FROM_TIME", &plan.from_time_arg)
            .env("SNAPSITE_FROM_TIME_UTC", plan.from_time.to_string())
            .stdin(Stdio::null())
            // Its output goes to our stderr: our stdout stays the report.
            .stdout(stderr_stdio())
            .status();
        let exit_code = match status {
            Ok(s) => s.code(),
            Err(e) => {
                eprintln!("  replay could not start: {e}");
                Some(127)
            }
        };
        st.replay_exit = exit_code;
        replay = Some(ReplayOutcome {
            argv,
            exit_code,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    let finished_at = Timestamp::now();
    let mut report = Report {
        recovery_point: plan.redolog_before,
        data_loss_bound_seconds: started_at.duration_since(plan.redolog_before).as_secs_f64(),
        plan,
        replay,
        replay_skipped,
        resumed,
        started_at,
        finished_at,
        seconds_copies,
        seconds_mounts,
        seconds_total: t0.elapsed().as_secs_f64(),
        report_path: None,
    };
    let path = cfg.state_dir.join("reports").join(format!(
        "failover-{}.json",
        finished_at.strftime("%Y%m%dT%H%M%S%.3fZ")
    ));
    report.report_path = Some(path.clone());
    write_json(&path, &report)?;
    st.report = Some(path);
    if report.ok() {
        st.completed_at = Some(finished_at);
    }
    write_json(&sp, &st)?;
    Ok(report)
}

/// Undo what this failover made: unmount, remove copies, forget the state.
fn rollback(cfg: &Config, st: &mut State, sp: &Path) {
    let Some(plan) = st.plan.clone() else { return };
    for c in plan.copies.iter().rev() {
        if st.mounts_done.contains(&c.role) {
            if let Some(mp) = &c.mountpoint {
                if let Err(e) = Cmd::new("umount").arg(mp).run() {
                    tracing::error!(volume = %c.role, error = %e, "rollback: unmount failed");
                }
            }
        }
        if st.copies_started.contains(&c.role) {
            if let Some(vol) = cfg.volume(&c.role) {
                if let Err(e) = backend::for_volume(vol).and_then(|b| b.remove_writable_copy(vol)) {
                    tracing::error!(volume = %c.role, error = %e, "rollback: could not remove writable copy");
                    return; // keep the state: a re-run must see what is left
                }
            }
        }
    }
    let _ = std::fs::remove_file(sp);
}

pub fn render_plan(p: &Plan) -> String {
    let mut s = String::new();
    let tz = jiff::tz::TimeZone::system();
    let t = |ts: Timestamp| format_zmplayredo(ts, &tz);
    s.push_str(&format!("full set      {}\n", p.set_id));
    for m in &p.set_members {
        s.push_str(&format!(
            "  {:<10} snapshot {} .. {}\n",
            m.role,
            t(m.before),
            t(m.after)
        ));
    }
    s.push_str(&format!(
        "redolog       {} (snapshot {})\n",
        p.redolog_set_id,
        t(p.redolog_before)
    ));
    s.push_str(&format!(
        "from_time     {}  ({} UTC)\n",
        p.from_time_arg, p.from_time
    ));
    for c in &p.copies {
        let at = c
            .mountpoint
            .as_ref()
            .map(|m| format!(", mounted at {}", m.display()))
            .unwrap_or_default();
        s.push_str(&format!(
            "copy          {:<10} {} -> {}{at}\n",
            c.role, c.snapshot, c.target
        ));
    }
    match &p.replay_argv {
        Some(a) => s.push_str(&format!(
            "replay        {}\n",
            crate::cmd::display_argv(&a.iter().map(Into::into).collect::<Vec<_>>())
        )),
        None => s.push_str("replay        (none configured)\n"),
    }
    s
}

pub fn render_report(r: &Report) -> String {
    let tz = jiff::tz::TimeZone::system();
    let mut s = String::from("=== snapsite failover report ===\n");
    s.push_str(&format!("site          {}\n", r.plan.site));
    s.push_str(&render_plan(&r.plan));
    s.push_str(&format!(
        "recovery point {}: data written on the primary after it is not recovered ({:.1} s before failover started)\n",
        format_zmplayredo(r.recovery_point, &tz),
        r.data_loss_bound_seconds
    ));
    match &r.replay {
        Some(rp) => s.push_str(&format!(
            "replay exit   {} after {:.2} s\n",
            rp.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed by a signal".into()),
            rp.seconds
        )),
        None => s.push_str("replay        skipped\n"),
    }
    s.push_str(&format!(
        "durations     copies {:.2} s, mounts {:.2} s, total {:.2} s{}\n",
        r.seconds_copies,
        r.seconds_mounts,
        r.seconds_total,
        if r.resumed { " (resumed)" } else { "" }
    ));
    if let Some(p) = &r.report_path {
        s.push_str(&format!("report        {}\n", p.display()));
    }
    s.push_str(if r.ok() {
        "result        OK\n"
    } else {
        "result        REPLAY FAILED\n"
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MANIFEST_FORMAT, Member};

    fn m(id: &str, kind: SetKind, roles: &[&str], before: &str) -> Manifest {
        let before: Timestamp = before.parse().unwrap();
        Manifest {
            format: MANIFEST_FORMAT,
            id: id.into(),
            kind,
            site: "a".into(),
            seq: 1,
            generation: 1,
            members: roles
                .iter()
                .enumerate()
                .map(|(i, r)| Member {
                    role: r.to_string(),
                    backend: "btrfs".into(),
                    source: "/x".into(),
                    snapshot: id.into(),
                    storage_id: None,
                    before: before + jiff::SignedDuration::from_secs(i as i64),
                    after: before + jiff::SignedDuration::from_millis(i as i64 * 1000 + 500),
                    atomic_group: None,
                    send_options: Vec::new(),
                    receipt: None,
                })
                .collect(),
            safety_margin_ms: 0,
            committed_at: Some(before),
        }
    }

    const ALL: &[&str] = &["mysql", "blob", "index", "redolog"];

    fn history() -> Vec<Manifest> {
        vec![
            m(
                "20261127T070000.000Z-full",
                SetKind::Full,
                ALL,
                "2026-11-27T07:00:00Z",
            ),
            m(
                "20261127T071500.000Z-redolog",
                SetKind::Redolog,
                &["redolog"],
                "2026-11-27T07:15:00Z",
            ),
            m(
                "20261127T080000.000Z-full",
                SetKind::Full,
                ALL,
                "2026-11-27T08:00:00Z",
            ),
            m(
                "20261127T081500.000Z-redolog",
                SetKind::Redolog,
                &["redolog"],
                "2026-11-27T08:15:00Z",
            ),
            m(
                "20261127T083000.000Z-redolog",
                SetKind::Redolog,
                &["redolog"],
                "2026-11-27T08:30:00Z",
            ),
        ]
    }

    #[test]
    fn newest_full_and_newest_redolog() {
        let h = history();
        let (s, r) = select(&h, &|_| true, "redolog", None).unwrap();
        assert_eq!(s.id, "20261127T080000.000Z-full");
        assert_eq!(r.id, "20261127T083000.000Z-redolog");
        assert_eq!(s.from_time().to_string(), "2026-11-27T08:00:00Z");
    }

    #[test]
    fn incomplete_sets_are_skipped() {
        let h = history();
        let (s, r) = select(
            &h,
            &|m| m.id != "20261127T080000.000Z-full" && m.id != "20261127T083000.000Z-redolog",
            "redolog",
            None,
        )
        .unwrap();
        assert_eq!(s.id, "20261127T070000.000Z-full");
        assert_eq!(r.id, "20261127T081500.000Z-redolog");
    }

    #[test]
    fn redolog_older_than_set_is_never_used() {
        let h = history()[..3].to_vec(); // newest full at 08:00, newest redolog 07:15
        let (s, r) = select(&h, &|_| true, "redolog", None).unwrap();
        assert_eq!(s.id, "20261127T080000.000Z-full");
        assert_eq!(r.id, s.id, "falls back to the set's own redolog member");
    }

    #[test]
    fn requested_set_and_errors() {
        let h = history();
        let (s, r) = select(&h, &|_| true, "redolog", Some("20261127T070000.000Z-full")).unwrap();
        assert_eq!(s.id, "20261127T070000.000Z-full");
        assert_eq!(r.id, "20261127T083000.000Z-redolog");
        assert!(
            select(
                &h,
                &|_| true,
                "redolog",
                Some("20261127T071500.000Z-redolog")
            )
            .is_err()
        );
        assert!(
            select(&h, &|_| false, "redolog", None)
                .unwrap_err()
                .to_string()
                .contains("no complete full set")
        );
        assert!(select(&[], &|_| true, "redolog", None).is_err());
    }

    #[test]
    fn order_is_by_sequence_not_by_clock() {
        // F1, then the clock steps back an hour: F2 and R2 carry earlier
        // times than F1 but later sequence numbers.
        let mut f1 = m(
            "20261127T090000.000Z-full",
            SetKind::Full,
            ALL,
            "2026-11-27T09:00:00Z",
        );
        f1.seq = 1;
        let mut f2 = m(
            "20261127T090000.001Z-full",
            SetKind::Full,
            ALL,
            "2026-11-27T08:05:00Z",
        );
        f2.seq = 2;
        let mut r2 = m(
            "20261127T090000.002Z-redolog",
            SetKind::Redolog,
            &["redolog"],
            "2026-11-27T08:10:00Z",
        );
        r2.seq = 3;
        let h = vec![f1, f2, r2];
        let (s, r) = select(&h, &|_| true, "redolog", None).unwrap();
        assert_eq!(s.seq, 2);
        assert_eq!(r.seq, 3, "the redolog snapshot taken after S is used");
    }
}
