//! The receiver's read-back check, run behind the stream: the records a
//! receive has written completely are written back, dropped from the page
//! cache and read again from the device on a thread of their own while the
//! next ones arrive, so that the check costs what is left of it after the
//! last byte, not a second pass over the whole device (issue 27: an LVM
//! full ship spent 6 s of 42 reading back after the stream).
//!
//! The thread feeds the same running hash (`RecordHash`) the receiver
//! compares with what arrived, in the records' order; the receiver joins it
//! before every comparison (checkpoint, commit) and reads the rest itself.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::format::{Extent, MAX_WRITE, RecordHash};
use crate::base::error::{Context, Error, Result};

/// Records handed to the thread in batches of at least this many bytes: big
/// enough for one write-back wait per batch to be cheap, small enough for
/// the receiver's own share after the last byte to stay short.
const BATCH: u64 = 8 << 20;

/// The batch size; `None`: no thread, everything is read back after the
/// stream (as before issue 27). `SNAPSITE_LVM_READ_BEHIND_BYTES` overrides
/// it (0: off; tests and before/after benchmarks).
pub fn batch() -> Option<u64> {
    static B: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *B.get_or_init(|| {
        match std::env::var("SNAPSITE_LVM_READ_BEHIND_BYTES")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(0) => None,
            Some(n) => Some(n.max(64 << 10)),
            None => Some(BATCH),
        }
    })
}

/// The thread reading back behind the receive.
pub struct ReadBehind {
    tx: Option<mpsc::Sender<Vec<Extent>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<RecordHash>>>,
}

impl ReadBehind {
    /// Start on `dev` (a second handle of the replica), continuing `hash`.
    pub fn start(dev: File, hash: RecordHash) -> Result<ReadBehind> {
        let (tx, rx) = mpsc::channel::<Vec<Extent>>();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("lvm-readback".into())
            .spawn(move || {
                let mut hash = hash;
                let mut buf = Vec::new();
                for batch in rx {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    write_back(&dev, &batch)?;
                    read_records(&dev, &batch, &mut hash, &mut buf, &flag)?;
                }
                Ok(hash)
            })
            .ctx("start the read-back thread")?;
        Ok(ReadBehind {
            tx: Some(tx),
            stop,
            handle: Some(handle),
        })
    }

    /// Hand over complete records (in increasing offsets, after the ones
    /// handed over before).
    pub fn push(&self, batch: Vec<Extent>) {
        if let Some(tx) = &self.tx {
            // A thread that ended early has its error; `finish` returns it.
            let _ = tx.send(batch);
        }
    }

    /// Wait for every record handed over to be read back; the hash with
    /// them, or the thread's first error.
    pub fn finish(mut self) -> Result<RecordHash> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::integrity("the read-back thread panicked")),
            None => Err(Error::integrity("the read-back thread is gone")),
        }
    }
}

impl Drop for ReadBehind {
    /// Abandoned (a rejected or cut receive): stop at the next record and
    /// wait, so that no handle of the replica outlives the receive.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Write the batch's range back and wait for it, then drop it from the page
/// cache: the reads that follow reach the device.
fn write_back(dev: &File, batch: &[Extent]) -> Result<()> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(());
    };
    let (from, len) = (first.offset, last.offset + last.len - first.offset);
    let flags = nix::libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | nix::libc::SYNC_FILE_RANGE_WRITE
        | nix::libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let r = unsafe { nix::libc::sync_file_range(dev.as_raw_fd(), from as i64, len as i64, flags) };
    if r != 0 {
        dev.sync_data().ctx("fsync the replica")?;
    }
    unsafe {
        nix::libc::posix_fadvise(
            dev.as_raw_fd(),
            from as i64,
            len as i64,
            nix::libc::POSIX_FADV_DONTNEED,
        );
    }
    Ok(())
}

/// Read the records back from `dev` into `hash`: a data record's bytes, a
/// zero record checked to read as zeros.
pub fn read_records(
    dev: &File,
    records: &[Extent],
    hash: &mut RecordHash,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
) -> Result<()> {
    for w in records {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::integrity("read-back stopped"));
        }
        if w.data {
            if w.len > MAX_WRITE {
                // the decoder admits none
                return Err(Error::protocol(format!(
                    "record at {} of {} bytes is larger than a write",
                    w.offset, w.len
                )));
            }
            buf.resize(w.len as usize, 0);
            dev.read_exact_at(&mut buf[..w.len as usize], w.offset)
                .ctx("read back the replica")?;
            hash.write(w.offset, &buf[..w.len as usize]);
        } else {
            let mut at = w.offset;
            while at < w.offset + w.len {
                let n = (w.offset + w.len - at).min(MAX_WRITE);
                buf.resize(n as usize, 0);
                dev.read_exact_at(buf, at).ctx("read back the replica")?;
                if buf.iter().any(|b| *b != 0) {
                    return Err(Error::integrity(format!(
                        "replica range {}+{} should read as zeros",
                        w.offset, w.len
                    )));
                }
                at += n;
            }
            hash.zero(w.offset, w.len);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn extent(offset: u64, len: u64, data: bool) -> Extent {
        Extent { offset, len, data }
    }

    /// The thread's hash over batches, then the receiver's own tail, is the
    /// hash of the records read in one pass; a range that should read as
    /// zeros and does not is an error from `finish`.
    #[test]
    fn batches_behind_the_stream_hash_as_one_pass() {
        let dir = std::env::temp_dir().join(format!("snapsite-readback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev");
        let mut f = File::create(&path).unwrap();
        let data: Vec<u8> = (0..3 * MAX_WRITE).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        f.write_all(&vec![0u8; MAX_WRITE as usize]).unwrap();
        drop(f);
        let recs = [
            extent(0, MAX_WRITE, true),
            extent(MAX_WRITE, MAX_WRITE / 2, true),
            extent(MAX_WRITE + MAX_WRITE / 2, MAX_WRITE / 2, true),
            extent(2 * MAX_WRITE, MAX_WRITE, true),
            extent(3 * MAX_WRITE, MAX_WRITE, false),
        ];
        let mut want = RecordHash::default();
        for r in &recs {
            if r.data {
                want.write(
                    r.offset,
                    &data[r.offset as usize..(r.offset + r.len) as usize],
                );
            } else {
                want.zero(r.offset, r.len);
            }
        }
        let dev = File::open(&path).unwrap();
        let b = ReadBehind::start(dev.try_clone().unwrap(), RecordHash::default()).unwrap();
        b.push(recs[..2].to_vec());
        b.push(recs[2..4].to_vec());
        let mut got = b.finish().unwrap();
        read_records(
            &dev,
            &recs[4..],
            &mut got,
            &mut Vec::new(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(got.finish(), want.finish());
        assert_eq!(got.data_bytes, 3 * MAX_WRITE);

        // data where zeros were written
        let b = ReadBehind::start(dev.try_clone().unwrap(), RecordHash::default()).unwrap();
        b.push(vec![extent(0, MAX_WRITE, false)]);
        let e = b.finish().err().expect("not zeros");
        assert!(e.to_string().contains("should read as zeros"), "{e}");
        // abandoned: dropping it stops the thread
        let b = ReadBehind::start(dev, RecordHash::default()).unwrap();
        b.push(recs.to_vec());
        drop(b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
