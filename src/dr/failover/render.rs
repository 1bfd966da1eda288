//! A failover's plan and report as the text the CLI prints.

use super::*;

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
        "skew          {} ms{}\n",
        p.skew_ms,
        if p.atomic && p.set_members.len() > 1 {
            " (one atomic snapshot of every member)"
        } else {
            ""
        }
    ));
    s.push_str(&format!(
        "redolog       {} (snapshot {})\n",
        p.redolog_set_id,
        t(p.redolog_before)
    ));
    let secs = |ms: i64| format!("{:.3} s", ms as f64 / 1000.0);
    s.push_str(&format!(
        "margin        standby {}, manifest {}: {} ({} before the earliest snapshot)\n",
        secs(p.margin.standby_ms),
        secs(p.margin.manifest_ms),
        p.margin.applies(),
        secs(p.margin.applied_ms)
    ));
    s.push_str(&format!(
        "from_time     {}  ({} UTC)\n",
        p.from_time_arg, p.from_time
    ));
    if let Some(n) = &p.from_time_note {
        s.push_str(&format!("  note        {n}\n"));
    }
    let skipped = p.suspect.skipped.iter().map(|x| ("skipped ", x, ""));
    let accepted = (p.suspect.accepted.iter()).map(|x| ("ACCEPTED", x, " is used as asked"));
    for (head, x, tail) in skipped.chain(accepted) {
        s.push_str(&format!(
            "{head}      suspect set {} (score {:.2}){tail}\n",
            x.set_id, x.score
        ));
        for r in &x.reasons {
            s.push_str(&format!("  reason      {r}\n"));
        }
    }
    if let Some(c) = &p.suspect.cost {
        s.push_str(&format!("cost          {c}\n"));
    }
    for w in &p.warnings {
        s.push_str(&format!("WARNING       {w}\n"));
    }
    for c in &p.checks {
        s.push_str(&format!("checked       {c}\n"));
    }
    for pr in &p.problems {
        s.push_str(&format!("PROBLEM       {pr}\n"));
    }
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
            crate::base::cmd::display_argv(&a.iter().map(Into::into).collect::<Vec<_>>())
        )),
        None => s.push_str("replay        (none configured)\n"),
    }
    s
}

pub fn render_report(r: &Report) -> String {
    let tz = jiff::tz::TimeZone::system();
    let mut s = String::from("=== snapsite failover report ===\n");
    s.push_str(&format!("site          {}\n", r.plan.site));
    if let Some(a) = &r.aborted_session {
        s.push_str(&format!("session       {a}\n"));
    }
    s.push_str(&render_plan(&r.plan));
    for n in &r.notes {
        if Some(n) != r.aborted_session.as_ref() {
            s.push_str(&format!("note          {n}\n"));
        }
    }
    s.push_str(&format!(
        "recovery point {}: data written on the primary after it is not recovered ({:.1} s before failover started)\n",
        format_zmplayredo(r.recovery_point, &tz),
        r.data_loss_bound_seconds
    ));
    if let Some(rp) = r.stream.as_ref().and_then(|st| st.recovery_point) {
        let st = r.stream.as_ref().expect("some");
        s.push_str(&format!(
            "stream point  {} (primary's clock): the redolog spool added {} events, {} bytes; data written after it is not recovered\n",
            format_zmplayredo(rp, &tz),
            st.events_applied,
            st.bytes_applied
        ));
    }
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
    if let Some(g) = r.generation {
        s.push_str(&format!(
            "role          primary in generation {g} (a returning old primary refuses to ship to this site)\n"
        ));
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
