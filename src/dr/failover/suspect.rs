//! Which sets failover may use when the standby judged some suspect
//! (issue 31): by default none from the first uncleared suspect set on —
//! the recovery point moves back to before the attack; `--set` names a
//! set and `--accept-suspect` takes the newest as before, each saying what
//! it accepts.

use super::*;
use crate::base::catalog::signals::SetVerdict;

/// A suspect set the plan left out (or accepted), and why it is suspect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuspectSet {
    pub set_id: String,
    pub score: f64,
    /// One line per suspect volume.
    pub reasons: Vec<String>,
}

/// What the verdicts did to a plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SuspectChoice {
    /// Suspect sets left out (default).
    pub skipped: Vec<SuspectSet>,
    /// Sets at or after the first suspect one that the plan uses anyway
    /// (`--set` or `--accept-suspect`).
    pub accepted: Vec<SuspectSet>,
    /// What leaving them out costs, in words.
    pub cost: Option<String>,
}

impl SuspectChoice {
    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.accepted.is_empty()
    }
}

fn entry(v: &SetVerdict) -> SuspectSet {
    SuspectSet {
        set_id: v.set_id.clone(),
        score: v.score,
        reasons: v.reason_lines(),
    }
}

/// The sets the standby judged suspect (not cleared): the ones
/// `verdicts.summary`'s head lists (its per-verdict lines are not read),
/// each read from its file (for its reasons). A file that disagrees (not
/// suspect, or gone) drops the summary, and every file is read
/// ([`suspects_from_files`]); so do the chosen sets' own files
/// ([`chosen_unlisted_suspect`]).
pub fn suspects(cfg: &Config) -> Result<Vec<SetVerdict>> {
    let catalog = Catalog::new(&cfg.state_dir);
    let mut out = Vec::new();
    for l in &catalog.verdict_head()?.suspects {
        match catalog.listed_suspect(l)? {
            Some(v) => out.push(v),
            None => return suspects_from_files(cfg),
        }
    }
    Ok(out)
}

/// The suspect sets from every verdict file (the truth).
pub fn suspects_from_files(cfg: &Config) -> Result<Vec<SetVerdict>> {
    Ok(Catalog::new(&cfg.state_dir)
        .verdicts()?
        .into_iter()
        .filter(|v| v.is_suspect())
        .collect())
}

/// Whether the chosen sets' own verdict files call one of them suspect
/// although `suspects` (from the summary) did not list it: the summary
/// lied, and the choice must be made again from the files.
pub fn chosen_unlisted_suspect(
    cfg: &Config,
    chosen: &[&Manifest],
    suspects: &[SetVerdict],
) -> Result<Option<String>> {
    let catalog = Catalog::new(&cfg.state_dir);
    for m in chosen {
        if suspects.iter().any(|v| v.set_id == m.id) {
            continue;
        }
        if catalog.verdict(&m.id)?.is_some_and(|v| v.is_suspect()) {
            return Ok(Some(m.id.clone()));
        }
    }
    Ok(None)
}

/// S and R for failover, honouring the verdicts (the suspect sets, as
/// [`suspects`] read them): returns them with what was skipped or accepted.
pub fn choose_among<'a>(
    cfg: &Config,
    site: &'a crate::base::site::Site,
    suspects: Vec<SetVerdict>,
    requested: Option<&str>,
    accept_suspect: bool,
) -> Result<(&'a Manifest, &'a Manifest, SuspectChoice)> {
    // The first suspect set in the standby's order; one pruned since
    // still counts, by its id's time.
    let first = suspects
        .iter()
        .filter_map(|v| site.manifest(&v.set_id))
        .min_by(|a, b| a.order_key().cmp(&b.order_key()));
    let first_id = match (first, suspects.first()) {
        (Some(m), _) => m.id.clone(),
        (None, Some(v)) => v.set_id.clone(),
        (None, None) => {
            let (s, r) = site.failover_pair(requested)?;
            return Ok((s, r, SuspectChoice::default()));
        }
    };
    let tainted = |m: &Manifest| match first {
        Some(f) => m.order_key() >= f.order_key(),
        None => !crate::base::model::older_set(&m.id, &first_id),
    };
    let mut choice = SuspectChoice::default();
    if requested.is_some() || accept_suspect {
        let (s, r) = site.failover_pair(requested)?;
        for v in &suspects {
            if [s, r].iter().any(|m| m.id == v.set_id)
                || ((tainted(s) || tainted(r))
                    && site
                        .manifest(&v.set_id)
                        .is_some_and(|m| m.order_key() <= r.order_key()))
            {
                choice.accepted.push(entry(v));
            }
        }
        if choice.accepted.is_empty() && (tainted(s) || tainted(r)) {
            choice.accepted.push(entry(&suspects[0]));
        }
        return Ok((s, r, choice));
    }
    let (s, r) = crate::base::site::select(
        site.manifests(),
        &|m| site.is_usable(m) && !tainted(m),
        &cfg.redolog_role,
        None,
    )
    .map_err(|e| {
        Error::refused(format!(
            "no usable set before the first suspect set {first_id} ({e})"
        ))
        .with_hint("`snapsite sets` shows why it is suspect; `--accept-suspect` fails over to the newest set anyway, `--set ID` to one you choose")
    })?;
    choice.skipped = suspects
        .iter()
        .filter(|v| site.manifest(&v.set_id).is_some_and(|m| site.is_usable(m)))
        .map(entry)
        .collect();
    if let Ok((_, r0)) = site.failover_pair(None) {
        if r0.id != r.id {
            let at = |m: &Manifest| m.member(&cfg.redolog_role).map(|x| x.before);
            if let (Some(was), Some(now)) = (at(r0), at(r)) {
                let back = was.duration_since(now);
                choice.cost = Some(format!(
                    "the recovery point moves back from {was} (set {}) to {now} (set {}), {} earlier, before the first suspect set {}",
                    r0.id,
                    r.id,
                    humantime::format_duration(std::time::Duration::from_secs(
                        back.as_secs().max(0) as u64
                    )),
                    first_id
                ));
            }
        }
    }
    Ok((s, r, choice))
}
