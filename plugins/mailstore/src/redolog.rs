//! The redolog volume: an append-only log of every operation, one record per
//! line, each line carrying a checksum of itself. A record is fsynced before
//! the operation touches any other store, so the log is always ahead of them
//! (write-ahead): after a crash, replaying the log from a time before the
//! stores' snapshots brings every store up to the log.
//!
//! Layout, like Zimbra's: `redo.log` is the live file; at `rollover_bytes` it
//! moves to `archive/redo-<first seq>.log` and a new `redo.log` starts.
//! Line format: `<16 hex of blake3(json)> <json>\n`. A crash mid-append can
//! leave a torn last line in `redo.log`; readers ignore it (that operation
//! never counted as done) and the writer cuts it off before appending.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const LIVE: &str = "redo.log";
pub const ARCHIVE: &str = "archive";

/// A message as delivered: everything needed to recreate the row, the blob
/// and the index entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub mailbox: String,
    pub sender: String,
    pub subject: String,
    pub body: String,
}

impl Message {
    pub fn digest(&self) -> String {
        blake3::hash(self.body.as_bytes()).to_hex().to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Deliver(Message),
    Delete { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// When the operation was logged (taken just before the append).
    pub ts: Timestamp,
    #[serde(flatten)]
    pub op: Op,
}

fn checksum(json: &str) -> String {
    blake3::hash(json.as_bytes()).to_hex()[..16].to_string()
}

pub fn encode(r: &Record) -> String {
    let json = serde_json::to_string(r).expect("records serialize");
    format!("{} {json}\n", checksum(&json))
}

/// One complete line (without its newline) back to a record.
pub fn decode(line: &str) -> std::result::Result<Record, String> {
    let (sum, json) = line
        .split_once(' ')
        .ok_or_else(|| "no checksum field".to_string())?;
    if checksum(json) != sum {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("bad record: {e}"))
}

/// The log files of a redolog directory in replay order: archived files by
/// first sequence number, then the live file.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut archived: Vec<(u64, PathBuf)> = Vec::new();
    let adir = dir.join(ARCHIVE);
    if adir.is_dir() {
        for e in std::fs::read_dir(&adir).with_context(|| format!("read {}", adir.display()))? {
            let p = e?.path();
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            if let Some(seq) = name
                .strip_prefix("redo-")
                .and_then(|s| s.strip_suffix(".log"))
                .and_then(|s| s.parse().ok())
            {
                archived.push((seq, p));
            }
        }
    }
    archived.sort();
    let mut files: Vec<PathBuf> = archived.into_iter().map(|(_, p)| p).collect();
    let live = dir.join(LIVE);
    if live.exists() {
        files.push(live);
    }
    Ok(files)
}

#[derive(Debug, Default)]
pub struct LogContents {
    pub records: Vec<Record>,
    /// Bytes of a torn last line in the live file (a crash mid-append).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
}

/// Read every record of the log. A bad line anywhere but at the very end of
/// the live file is corruption and an error, as is a gap in the sequence.
pub fn read_log(dir: &Path) -> Result<LogContents> {
    let files = log_files(dir)?;
    let mut out = LogContents::default();
    for (fi, path) in files.iter().enumerate() {
        let last_file = fi + 1 == files.len() && path.ends_with(LIVE);
        let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let mut offset = 0u64;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            let consumed = line.len() as u64 + u64::from(complete);
            let is_tail = offset + consumed == data.len() as u64;
            let parsed = std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|l| {
                    if complete {
                        decode(l)
                    } else {
                        Err("no newline".into())
                    }
                });
            match parsed {
                Ok(r) => {
                    if let Some(prev) = out.records.last()
                        && r.seq != prev.seq + 1
                    {
                        bail!(
                            "{}: redolog sequence jumps from {} to {}: a log file is missing",
                            path.display(),
                            prev.seq,
                            r.seq
                        );
                    }
                    out.records.push(r);
                }
                Err(_) if last_file && is_tail => {
                    out.torn_tail = Some((path.clone(), offset, consumed));
                }
                Err(e) => bail!("{}: corrupt record at byte {offset}: {e}", path.display()),
            }
            offset += consumed;
            rest = &rest[consumed as usize..];
        }
    }
    Ok(out)
}

/// Appends records durably. Single writer (the mail store's writer process).
pub struct RedoWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    first_seq_in_file: Option<u64>,
    pub next_seq: u64,
    rollover_bytes: u64,
}

/// fsync the directory `dir` (so that a create, rename or unlink in it is
/// durable).
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

impl RedoWriter {
    /// Open the log for appending; cuts a torn tail left by a crash.
    pub fn open(dir: &Path, rollover_bytes: u64) -> Result<(RedoWriter, Vec<Record>)> {
        std::fs::create_dir_all(dir.join(ARCHIVE))
            .with_context(|| format!("create {}", dir.join(ARCHIVE).display()))?;
        let contents = read_log(dir)?;
        let live = dir.join(LIVE);
        if let Some((path, offset, len)) = &contents.torn_tail {
            eprintln!(
                "mailstore: cutting a torn record ({len} bytes) off the end of {}",
                path.display()
            );
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(*offset)?;
            f.sync_all()?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&live)
            .with_context(|| format!("open {}", live.display()))?;
        fsync_dir(dir)?;
        let size = file.metadata()?.len();
        let next_seq = contents.records.last().map_or(1, |r| r.seq + 1);
        let first_seq_in_file = if size > 0 {
            // The live file's first record: the one after the archived ones.
            let in_archive: usize = log_files(dir)?
                .iter()
                .filter(|p| !p.ends_with(LIVE))
                .map(|p| {
                    std::fs::read(p)
                        .map(|d| d.iter().filter(|&&b| b == b'\n').count())
                        .unwrap_or(0)
                })
                .sum();
            contents.records.get(in_archive).map(|r| r.seq)
        } else {
            None
        };
        Ok((
            RedoWriter {
                dir: dir.to_path_buf(),
                file,
                size,
                first_seq_in_file,
                next_seq,
                rollover_bytes,
            },
            contents.records,
        ))
    }

    /// Log one operation: append, fsync, and only then return.
    pub fn append(&mut self, op: Op) -> Result<Record> {
        if self.size >= self.rollover_bytes {
            self.rollover()?;
        }
        let r = Record {
            seq: self.next_seq,
            ts: Timestamp::now(),
            op,
        };
        let line = encode(&r);
        self.file
            .write_all(line.as_bytes())
            .context("append to redo.log")?;
        self.file.sync_data().context("fsync redo.log")?;
        if self.size == 0 {
            // A new file: its directory entry must be durable too.
            fsync_dir(&self.dir)?;
        }
        self.size += line.len() as u64;
        self.first_seq_in_file.get_or_insert(r.seq);
        self.next_seq += 1;
        Ok(r)
    }

    fn rollover(&mut self) -> Result<()> {
        let first = self.first_seq_in_file.unwrap_or(self.next_seq);
        let to = self.dir.join(ARCHIVE).join(format!("redo-{first:012}.log"));
        std::fs::rename(self.dir.join(LIVE), &to).context("roll redo.log over")?;
        fsync_dir(&self.dir.join(ARCHIVE))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LIVE))?;
        fsync_dir(&self.dir)?;
        self.size = 0;
        self.first_seq_in_file = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> Op {
        Op::Deliver(Message {
            id,
            mailbox: "alice".into(),
            sender: "bob@example.org".into(),
            subject: format!("hello {id}"),
            body: format!("body of {id} with \"quotes\" and\nnewlines"),
        })
    }

    #[test]
    fn roundtrip_rollover_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, old) = RedoWriter::open(d.path(), 300).unwrap();
        assert!(old.is_empty());
        for i in 1..=10 {
            w.append(msg(i)).unwrap();
        }
        w.append(Op::Delete { id: 3 }).unwrap();
        drop(w);
        assert!(log_files(d.path()).unwrap().len() > 2, "rolled over");
        let c = read_log(d.path()).unwrap();
        assert_eq!(c.records.len(), 11);
        assert_eq!(c.records[10].op, Op::Delete { id: 3 });
        assert!(c.records.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let (mut w, old) = RedoWriter::open(d.path(), 300).unwrap();
        assert_eq!(old.len(), 11);
        assert_eq!(w.append(msg(11)).unwrap().seq, 12);
    }

    #[test]
    fn torn_tail_is_ignored_then_cut_but_corruption_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = RedoWriter::open(d.path(), 1 << 20).unwrap();
        w.append(msg(1)).unwrap();
        w.append(msg(2)).unwrap();
        drop(w);
        let live = d.path().join(LIVE);
        let good = std::fs::read(&live).unwrap();
        // A crash mid-append: half a line at the end.
        let mut torn = good.clone();
        torn.extend_from_slice(
            &encode(&Record {
                seq: 3,
                ts: Timestamp::now(),
                op: msg(3),
            })
            .as_bytes()[..20],
        );
        std::fs::write(&live, &torn).unwrap();
        let c = read_log(d.path()).unwrap();
        assert_eq!(c.records.len(), 2);
        assert!(c.torn_tail.is_some());
        let (mut w, _) = RedoWriter::open(d.path(), 1 << 20).unwrap();
        assert_eq!(w.append(msg(3)).unwrap().seq, 3);
        drop(w);
        assert_eq!(read_log(d.path()).unwrap().records.len(), 3);
        // A flipped byte in the middle is corruption.
        let mut bad = std::fs::read(&live).unwrap();
        bad[30] ^= 1;
        std::fs::write(&live, &bad).unwrap();
        let e = read_log(d.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt record at byte 0"), "{e}");
    }

    #[test]
    fn a_missing_archive_file_is_a_gap() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = RedoWriter::open(d.path(), 200).unwrap();
        for i in 1..=8 {
            w.append(msg(i)).unwrap();
        }
        drop(w);
        let files = log_files(d.path()).unwrap();
        std::fs::remove_file(&files[1]).unwrap();
        let e = read_log(d.path()).unwrap_err().to_string();
        assert!(e.contains("sequence jumps"), "{e}");
    }
}
