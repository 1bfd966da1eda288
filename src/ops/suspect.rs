//! Suspect sets on the standby (issue 31), for the admin: `status` turns
//! CRITICAL at the first uncleared suspect set and a notification goes out
//! once; `sets --clear-suspect ID` clears a set the admin knows to be
//! legitimate (a mass re-index, a restore, an upgrade), journaled.

use serde::Serialize;

use crate::base::catalog::Catalog;
use crate::base::catalog::signals::SetVerdict;
use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::ops::notify::Severity;

/// What `status` shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SuspectStatus {
    /// Sets judged (clean or suspect) and how many are suspect now.
    pub judged: usize,
    pub suspect: usize,
    pub cleared: usize,
    /// The oldest uncleared suspect set and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The newest set's score (how near it came to suspect).
    pub last_score: Option<f64>,
}

/// The oldest suspect set not cleared. From `verdicts.summary` when it
/// matches the files (names and stamps: `Catalog::checked_verdict_lines`)
/// and that set's own file agrees (read: suspect, not cleared); else from
/// every verdict file, as ever.
pub fn first_suspect(catalog: &Catalog) -> Result<Option<SetVerdict>> {
    if let Some(lines) = catalog.checked_verdict_lines() {
        match lines.iter().find(|l| l.is_suspect()) {
            None => return Ok(None),
            Some(l) => {
                // A file that disagrees drops the summary: read them all.
                if let Some(v) = catalog.listed_suspect(l)? {
                    return Ok(Some(v));
                }
            }
        }
    }
    Ok(catalog.verdicts()?.into_iter().find(|v| v.is_suspect()))
}

/// `None` when no set was judged on this site. From `verdicts.summary`'s
/// head (see `base::catalog::verdict_summary`: counts, the newest score,
/// the suspect sets; not its per-verdict lines) and the first suspect
/// set's file for its reasons; a file that disagrees with the summary
/// (that set is not suspect, or gone) drops the summary and every file is
/// read.
pub fn status(catalog: &Catalog) -> Result<Option<SuspectStatus>> {
    let head = catalog.verdict_head()?;
    if head.judged == 0 {
        return Ok(None);
    }
    let first = match head.suspects.first() {
        None => None,
        Some(l) => match catalog.listed_suspect(l)? {
            Some(v) => Some(v),
            None => return status_from_files(catalog),
        },
    };
    Ok(Some(SuspectStatus {
        judged: head.judged,
        suspect: head.suspects.len(),
        cleared: head.cleared,
        first: first.as_ref().map(|v| v.set_id.clone()),
        reasons: first.map(|v| v.reason_lines()).unwrap_or_default(),
        last_score: head.newest.map(|(_, score)| score),
    }))
}

/// [`status`] from every verdict file.
pub fn status_from_files(catalog: &Catalog) -> Result<Option<SuspectStatus>> {
    let all = catalog.verdicts()?;
    if all.is_empty() {
        return Ok(None);
    }
    let first = all.iter().find(|v| v.is_suspect());
    Ok(Some(SuspectStatus {
        judged: all.len(),
        suspect: all.iter().filter(|v| v.is_suspect()).count(),
        cleared: all.iter().filter(|v| v.cleared_at.is_some()).count(),
        first: first.map(|v| v.set_id.clone()),
        reasons: first.map(|v| v.reason_lines()).unwrap_or_default(),
        last_score: all.last().map(|v| v.score),
    }))
}

/// The headline of a suspect set.
pub fn message(s: &SuspectStatus) -> Option<String> {
    let first = s.first.as_ref()?;
    Some(format!(
        "ransomware suspected: set {first} ({} suspect set(s) not cleared): {}; failover uses the newest set before it; if this was legitimate, `snapsite sets --clear-suspect {first}`",
        s.suspect,
        s.reasons.join(" | ")
    ))
}

/// Metrics lines (Prometheus text; `site` already escaped).
pub fn render_metrics(s: &SuspectStatus, site: &str) -> String {
    let mut o = String::new();
    let mut g = |name: &str, help: &str, v: f64| {
        o.push_str(&format!(
            "# HELP snapsite_{name} {help}\n# TYPE snapsite_{name} gauge\nsnapsite_{name}{{site=\"{site}\"}} {v}\n"
        ));
    };
    g(
        "suspect_sets",
        "Sets judged suspect of ransomware and not cleared (standby)",
        s.suspect as f64,
    );
    g(
        "sets_judged",
        "Sets the standby judged on receive",
        s.judged as f64,
    );
    if let Some(x) = s.last_score {
        g(
            "last_set_suspect_score",
            "The newest set's suspect score (1 and above: suspect)",
            x,
        );
    }
    o
}

/// Notify once about the first suspect set (and once when none is left):
/// `state_dir/suspect-notified` holds the set last told about.
pub fn notify(cfg: &Config) -> Result<()> {
    let catalog = Catalog::new(&cfg.state_dir);
    let marker = cfg.state_dir.join("suspect-notified");
    let told = std::fs::read_to_string(&marker)
        .ok()
        .map(|t| t.trim().to_string());
    let s = status(&catalog)?;
    match s.as_ref().and_then(|s| s.first.clone().zip(message(s))) {
        Some((first, msg)) => {
            if told.as_deref() != Some(first.as_str()) {
                crate::ops::notify::event(
                    cfg.notify.as_ref(),
                    &cfg.site,
                    "suspect_set",
                    Severity::Critical,
                    &msg,
                );
                crate::base::catalog::write_atomic(&marker, format!("{first}\n").as_bytes())?;
            }
        }
        None => {
            if told.is_some() {
                crate::ops::notify::event(
                    cfg.notify.as_ref(),
                    &cfg.site,
                    "suspect_set",
                    Severity::Ok,
                    "no suspect set left on the standby",
                );
                let _ = std::fs::remove_file(&marker);
            }
        }
    }
    Ok(())
}

/// `sets --clear-suspect ID`: the set counts as clean again (for failover
/// and retention). Journaled: a rerun after a crash finishes it.
pub fn clear(cfg: &Config, id: &str, dry_run: bool) -> Result<String> {
    let catalog = Catalog::new(&cfg.state_dir);
    let v = catalog.verdict(id)?.ok_or_else(|| {
        Error::not_found(format!("set {id} has no verdict on this site"))
            .with_hint("`snapsite sets` lists the suspect sets")
    })?;
    if !v.is_suspect() {
        return Ok(format!("set {id} is not suspect: nothing to clear"));
    }
    let what = format!(
        "set {id} would be cleared: counted clean by failover and retention ({})",
        v.reason_lines().join(" | ")
    );
    if dry_run {
        return Ok(what);
    }
    let _lock = catalog.lock("sets --clear-suspect", std::time::Duration::from_secs(30))?;
    let mut j = crate::base::journal::begin(
        &catalog,
        "clear-suspect",
        &format!("snapsite sets --clear-suspect {id}"),
        &serde_json::json!({ "set": id }),
    )?;
    let mut v = v;
    v.cleared_at = Some(jiff::Timestamp::now());
    catalog.write_verdict(&v)?;
    j.done(&format!("clear:{id}"))?;
    j.finish()?;
    notify(cfg)?;
    Ok(format!("set {id} cleared: it counts as clean from now on"))
}

/// Retention on the standby while a suspect set is not cleared: the newest
/// complete full set before the first suspect one and the complete redolog
/// sets between the two (what failover uses by default) are protected,
/// whatever the grid says. Pure; `first`: the first suspect set's id.
pub fn protect_before_suspect(
    p: &mut std::collections::BTreeMap<String, String>,
    manifests: &[crate::base::model::Manifest],
    complete: &dyn Fn(&crate::base::model::Manifest) -> bool,
    redolog_role: &str,
    first: &str,
) {
    use crate::base::model::SetKind;
    // The suspect set itself may be pruned since: then its id's time.
    let f = manifests.iter().find(|m| m.id == first);
    let before = |m: &crate::base::model::Manifest| match f {
        Some(f) => m.order_key() < f.order_key(),
        None => crate::base::model::older_set(&m.id, first),
    };
    let Some(s) = manifests
        .iter()
        .filter(|m| m.kind == SetKind::Full && complete(m) && before(m))
        .max_by_key(|m| m.order_key())
    else {
        return;
    };
    let why = format!("the newest clean set before suspect set {first}");
    let mut add = |id: &str, why: &str| {
        p.entry(id.to_string())
            .and_modify(|r| {
                r.push_str("; ");
                r.push_str(why);
            })
            .or_insert_with(|| why.to_string());
    };
    add(&s.id, &why);
    for m in manifests.iter().filter(|m| {
        m.kind == SetKind::Redolog
            && complete(m)
            && before(m)
            && m.order_key() > s.order_key()
            && m.member(redolog_role).is_some()
    }) {
        add(
            &m.id,
            &format!("a redolog set before suspect set {first} (failover replays it)"),
        );
    }
}

/// [`protect_before_suspect`] for this site's first uncleared suspect set.
pub fn protect(
    p: &mut std::collections::BTreeMap<String, String>,
    catalog: &Catalog,
    manifests: &[crate::base::model::Manifest],
    complete: &dyn Fn(&crate::base::model::Manifest) -> bool,
    redolog_role: &str,
) -> Result<()> {
    if let Some(v) = first_suspect(catalog)? {
        protect_before_suspect(p, manifests, complete, redolog_role, &v.set_id);
    }
    Ok(())
}
