//! What a failover would do, decided before anything is touched: the set
//! it fails over to, the copies it makes, the safety margin that applies
//! and the problems that refuse it.

use super::*;

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

/// The safety margins subtracted from the set's earliest member time: the
/// standby's own `[set] safety_margin` and the one the primary recorded in
/// the manifest. The larger applies.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Margin {
    pub standby_ms: i64,
    pub manifest_ms: i64,
    pub applied_ms: i64,
}

/// A manifest's margin above this is nonsense (wire input, refused).
pub const MAX_MANIFEST_MARGIN_MS: i64 = crate::base::model::MAX_SAFETY_MARGIN_MS;

impl Margin {
    pub fn new(standby_ms: i64, manifest_ms: i64) -> Margin {
        Margin {
            standby_ms,
            manifest_ms,
            applied_ms: standby_ms.max(manifest_ms),
        }
    }

    /// Which of the two applies, in words.
    pub fn applies(&self) -> &'static str {
        match self.standby_ms.cmp(&self.manifest_ms) {
            std::cmp::Ordering::Greater => "the standby's [set] safety_margin applies",
            std::cmp::Ordering::Less => "the manifest's safety_margin_ms applies",
            std::cmp::Ordering::Equal => "equal",
        }
    }

    /// Both margins from config and manifest; the manifest's is checked.
    pub fn of(cfg: &Config, s: &Manifest) -> Result<Margin> {
        let m = s.safety_margin_ms;
        if !(0..=MAX_MANIFEST_MARGIN_MS).contains(&m) {
            return Err(Error::integrity(format!(
                "set {}: its manifest's safety_margin_ms is {m}, not a margin (0 .. 1 day); refusing to compute a replay start from it",
                s.id
            ))
            .with_hint("choose another set with --set, or fix the primary's [set] safety_margin"));
        }
        let standby = i64::try_from(cfg.safety_margin.as_millis()).unwrap_or(i64::MAX);
        Ok(Margin::new(standby, m))
    }
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
    /// The instant the replay starts from (what `from_time_arg` stands for).
    pub from_time: Timestamp,
    /// `{from_time}` as handed to the replay command.
    pub from_time_arg: String,
    pub copies: Vec<PlannedCopy>,
    pub replay_argv: Option<Vec<String>>,
    #[serde(default)]
    pub margin: Margin,
    /// Why `from_time` is earlier than earliest member minus margin (a
    /// local time in a repeated DST hour), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time_note: Option<String>,
    /// Problems failover would meet (a pool too full for its copies), as
    /// seen when the plan was made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the copies need beyond their snapshots, as checked when the
    /// plan was made (ZFS: an encrypted replica's key status).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// Why a copy could not be made or used (a raw ZFS replica whose key
    /// is not loaded): the dry run fails on these, failover refuses before
    /// it changes anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The full set's skew: 0 when its members are one atomic snapshot.
    #[serde(default)]
    pub skew_ms: i64,
    #[serde(default)]
    pub atomic: bool,
    /// Suspect sets left out or accepted (issue 31).
    #[serde(default, skip_serializing_if = "SuspectChoice::is_empty")]
    pub suspect: SuspectChoice,
}

pub fn plan(cfg: &Config, requested: Option<&str>) -> Result<Plan> {
    plan_with(cfg, requested, None)
}

/// Where a plan's copies go instead of the live locations (rehearsal:
/// scratch clones, no mountpoints), per volume.
pub type Scratch<'a> = &'a dyn Fn(&Volume) -> Result<PathBuf>;

/// The plan, with the copies at `scratch` locations when given (then
/// `{mount:ROLE}` is the scratch location and nothing is mounted).
pub fn plan_with(cfg: &Config, requested: Option<&str>, scratch: Option<Scratch>) -> Result<Plan> {
    plan_choosing(cfg, requested, scratch, false)
}

/// The plan; `accept_suspect`: the newest sets even when the standby
/// judged them suspect (else the newest before the first suspect one).
pub fn plan_choosing(
    cfg: &Config,
    requested: Option<&str>,
    scratch: Option<Scratch>,
    accept_suspect: bool,
) -> Result<Plan> {
    // The newest sets are all the default choice needs (see
    // `Site::open_newest`); a requested set or suspect verdicts may reach
    // further back: those read the whole catalog.
    let suspects = super::suspect::suspects(cfg)?;
    let site = if requested.is_none() && suspects.is_empty() {
        crate::base::site::Site::open_newest(cfg)?
    } else {
        crate::base::site::Site::open(cfg)?
    };
    let listed = suspects.clone();
    let (mut s, mut r, mut suspect) =
        super::suspect::choose_among(cfg, &site, suspects, requested, accept_suspect)?;
    // The suspects came from verdicts.summary: the chosen sets' own files
    // have the last word. One that calls a chosen set suspect (the
    // summary did not) means the summary is wrong: choose again from
    // every verdict file.
    let whole;
    if let Some(id) = super::suspect::chosen_unlisted_suspect(cfg, &[s, r], &listed)? {
        tracing::warn!(set = %id, "verdicts.summary did not list a chosen set as suspect; choosing again from the verdict files");
        Catalog::new(&cfg.state_dir).forget_verdict_summary();
        whole = crate::base::site::Site::open(cfg)?;
        let suspects = super::suspect::suspects_from_files(cfg)?;
        (s, r, suspect) =
            super::suspect::choose_among(cfg, &whole, suspects, requested, accept_suspect)?;
    }
    let margin = Margin::of(cfg, s)?;
    let earliest = s
        .members
        .iter()
        .map(|m| m.before)
        .min()
        .ok_or_else(|| Error::integrity(format!("set {} has no members", s.id)))?;
    let wanted = earliest
        .checked_sub(jiff::SignedDuration::from_millis(margin.applied_ms))
        .map_err(|e| Error::integrity(format!("set {}: from_time out of range: {e}", s.id)))?;
    let (tf, tz) = match &cfg.replay {
        Some(rp) => (rp.time_format.clone(), rp.timezone.get()),
        None => (TimeFormat::Zmplayredo, jiff::tz::TimeZone::system()),
    };
    let rt = tf.format_for_replay(wanted, &tz);
    let from_time = rt.instant;
    let from_time_arg = rt.text;
    let redo = r.member(&cfg.redolog_role).expect("selected for it");
    let copies: Vec<PlannedCopy> = cfg
        .volumes
        .iter()
        .map(|v| {
            let (target, mountpoint) = match scratch {
                Some(f) => (f(v)?.display().to_string(), None),
                None => (v.source.clone(), v.mountpoint.clone()),
            };
            Ok(PlannedCopy {
                role: v.role.clone(),
                snapshot: if v.role == cfg.redolog_role {
                    r.id.clone()
                } else {
                    s.id.clone()
                },
                target,
                mountpoint,
            })
        })
        .collect::<Result<_>>()?;
    for c in &copies {
        if s.member(&c.role).is_none() {
            return Err(Error::storage(format!(
                "set {} has no member for volume `{}`",
                s.id, c.role
            )));
        }
    }
    let mut warnings = Vec::new();
    for v in &cfg.volumes {
        let store = backend::open(v);
        // Each check's finding, or why it could not be made: a warning.
        for (found, what) in [
            (store.parked_receive(), "parked receives"),
            (store.capacity_problem(), "free space"),
        ] {
            match found {
                Ok(Some(p)) => warnings.push(format!("volume `{}`: {p}", v.role)),
                Ok(None) => {}
                Err(e) => warnings.push(format!(
                    "volume `{}`: {what} could not be checked: {e}",
                    v.role
                )),
            }
        }
    }
    let (checks, problems) = copy_prerequisites(cfg, &copies)?;
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
        skew_ms: s.skew().as_millis() as i64,
        atomic: s.is_atomic(),
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
        margin,
        from_time_note: rt.note,
        warnings,
        checks,
        problems,
        suspect,
    })
}

/// Each copy's prerequisites, asked of its backend: (what was checked,
/// what would make the copy fail).
pub(super) fn copy_prerequisites(
    cfg: &Config,
    copies: &[PlannedCopy],
) -> Result<(Vec<String>, Vec<String>)> {
    let (mut checks, mut problems) = (Vec::new(), Vec::new());
    for c in copies {
        let vol = volume(cfg, &c.role)?;
        if let Some(found) = backend::open(vol).copy_prerequisites(&c.snapshot)? {
            checks.push(found.checked);
            problems.extend(found.problem);
        }
    }
    Ok((checks, problems))
}

/// A plan with problems is refused before anything is changed.
pub fn refuse_problems(plan: &Plan) -> Result<()> {
    if plan.problems.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "the copies of set {} could not be used: {}",
        plan.set_id,
        plan.problems.join("; ")
    ))
    .with_hint("fix what is named above, then run failover again (nothing was changed)"))
}
