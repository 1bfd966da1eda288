//! mailstore: snapsite's reference application. It stores mail the way a
//! Zimbra-style server does, on four volumes — rows in MariaDB (mysql),
//! bodies as files (blob), a full-text index (index) and a write-ahead
//! redolog (redolog) — so that a failover drill can prove, with real data,
//! what snapsite promises: after failover everything up to the last shipped
//! redolog snapshot is back.
//!
//! - [`deliver`]: the write path: log (fsync) → blob → row → index.
//! - [`replay`]: zmplayredo's job: re-apply every logged operation from
//!   `--fromTime` on, idempotently, to all three stores.
//! - [`verify`]: the stores against each other and against the log.

pub mod drill;
pub mod fromtime;
pub mod redolog;
pub mod stores;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Result, bail};
use jiff::Timestamp;
use serde::Serialize;

use redolog::{Message, Op, Record, RedoWriter};
use stores::{Blobs, Db, Index, Volumes};

/// Create what the stores need (database and table, index, directories).
pub fn init(v: &Volumes) -> Result<()> {
    Db::new(v).init()?;
    Index::open(&v.index)?;
    std::fs::create_dir_all(&v.blob)?;
    RedoWriter::open(&v.redolog, u64::MAX)?;
    Ok(())
}

/// The application's write path for one operation. The operation counts as
/// done when this returns: the log record was fsynced first, then every
/// store was updated durably.
pub fn apply_live(
    v: &Volumes,
    log: &mut RedoWriter,
    db: &Db,
    index: &mut Index,
    op: Op,
) -> Result<Record> {
    let r = log.append(op)?;
    apply_to_blobs(&Blobs::new(&v.blob), &r)?;
    db.run(&Db::sql_for(&r))?;
    index.apply(&[&r])?;
    Ok(r)
}

fn apply_to_blobs(blobs: &Blobs, r: &Record) -> Result<()> {
    match &r.op {
        Op::Deliver(m) => blobs.put(m),
        Op::Delete { id } => blobs.delete(*id),
    }
}

/// A message made up from `seed` and `id`: a few mailboxes, a subject, a
/// body of ordinary words and one word unique to the message (`tok<id>`),
/// which verify searches for.
pub fn make_message(seed: u64, id: u64) -> Message {
    const WORDS: &[&str] = &[
        "invoice",
        "meeting",
        "standby",
        "snapshot",
        "quarterly",
        "report",
        "lunch",
        "server",
        "backup",
        "restore",
        "volume",
        "mailbox",
        "project",
        "budget",
        "schedule",
        "review",
        "failover",
        "replica",
        "disk",
        "network",
        "tomorrow",
        "monday",
        "contract",
        "draft",
    ];
    const BOXES: &[&str] = &["alice", "bob", "carol", "dave", "erin"];
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&id.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut next = || {
        let mut b = [0u8; 2];
        xof.fill(&mut b);
        u16::from_le_bytes(b) as usize
    };
    let mailbox = BOXES[next() % BOXES.len()].to_string();
    let sender = format!("{}@example.org", BOXES[next() % BOXES.len()]);
    let subject = (0..4)
        .map(|_| WORDS[next() % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let n = 40 + next() % 600;
    let mut body =
        format!("From: {sender}\nTo: {mailbox}@example.org\nSubject: {subject}\n\ntok{id}");
    for i in 0..n {
        body.push(if i % 12 == 11 { '\n' } else { ' ' });
        body.push_str(WORDS[next() % WORDS.len()]);
    }
    body.push('\n');
    Message {
        id,
        mailbox,
        sender,
        subject,
        body,
    }
}

#[derive(Debug, Serialize)]
pub struct ReplaySummary {
    pub from_time: Timestamp,
    pub records_in_log: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub replayed: usize,
    pub delivers: usize,
    pub deletes: usize,
    pub first_replayed_seq: Option<u64>,
    pub seconds: f64,
}

/// Re-apply every operation logged at or after `from`, in log order, to the
/// row store, the blobs and the index. Idempotent: running it again, or
/// from an earlier time, changes nothing more.
pub fn replay(v: &Volumes, from: Timestamp) -> Result<ReplaySummary> {
    let t0 = Instant::now();
    let log = redolog::read_log(&v.redolog)?;
    if let Some((p, _, len)) = &log.torn_tail {
        eprintln!(
            "mailstore replay: ignoring a torn last record ({len} bytes) in {}: it never counted as done",
            p.display()
        );
    }
    if let Some(first) = log.records.first()
        && first.seq != 1
        && first.ts > from
    {
        bail!(
            "the redolog does not reach back to --fromTime {from}: its oldest record is seq {} at {}; \
             operations between them would be lost (were archived logs deleted?)",
            first.seq,
            first.ts
        );
    }
    let todo: Vec<&Record> = log.records.iter().filter(|r| r.ts >= from).collect();
    // Rows: a few hundred statements per client run.
    let db = Db::new(v);
    for chunk in todo.chunks(500) {
        let sql: String = chunk.iter().map(|r| Db::sql_for(r)).collect();
        db.run(&sql)?;
    }
    let blobs = Blobs::new(&v.blob);
    for r in &todo {
        apply_to_blobs(&blobs, r)?;
    }
    Index::open(&v.index)?.apply(&todo)?;
    Ok(ReplaySummary {
        from_time: from,
        records_in_log: log.records.len(),
        first_seq: log.records.first().map(|r| r.seq),
        last_seq: log.records.last().map(|r| r.seq),
        replayed: todo.len(),
        delivers: todo
            .iter()
            .filter(|r| matches!(r.op, Op::Deliver(_)))
            .count(),
        deletes: todo
            .iter()
            .filter(|r| matches!(r.op, Op::Delete { .. }))
            .count(),
        first_replayed_seq: todo.first().map(|r| r.seq),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Default, Serialize)]
pub struct StoreDiff {
    /// Logged and live, but absent here.
    pub missing: Vec<u64>,
    /// Here, but not a live logged message.
    pub dangling: Vec<u64>,
    /// Present with other content than the log says.
    pub wrong_content: Vec<u64>,
}

impl StoreDiff {
    fn ok(&self) -> bool {
        self.missing.is_empty() && self.dangling.is_empty() && self.wrong_content.is_empty()
    }
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub records_in_log: usize,
    pub last_seq: Option<u64>,
    /// Messages the log says exist (delivered and not deleted).
    pub messages: usize,
    pub rows: StoreDiff,
    pub blobs: StoreDiff,
    pub index: StoreDiff,
    /// Messages whose unique word the full-text search did not find.
    pub search_misses: Vec<u64>,
    pub ok: bool,
    /// The live message ids (for the drill's verdict).
    #[serde(skip)]
    pub present: BTreeSet<u64>,
}

fn diff(expected: &BTreeMap<u64, String>, have: &BTreeMap<u64, Option<String>>) -> StoreDiff {
    let mut d = StoreDiff::default();
    for (id, digest) in expected {
        match have.get(id) {
            None => d.missing.push(*id),
            Some(Some(h)) if h != digest => d.wrong_content.push(*id),
            Some(_) => {}
        }
    }
    d.dangling = have
        .keys()
        .filter(|id| !expected.contains_key(id))
        .copied()
        .collect();
    d
}

/// Check the three stores against the log and each other: every message the
/// log says exists is in all three with the logged content, nothing else is.
pub fn verify(v: &Volumes) -> Result<VerifyReport> {
    let log = redolog::read_log(&v.redolog)?;
    let mut expected: BTreeMap<u64, String> = BTreeMap::new();
    for r in &log.records {
        match &r.op {
            Op::Deliver(m) => {
                expected.insert(m.id, m.digest());
            }
            Op::Delete { id } => {
                expected.remove(id);
            }
        }
    }
    let rows: BTreeMap<u64, Option<String>> = Db::new(v)
        .rows()?
        .into_iter()
        .map(|(k, d)| (k, Some(d)))
        .collect();
    let blobs: BTreeMap<u64, Option<String>> = Blobs::new(&v.blob)
        .list()?
        .into_iter()
        .map(|(k, d)| (k, Some(d)))
        .collect();
    let index = Index::open(&v.index)?;
    let docs: BTreeMap<u64, Option<String>> =
        index.ids()?.into_iter().map(|id| (id, None)).collect();
    let mut search_misses = Vec::new();
    for id in expected.keys() {
        if index.search(&format!("tok{id}"))? != vec![*id] {
            search_misses.push(*id);
        }
    }
    let rows = diff(&expected, &rows);
    let blobs = diff(&expected, &blobs);
    let index_diff = diff(&expected, &docs);
    let ok = rows.ok() && blobs.ok() && index_diff.ok() && search_misses.is_empty();
    Ok(VerifyReport {
        records_in_log: log.records.len(),
        last_seq: log.records.last().map(|r| r.seq),
        messages: expected.len(),
        rows,
        blobs,
        index: index_diff,
        search_misses,
        ok,
        present: expected.keys().copied().collect(),
    })
}

pub fn render_verify(r: &VerifyReport) -> String {
    let mut s = format!(
        "verify: {} record(s) in the redolog (last seq {}), {} message(s) live\n",
        r.records_in_log,
        r.last_seq.map_or("-".into(), |s| s.to_string()),
        r.messages
    );
    for (name, d) in [
        ("rows  ", &r.rows),
        ("blobs ", &r.blobs),
        ("index ", &r.index),
    ] {
        if d.ok() {
            s.push_str(&format!(
                "  {name} ok: every message present, nothing dangling\n"
            ));
        } else {
            s.push_str(&format!(
                "  {name} PROBLEM: missing {:?}, dangling {:?}, wrong content {:?}\n",
                first(&d.missing),
                first(&d.dangling),
                first(&d.wrong_content)
            ));
        }
    }
    if r.search_misses.is_empty() {
        s.push_str(&format!(
            "  search ok: each of the {} message(s) found by its unique word\n",
            r.messages
        ));
    } else {
        s.push_str(&format!(
            "  search PROBLEM: not found {:?}\n",
            first(&r.search_misses)
        ));
    }
    s.push_str(if r.ok {
        "verify: OK\n"
    } else {
        "verify: FAILED\n"
    });
    s
}

fn first(v: &[u64]) -> Vec<u64> {
    v.iter().take(10).copied().collect()
}
