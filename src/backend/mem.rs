//! An in-memory store for protocol tests: `serve`'s every path (nack,
//! checksum mismatch, cut streams, resume, refused commits) runs in
//! milliseconds, without root. Never used for real data, never the evidence
//! that a storage backend works.
//!
//! Its "send stream" is `MEMSNAP1\n<name>\n<base or ->\n` followed by the
//! payload; a receive commits only when the header names exactly the
//! snapshot and base it was opened for — the way the real backends refuse a
//! stream of another snapshot.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Backend, BoxedSink, BoxedSource, Receive, Resumable, SnapshotSink, SnapshotSource};
use crate::base::config::{BackendKind, Volume};
use crate::base::error::{Error, Result};

#[derive(Default, Debug)]
pub struct MemState {
    /// (role, snapshot) -> the stream it was received from / taken as.
    pub snaps: BTreeMap<(String, String), Vec<u8>>,
    /// role -> (snapshot, bytes so far) of a cut receive kept for resuming.
    pub partial: BTreeMap<String, (String, Vec<u8>)>,
    /// Receives opened and not yet committed or discarded.
    pub open_receives: usize,
}

/// Cloning shares the state: one store for a whole test site.
#[derive(Clone, Default, Debug)]
pub struct MemStore(pub Arc<Mutex<MemState>>);

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
    /// A snapshot's stream as this store would send it.
    pub fn stream(name: &str, base: Option<&str>, payload: &[u8]) -> Vec<u8> {
        let mut v = format!("MEMSNAP1\n{name}\n{}\n", base.unwrap_or("-")).into_bytes();
        v.extend_from_slice(payload);
        v
    }
    /// Put a snapshot in place as if it had been taken here.
    pub fn insert(&self, role: &str, name: &str, payload: &[u8]) {
        self.0.lock().unwrap().snaps.insert(
            (role.to_string(), name.to_string()),
            MemStore::stream(name, None, payload),
        );
    }
    pub fn names(&self, role: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .snaps
            .keys()
            .filter(|(r, _)| r == role)
            .map(|(_, n)| n.clone())
            .collect()
    }
    pub fn backend(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }
}

fn parse_header(bytes: &[u8]) -> Option<(String, Option<String>, usize)> {
    let mut parts: Vec<String> = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().take(300) {
        if b == b'\n' {
            parts.push(std::str::from_utf8(&bytes[start..i]).ok()?.to_string());
            start = i + 1;
            if parts.len() == 3 {
                break;
            }
        }
    }
    if parts.len() != 3 || parts[0] != "MEMSNAP1" {
        return None;
    }
    let base = (parts[2] != "-").then(|| parts[2].clone());
    Some((parts[1].clone(), base, start))
}

struct MemSink {
    store: MemStore,
    role: String,
    name: String,
    base: Option<String>,
    buf: Vec<u8>,
    done: bool,
}

impl Write for MemSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MemSink {
    fn close(&mut self) {
        if !self.done {
            self.done = true;
            self.store.0.lock().unwrap().open_receives -= 1;
        }
    }
}

impl SnapshotSink for MemSink {
    fn commit(
        mut self: Box<Self>,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        self.close();
        let Some((name, base, _)) = parse_header(&self.buf) else {
            return Err(Error::integrity(format!(
                "volume `{}`: not a mem stream",
                self.role
            )));
        };
        if name != self.name || base != self.base {
            return Err(Error::integrity(format!(
                "volume `{}`: the stream is of {name} (base {base:?}), not {}",
                self.role, self.name
            )));
        }
        let id = blake3::hash(&self.buf).to_hex().to_string();
        record(Some(id.clone()))?;
        self.store.0.lock().unwrap().snaps.insert(
            (self.role.clone(), self.name.clone()),
            std::mem::take(&mut self.buf),
        );
        Ok(Some(id))
    }
    fn abort(mut self: Box<Self>) {
        self.close();
    }
    fn cut(mut self: Box<Self>) {
        self.close();
        let buf = std::mem::take(&mut self.buf);
        self.store
            .0
            .lock()
            .unwrap()
            .partial
            .insert(self.role.clone(), (self.name.clone(), buf));
    }
}

impl Drop for MemSink {
    fn drop(&mut self) {
        self.close();
    }
}

struct MemSource(Cursor<Vec<u8>>);

impl Read for MemSource {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}

impl SnapshotSource for MemSource {
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
    fn abort(self: Box<Self>) {}
}

impl Backend for MemStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Btrfs
    }
    fn probe(&self, _vol: &Volume, _primary: bool) -> Result<Vec<String>> {
        Ok(vec!["in-memory test store".into()])
    }
    fn snapshot(&self, vols: &[&Volume], name: &str) -> Result<()> {
        for v in vols {
            self.insert(&v.role, name, name.as_bytes());
        }
        Ok(())
    }
    fn storage_id(&self, vol: &Volume, name: &str) -> Result<Option<String>> {
        let st = self.0.lock().unwrap();
        Ok(st
            .snaps
            .get(&(vol.role.clone(), name.to_string()))
            .map(|b| blake3::hash(b).to_hex().to_string()))
    }
    fn list(&self, vol: &Volume) -> Result<Vec<String>> {
        Ok(self.names(&vol.role))
    }
    fn send(&self, vol: &Volume, name: &str, base: Option<&str>) -> Result<BoxedSource> {
        let st = self.0.lock().unwrap();
        let bytes = st
            .snaps
            .get(&(vol.role.clone(), name.to_string()))
            .ok_or_else(|| Error::not_found(format!("no snapshot {name}")))?;
        let payload = &bytes[parse_header(bytes).map_or(0, |h| h.2)..];
        Ok(Box::new(MemSource(Cursor::new(MemStore::stream(
            name, base, payload,
        )))))
    }
    fn send_resume(&self, vol: &Volume, name: &str, token: &str) -> Result<BoxedSource> {
        let (tname, offset) = token
            .rsplit_once(':')
            .and_then(|(n, o)| Some((n, o.parse::<usize>().ok()?)))
            .ok_or_else(|| Error::storage("bad mem resume token"))?;
        if tname != name {
            return Err(Error::storage(format!(
                "resume token is for {tname}, not {name}"
            )));
        }
        let mut src = self.send(vol, name, None)?;
        let mut all = Vec::new();
        src.read_to_end(&mut all).map_err(|e| Error::io("mem", e))?;
        let rest = all.get(offset..).unwrap_or_default().to_vec();
        Ok(Box::new(MemSource(Cursor::new(rest))))
    }
    fn receive(&self, vol: &Volume, r: Receive<'_>) -> Result<BoxedSink> {
        let Receive {
            name,
            base,
            expect_id: _,
            resume,
        } = r;
        let mut st = self.0.lock().unwrap();
        if st.snaps.contains_key(&(vol.role.clone(), name.to_string())) {
            return Err(Error::storage(format!("{name} already exists")));
        }
        if let Some(b) = base {
            if !st.snaps.contains_key(&(vol.role.clone(), b.to_string())) {
                return Err(Error::storage(format!("base {b} is missing")));
            }
        }
        let buf = match st.partial.remove(&vol.role) {
            Some((n, buf)) if resume && n == name => buf,
            _ if resume => return Err(Error::storage("nothing to resume")),
            _ => Vec::new(),
        };
        st.open_receives += 1;
        Ok(Box::new(MemSink {
            store: self.clone(),
            role: vol.role.clone(),
            name: name.to_string(),
            base: base.map(str::to_string),
            buf,
            done: false,
        }))
    }
    fn resumable(&self, vol: &Volume) -> Result<Option<Resumable>> {
        let st = self.0.lock().unwrap();
        Ok(st.partial.get(&vol.role).map(|(n, b)| Resumable {
            snapshot: Some(n.clone()),
            token: format!("{n}:{}", b.len()),
        }))
    }
    fn cleanup_partial(&self, _vol: &Volume) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn destroy(&self, vol: &Volume, name: &str) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .snaps
            .remove(&(vol.role.clone(), name.to_string()));
        Ok(())
    }
    fn writable_copy(&self, _vol: &Volume, _name: &str) -> Result<PathBuf> {
        Err(Error::storage(
            "the in-memory store makes no writable copies",
        ))
    }
    fn writable_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        Ok(PathBuf::from(&vol.source))
    }
    fn writable_copy_exists(&self, _vol: &Volume) -> Result<bool> {
        Ok(false)
    }
    fn remove_writable_copy(&self, _vol: &Volume) -> Result<()> {
        Ok(())
    }
}
