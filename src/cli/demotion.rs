//! What `failback` and `follow` print: both make this site the new
//! primary's standby, so one printer shows the plan (or, with `--json`, the
//! plan of a dry run / the report) and what was kept.

use std::process::ExitCode;

use serde::Serialize;
use snapsite::dr::failback::DivergentRecord;

/// The verb's outcome, for [`print`].
pub(super) struct Demotion<'a, P: Serialize, R: Serialize> {
    /// `failback` or `follow`.
    pub verb: &'a str,
    pub dry_run: bool,
    pub plan: &'a P,
    /// The plan as the verb renders it.
    pub rendered: String,
    /// The report and its divergent record (None: a dry run).
    pub report: Option<(&'a R, &'a DivergentRecord)>,
    /// After each kept snapshot's path (e.g. ` (read-only)`).
    pub kept_note: &'a str,
    /// The new primary and the generation this site is now its standby in.
    pub peer: &'a str,
    pub generation: u64,
}

pub(super) fn print<P: Serialize, R: Serialize>(
    d: Demotion<'_, P, R>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        match &d.report {
            Some((r, _)) => println!("{}", serde_json::to_string_pretty(r)?),
            None => println!("{}", serde_json::to_string_pretty(d.plan)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}{}",
        d.verb,
        if d.dry_run {
            " plan (dry run: nothing is changed)"
        } else {
            ""
        }
    );
    print!("{}", d.rendered);
    if let Some((_, divergent)) = d.report {
        for (role, at) in &divergent.snapshots {
            println!("kept          {role:<10} {at}{}", d.kept_note);
        }
        println!(
            "done          this site is the standby of {} in generation {}; run `snapsite ship` there",
            d.peer, d.generation
        );
    }
    Ok(ExitCode::SUCCESS)
}
