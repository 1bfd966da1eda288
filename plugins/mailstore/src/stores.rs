//! The three stores a redolog operation lands in, each on its own volume:
//!
//! - **mysql**: one row per message in a real MariaDB server (its datadir is
//!   on the mysql volume), reached through the `mariadb` client with SQL on
//!   stdin (argv only; values travel as hex literals, never spliced text);
//! - **blob**: the message body as a file, written temp → fsync → rename;
//! - **index**: an SQLite FTS5 full-text index (`index.sqlite`, WAL,
//!   synchronous=FULL), rowid = message id.
//!
//! Every write is idempotent: applying an operation twice leaves the same
//! state as applying it once, which is what makes replay from a time before
//! the snapshots safe.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::redolog::{Message, Record, fsync_dir};

pub const DATABASE: &str = "mailstore";

/// Where the stores live: the four volumes.
#[derive(Debug, Clone, clap::Args)]
pub struct Volumes {
    /// MariaDB socket (the server's datadir is on the mysql volume)
    #[arg(long)]
    pub socket: PathBuf,
    /// The blob volume
    #[arg(long)]
    pub blob: PathBuf,
    /// The index volume
    #[arg(long)]
    pub index: PathBuf,
    /// The redolog volume
    #[arg(long)]
    pub redolog: PathBuf,
    /// MariaDB client program
    #[arg(long, default_value = "mariadb")]
    pub mysql_client: String,
}

fn hex(s: &str) -> String {
    let mut out = String::with_capacity(2 * s.len() + 30);
    out.push_str("CONVERT(X'");
    for b in s.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str("' USING utf8mb4)");
    out
}

pub struct Db {
    socket: PathBuf,
    client: String,
}

impl Db {
    pub fn new(v: &Volumes) -> Db {
        Db {
            socket: v.socket.clone(),
            client: v.mysql_client.clone(),
        }
    }

    /// Run SQL (one or more statements) through the client; returns its
    /// tab-separated output. The client stops at the first error.
    pub fn run(&self, sql: &str) -> Result<String> {
        let mut child = Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start `{}` (apt-get install mariadb-client)", self.client))?;
        let mut stdin = child.stdin.take().expect("piped");
        // Write in a thread: the client may answer before it read all input.
        let input = sql.to_string();
        let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output()?;
        let fed = feeder.join().expect("feeder thread");
        if !out.status.success() {
            bail!(
                "{} --socket={}: {}: {}",
                self.client,
                self.socket.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        fed.context("write SQL to the mariadb client")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn init(&self) -> Result<()> {
        self.run(&format!(
            "CREATE DATABASE IF NOT EXISTS {DATABASE};
             CREATE TABLE IF NOT EXISTS {DATABASE}.messages (
               id BIGINT UNSIGNED PRIMARY KEY,
               mailbox VARCHAR(64) NOT NULL,
               sender VARCHAR(255) NOT NULL,
               subject VARCHAR(255) NOT NULL,
               size INT UNSIGNED NOT NULL,
               blob_digest CHAR(64) NOT NULL,
               seq BIGINT UNSIGNED NOT NULL,
               logged_at VARCHAR(40) NOT NULL
             ) ENGINE=InnoDB;"
        ))
        .map(|_| ())
    }

    /// The SQL for one record: an upsert or a delete. Autocommit: each
    /// statement is its own durable transaction.
    pub fn sql_for(r: &Record) -> String {
        match &r.op {
            crate::redolog::Op::Deliver(m) => format!(
                "INSERT INTO {DATABASE}.messages (id, mailbox, sender, subject, size, blob_digest, seq, logged_at) \
                 VALUES ({}, {}, {}, {}, {}, '{}', {}, '{}') \
                 ON DUPLICATE KEY UPDATE mailbox=VALUES(mailbox), sender=VALUES(sender), subject=VALUES(subject), \
                 size=VALUES(size), blob_digest=VALUES(blob_digest), seq=VALUES(seq), logged_at=VALUES(logged_at);\n",
                m.id,
                hex(&m.mailbox),
                hex(&m.sender),
                hex(&m.subject),
                m.body.len(),
                m.digest(),
                r.seq,
                r.ts
            ),
            crate::redolog::Op::Delete { id } => {
                format!("DELETE FROM {DATABASE}.messages WHERE id = {id};\n")
            }
        }
    }

    /// id -> blob digest of every row.
    pub fn rows(&self) -> Result<BTreeMap<u64, String>> {
        let out = self.run(&format!(
            "SELECT id, blob_digest FROM {DATABASE}.messages ORDER BY id;"
        ))?;
        let mut rows = BTreeMap::new();
        for line in out.lines() {
            let (id, digest) = line
                .split_once('\t')
                .with_context(|| format!("unexpected row `{line}`"))?;
            rows.insert(id.parse()?, digest.to_string());
        }
        Ok(rows)
    }
}

pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub fn new(root: &Path) -> Blobs {
        Blobs {
            root: root.to_path_buf(),
        }
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.root
            .join(format!("{:04}", id / 1000))
            .join(format!("{id}.msg"))
    }

    pub fn put(&self, m: &Message) -> Result<()> {
        let p = self.path(m.id);
        let dir = p.parent().expect("has a parent");
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            fsync_dir(&self.root)?;
        }
        let tmp = dir.join(format!(".{}.tmp", m.id));
        let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(m.body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p).with_context(|| format!("rename to {}", p.display()))?;
        fsync_dir(dir)
    }

    pub fn delete(&self, id: u64) -> Result<()> {
        let p = self.path(id);
        match std::fs::remove_file(&p) {
            Ok(()) => fsync_dir(p.parent().expect("has a parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", p.display())),
        }
    }

    /// id -> blake3 of the content, for every blob (temp files ignored).
    pub fn list(&self) -> Result<BTreeMap<u64, String>> {
        let mut out = BTreeMap::new();
        if !self.root.is_dir() {
            return Ok(out);
        }
        for d in std::fs::read_dir(&self.root)? {
            let d = d?.path();
            if !d.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&d)? {
                let p = f?.path();
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                if let Some(id) = name.strip_suffix(".msg").and_then(|s| s.parse().ok()) {
                    let body = std::fs::read(&p)?;
                    out.insert(id, blake3::hash(&body).to_hex().to_string());
                }
            }
        }
        Ok(out)
    }
}

pub struct Index {
    conn: rusqlite::Connection,
}

impl Index {
    pub fn open(dir: &Path) -> Result<Index> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("index.sqlite");
        let conn = rusqlite::Connection::open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE VIRTUAL TABLE IF NOT EXISTS messages USING fts5(mailbox, sender, subject, body);",
        )
        .context("create the FTS5 index")?;
        Ok(Index { conn })
    }

    /// Apply records in one transaction (one record for the writer, a whole
    /// replay batch for replay).
    pub fn apply(&mut self, records: &[&Record]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for r in records {
            match &r.op {
                crate::redolog::Op::Deliver(m) => {
                    tx.execute("DELETE FROM messages WHERE rowid = ?1", [m.id as i64])?;
                    tx.execute(
                        "INSERT INTO messages(rowid, mailbox, sender, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                        rusqlite::params![m.id as i64, m.mailbox, m.sender, m.subject, m.body],
                    )?;
                }
                crate::redolog::Op::Delete { id } => {
                    tx.execute("DELETE FROM messages WHERE rowid = ?1", [*id as i64])?;
                }
            }
        }
        tx.commit().context("commit to the index")
    }

    pub fn ids(&self) -> Result<Vec<u64>> {
        let mut st = self
            .conn
            .prepare("SELECT rowid FROM messages ORDER BY rowid")?;
        let ids = st
            .query_map([], |r| r.get::<_, i64>(0))?
            .map(|r| r.map(|v| v as u64))
            .collect::<rusqlite::Result<Vec<u64>>>()?;
        Ok(ids)
    }

    /// Full-text search; returns matching ids.
    pub fn search(&self, query: &str) -> Result<Vec<u64>> {
        let mut st = self
            .conn
            .prepare("SELECT rowid FROM messages WHERE messages MATCH ?1 ORDER BY rowid")?;
        let ids = st
            .query_map([query], |r| r.get::<_, i64>(0))?
            .map(|r| r.map(|v| v as u64))
            .collect::<rusqlite::Result<Vec<u64>>>()?;
        Ok(ids)
    }
}
