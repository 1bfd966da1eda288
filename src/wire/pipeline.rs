//! The sender's pipeline for one snapshot's data: reading and hashing on
//! one thread, compression on worker threads (when the standby takes zstd),
//! writing on the caller's — so neither blake3 nor zstd sits on the critical
//! path of the reads or the wire. Frames come out in order; every channel
//! is bounded, so memory is a few frames whatever the stream's size.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};
use crate::wire::compress::{Compression, FrameCompressor};
use crate::wire::stream::MAX_DATA_FRAME;

/// One data frame, ready for the wire.
pub enum Chunk {
    Plain(Vec<u8>),
    Compressed { z: Vec<u8>, raw_len: usize },
}

impl Chunk {
    /// Bytes of snapshot data it carries.
    pub fn raw_len(&self) -> usize {
        match self {
            Chunk::Plain(d) => d.len(),
            Chunk::Compressed { raw_len, .. } => *raw_len,
        }
    }
}

/// What went through: payload bytes and their blake3 (uncompressed).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub bytes: u64,
    pub blake3: String,
}

pub enum Failed {
    /// Reading the snapshot's stream failed.
    Read(std::io::Error),
    /// The caller's `emit` failed (the connection).
    Emit(Error),
}

/// Worker threads for compression: the cores, up to 4.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Read `src` to its end in frames of up to `MAX_DATA_FRAME`, compress them
/// with `compression` where that makes them smaller, and hand each one to
/// `emit` in order.
pub fn run<S: Read + Send + ?Sized>(
    src: &mut S,
    compression: Compression,
    emit: &mut dyn FnMut(Chunk) -> Result<()>,
) -> std::result::Result<Summary, Failed> {
    let level = match compression {
        Compression::None => None,
        Compression::Zstd { level } => Some(level),
    };
    let k = if level.is_some() { workers() } else { 1 };
    std::thread::scope(|scope| {
        let mut to_workers: Vec<SyncSender<Vec<u8>>> = Vec::new();
        let mut from_workers: Vec<Receiver<Chunk>> = Vec::new();
        let mut worker_inputs: Vec<Receiver<Vec<u8>>> = Vec::new();
        for _ in 0..k {
            let (tx, rx) = sync_channel::<Vec<u8>>(1);
            to_workers.push(tx);
            worker_inputs.push(rx);
        }
        for rx in worker_inputs {
            let (tx, out) = sync_channel::<Chunk>(1);
            from_workers.push(out);
            scope.spawn(move || {
                let mut c = match level {
                    Some(l) => FrameCompressor::new(l).ok(),
                    None => None,
                };
                for raw in rx {
                    let chunk = match c.as_mut().and_then(|c| c.compress(&raw)) {
                        Some(z) => Chunk::Compressed {
                            z: z.to_vec(),
                            raw_len: raw.len(),
                        },
                        None => Chunk::Plain(raw),
                    };
                    if tx.send(chunk).is_err() {
                        return;
                    }
                }
            });
        }
        let reader = scope.spawn(move || -> std::io::Result<Summary> {
            let mut hasher = blake3::Hasher::new();
            let mut bytes = 0u64;
            let (mut reading, mut hashing, mut blocked) =
                (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            for i in 0.. {
                let t = Instant::now();
                let mut buf = vec![0u8; MAX_DATA_FRAME];
                let n = crate::wire::stream::fill(src, &mut buf)?;
                let t1 = Instant::now();
                reading += t1 - t;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                hasher.update(&buf);
                let t2 = Instant::now();
                hashing += t2 - t1;
                bytes += n as u64;
                let gone = to_workers[i % k].send(buf).is_err();
                blocked += t2.elapsed();
                if gone {
                    break; // the writer stopped: its error is the one to report
                }
            }
            tracing::debug!(
                source_s = reading.as_secs_f64(),
                hash_s = hashing.as_secs_f64(),
                queue_full_s = blocked.as_secs_f64(),
                bytes,
                "sender pipeline: reading the snapshot's stream"
            );
            Ok(Summary {
                bytes,
                blake3: hasher.finalize().to_hex().to_string(),
            })
        });
        let mut emitted = 0u64;
        let mut emit_err = None;
        let (mut waiting, mut emitting) = (Duration::ZERO, Duration::ZERO);
        'out: for i in 0.. {
            let t = Instant::now();
            let next = from_workers[i % k].recv();
            let t1 = Instant::now();
            waiting += t1 - t;
            match next {
                Ok(chunk) => {
                    emitted += chunk.raw_len() as u64;
                    let r = emit(chunk);
                    emitting += t1.elapsed();
                    if let Err(e) = r {
                        emit_err = Some(e);
                        break 'out;
                    }
                }
                Err(_) => break,
            }
        }
        tracing::debug!(
            wait_s = waiting.as_secs_f64(),
            wire_s = emitting.as_secs_f64(),
            bytes = emitted,
            "sender pipeline: frames to the wire"
        );
        // Unblocks the workers and then the reader if we stopped early.
        drop(from_workers);
        let read = reader.join().expect("the reader thread does not panic");
        if let Some(e) = emit_err {
            return Err(Failed::Emit(e));
        }
        let summary = read.map_err(Failed::Read)?;
        // Every frame the reader produced was emitted.
        debug_assert_eq!(summary.bytes, emitted);
        Ok(summary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(len: usize) -> Vec<u8> {
        let mut x = 1u64;
        (0..len)
            .map(|i| {
                if (i / 100_000) % 2 == 0 {
                    b"mail text "[i % 10]
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn frames_come_out_in_order_with_the_hash_of_the_raw_bytes() {
        let data = corpus(5 * MAX_DATA_FRAME + 12345);
        for c in [Compression::None, Compression::Zstd { level: 3 }] {
            let mut out = Vec::new();
            let mut compressed = 0;
            let mut d = crate::wire::compress::FrameDecompressor::new().unwrap();
            let s = run(&mut &data[..], c, &mut |chunk| {
                match chunk {
                    Chunk::Plain(p) => out.extend_from_slice(&p),
                    Chunk::Compressed { z, .. } => {
                        compressed += 1;
                        out.extend(d.decompress(&z, MAX_DATA_FRAME, 0).unwrap())
                    }
                }
                Ok(())
            })
            .ok()
            .unwrap();
            assert_eq!(out, data);
            assert_eq!(s.bytes, data.len() as u64);
            assert_eq!(s.blake3, blake3::hash(&data).to_hex().to_string());
            assert_eq!(compressed > 0, c != Compression::None);
        }
    }

    #[test]
    fn an_emit_error_stops_the_pipeline_and_a_read_error_is_reported() {
        let data = corpus(20 * MAX_DATA_FRAME);
        let mut calls = 0;
        let r = run(&mut &data[..], Compression::Zstd { level: 1 }, &mut |_| {
            calls += 1;
            if calls == 2 {
                Err(Error::protocol("gone"))
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(Failed::Emit(_))));
        assert_eq!(calls, 2);
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk error"));
                }
                self.0 -= 1;
                b[0] = 1;
                Ok(1)
            }
        }
        let r = run(&mut Broken(10), Compression::None, &mut |_| Ok(()));
        assert!(matches!(r, Err(Failed::Read(e)) if e.to_string() == "disk error"));
    }
}
