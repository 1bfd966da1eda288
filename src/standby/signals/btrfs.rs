//! The btrfs send stream's commands, counted for the signals: a file made
//! in this stream (MKFILE, later renamed from its temporary name) takes
//! new data; a WRITE to any other path rewrites a file that existed
//! before. Only the commands that say so are decoded; checksums and the
//! vetting are `btrfs receive`'s and `backend::btrfs_vet`'s business. A
//! stream this cannot decode is counted as bytes from there on and marked
//! incomplete — never refused (that is not this module's call).

use std::collections::HashSet;

use super::Sampler;
use crate::base::catalog::signals::VolumeSignals;

use crate::backend::btrfs_vet::stream::{
    A_CLONE_LEN, A_DATA, A_PATH, A_PATH_LINK, A_PATH_TO, A_SIZE, A_UNENCODED_LEN, C_CLONE,
    C_ENCODED_WRITE, C_END, C_LINK, C_MKDIR, C_MKFIFO, C_MKFILE, C_MKNOD, C_MKSOCK, C_RENAME,
    C_SYMLINK, C_UNLINK, C_WRITE, CMD_HEADER, HEADER, MAGIC, MAX_CMD,
};

/// Paths remembered (new files, rewritten files); beyond, the counts are
/// marked incomplete rather than memory growing with the stream.
const MAX_PATHS: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct BtrfsMeter {
    /// The stream header, or a command cut by the end of a piece, until
    /// the next piece completes it.
    pending: Vec<u8>,
    version: Option<u32>,
    /// Undecodable from here on (why).
    stopped: Option<String>,
    ended: bool,
    /// Paths made in this stream (files and directories).
    created: HashSet<Vec<u8>>,
    created_dirs: HashSet<Vec<u8>>,
    rewritten: HashSet<Vec<u8>>,
    /// Old names of existing files that got a new one by LINK (btrfs send
    /// may move a file as LINK new + UNLINK old): their UNLINK is part of
    /// the move.
    moved_away: HashSet<Vec<u8>>,
    overflow: bool,
    all: Sampler,
    rewrites: Sampler,
    data_bytes: u64,
    rewrite_bytes: u64,
    files_new: u64,
    renames: u64,
    renames_new_extension: u64,
    unlinks: u64,
}

/// The attributes of a command (v2+: DATA runs to the command's end).
fn attributes(body: &[u8], v2: bool) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let t = u16::from_le_bytes([*body.get(i)?, *body.get(i + 1)?]);
        if v2 && t == A_DATA {
            out.push((t, &body[i + 2..]));
            break;
        }
        let l = u16::from_le_bytes([*body.get(i + 2)?, *body.get(i + 3)?]) as usize;
        out.push((t, body.get(i + 4..i + 4 + l)?));
        i += 4 + l;
    }
    Some(out)
}

fn attr<'a>(attrs: &[(u16, &'a [u8])], t: u16) -> Option<&'a [u8]> {
    attrs.iter().rev().find(|(a, _)| *a == t).map(|(_, v)| *v)
}

fn le_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?))
}

/// The extension of a path's last component (`a/b.eml` -> `eml`); a
/// Maildir info suffix (`:2,S`) is not part of it.
pub(super) fn extension(path: &[u8]) -> &[u8] {
    let last = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    let last = last.split(|b| *b == b':').next().unwrap_or(last);
    match last.iter().rposition(|b| *b == b'.') {
        Some(i) if i > 0 => &last[i + 1..],
        _ => b"",
    }
}

impl BtrfsMeter {
    /// Decode what `data` completes. Whole commands are decoded where
    /// they lie in `data`; only a command cut by the end of a piece is
    /// copied (into `pending`) — copying every byte cost more than the
    /// decoding.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.stopped.is_some() || self.ended {
            return;
        }
        if self.version.is_none() {
            let n = (HEADER - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() < HEADER {
                return;
            }
            if &self.pending[..MAGIC.len()] != MAGIC {
                self.stop("not a btrfs send stream");
                return;
            }
            let v = u32::from_le_bytes(self.pending[MAGIC.len()..HEADER].try_into().expect("4"));
            self.version = Some(v);
            self.pending.clear();
        }
        let v2 = self.version.is_some_and(|v| v >= 2);
        if !self.pending.is_empty() {
            // First the command the last piece cut: its header, then its body.
            if !self.fill(&mut data, CMD_HEADER) {
                return;
            }
            let len = u32::from_le_bytes(self.pending[..4].try_into().expect("4")) as usize;
            if len > MAX_CMD {
                self.stop("a command larger than btrfs send writes");
                return;
            }
            if !self.fill(&mut data, CMD_HEADER + len) {
                return;
            }
            let mut cut = std::mem::take(&mut self.pending);
            let go_on = self.decode(&cut, v2);
            if go_on {
                cut.clear();
                self.pending = cut;
            } else {
                return;
            }
        }
        while data.len() >= CMD_HEADER {
            let len = u32::from_le_bytes(data[..4].try_into().expect("4")) as usize;
            if len > MAX_CMD {
                self.stop("a command larger than btrfs send writes");
                return;
            }
            if data.len() - CMD_HEADER < len {
                break;
            }
            let (whole, rest) = data.split_at(CMD_HEADER + len);
            if !self.decode(whole, v2) {
                return;
            }
            data = rest;
        }
        self.pending.extend_from_slice(data);
    }

    /// Move bytes of `data` into `pending` until it holds `want`; `false`:
    /// `data` ran out first.
    fn fill(&mut self, data: &mut &[u8], want: usize) -> bool {
        let n = want.saturating_sub(self.pending.len()).min(data.len());
        self.pending.extend_from_slice(&data[..n]);
        *data = &data[n..];
        self.pending.len() >= want
    }

    /// Count one whole command (header included); `false`: stop feeding
    /// (it did not decode, or it was the END).
    fn decode(&mut self, whole: &[u8], v2: bool) -> bool {
        let cmd = u16::from_le_bytes([whole[4], whole[5]]);
        if !self.command(cmd, &whole[CMD_HEADER..], v2) {
            self.stop("a malformed command");
            return false;
        }
        if cmd == C_END {
            self.ended = true;
            self.pending = Vec::new();
            return false;
        }
        true
    }

    fn stop(&mut self, why: &str) {
        self.stopped = Some(why.to_string());
        self.pending = Vec::new();
    }

    fn remember(set: &mut HashSet<Vec<u8>>, overflow: &mut bool, p: &[u8]) {
        if set.len() >= MAX_PATHS {
            *overflow = true;
        } else {
            set.insert(p.to_vec());
        }
    }

    /// Count one command; `false`: it does not decode.
    fn command(&mut self, cmd: u16, body: &[u8], v2: bool) -> bool {
        let Some(attrs) = attributes(body, v2) else {
            return false;
        };
        let path = attr(&attrs, A_PATH);
        match cmd {
            C_LINK => {
                let (Some(p), Some(old)) = (path, attr(&attrs, A_PATH_LINK)) else {
                    return false;
                };
                if self.created.contains(old) {
                    Self::remember(&mut self.created, &mut self.overflow, p);
                } else {
                    // An existing file under a new name: a move.
                    self.renames += 1;
                    if extension(old) != extension(p) {
                        self.renames_new_extension += 1;
                    }
                    Self::remember(&mut self.moved_away, &mut self.overflow, old);
                }
            }
            C_MKFILE | C_MKNOD | C_MKFIFO | C_MKSOCK | C_SYMLINK => {
                let Some(p) = path else { return false };
                if cmd == C_MKFILE {
                    self.files_new += 1;
                }
                Self::remember(&mut self.created, &mut self.overflow, p);
            }
            C_MKDIR => {
                let Some(p) = path else { return false };
                Self::remember(&mut self.created, &mut self.overflow, p);
                Self::remember(&mut self.created_dirs, &mut self.overflow, p);
            }
            C_RENAME => {
                let (Some(from), Some(to)) = (path, attr(&attrs, A_PATH_TO)) else {
                    return false;
                };
                if self.created.remove(from) {
                    self.created.insert(to.to_vec());
                    if self.created_dirs.remove(from) {
                        self.created_dirs.insert(to.to_vec());
                        self.move_below(from, to);
                    }
                } else {
                    self.renames += 1;
                    if extension(from) != extension(to) {
                        self.renames_new_extension += 1;
                    }
                    if self.rewritten.remove(from) {
                        self.rewritten.insert(to.to_vec());
                    }
                }
            }
            C_UNLINK => {
                let Some(p) = path else { return false };
                if !self.created.remove(p) && !self.moved_away.remove(p) {
                    self.unlinks += 1;
                }
            }
            C_WRITE => {
                let (Some(p), Some(d)) = (path, attr(&attrs, A_DATA)) else {
                    return false;
                };
                self.data_bytes += d.len() as u64;
                self.all.take(d);
                if !self.created.contains(p) {
                    self.rewrite_bytes += d.len() as u64;
                    self.rewrites.take(d);
                    if !self.rewritten.contains(p) {
                        Self::remember(&mut self.rewritten, &mut self.overflow, p);
                    }
                }
            }
            C_CLONE | C_ENCODED_WRITE => {
                // Data shared with another file, or sent compressed: counted,
                // not sampled (compressed bytes would look like noise).
                let Some(p) = path else { return false };
                let n = if cmd == C_CLONE {
                    attr(&attrs, A_CLONE_LEN).and_then(le_u64)
                } else {
                    attr(&attrs, A_UNENCODED_LEN)
                        .and_then(le_u64)
                        .or_else(|| attr(&attrs, A_SIZE).and_then(le_u64))
                }
                .unwrap_or(0);
                self.data_bytes += n;
                if !self.created.contains(p) {
                    self.rewrite_bytes += n;
                    if !self.rewritten.contains(p) {
                        Self::remember(&mut self.rewritten, &mut self.overflow, p);
                    }
                }
            }
            _ => {}
        }
        true
    }

    /// A directory made in this stream was renamed: what was made below it
    /// moves with it.
    fn move_below(&mut self, from: &[u8], to: &[u8]) {
        let mut prefix = from.to_vec();
        prefix.push(b'/');
        for set in [&mut self.created, &mut self.created_dirs] {
            let moved: Vec<Vec<u8>> = set
                .iter()
                .filter(|p| p.starts_with(&prefix))
                .cloned()
                .collect();
            for p in moved {
                set.remove(&p);
                let mut n = to.to_vec();
                n.extend_from_slice(&p[from.len()..]);
                set.insert(n);
            }
        }
    }

    pub fn finish(mut self, sig: &mut VolumeSignals) {
        self.all.flush();
        self.rewrites.flush();
        sig.data_bytes = self.data_bytes;
        sig.rewrite_bytes = self.rewrite_bytes;
        sig.files_new = self.files_new;
        sig.files_rewritten = self.rewritten.len() as u64;
        sig.renames = self.renames;
        sig.renames_new_extension = self.renames_new_extension;
        sig.unlinks = self.unlinks;
        sig.sampled_blocks = self.all.sampled;
        sig.incompressible_blocks = self.all.incompressible;
        sig.rewrite_sampled_blocks = self.rewrites.sampled;
        sig.rewrite_incompressible_blocks = self.rewrites.incompressible;
        super::mark_incomplete(sig, self.stopped, self.ended, "END command", || {
            self.overflow
                .then(|| format!("more than {MAX_PATHS} paths: file counts are a floor"))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(t: u16, v: &[u8]) -> Vec<u8> {
        let mut o = t.to_le_bytes().to_vec();
        o.extend((v.len() as u16).to_le_bytes());
        o.extend(v);
        o
    }
    fn command(cmd: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let mut o = (body.len() as u32).to_le_bytes().to_vec();
        o.extend(cmd.to_le_bytes());
        o.extend(0u32.to_le_bytes());
        o.extend(body);
        o
    }
    fn stream(cmds: &[Vec<u8>]) -> Vec<u8> {
        let mut o = MAGIC.to_vec();
        o.extend(1u32.to_le_bytes());
        for c in cmds {
            o.extend(c);
        }
        o.extend(command(C_END, &[]));
        o
    }
    fn write(p: &str, d: &[u8]) -> Vec<u8> {
        command(
            C_WRITE,
            &[
                tlv(A_PATH, p.as_bytes()),
                tlv(18, &0u64.to_le_bytes()),
                tlv(A_DATA, d),
            ],
        )
    }
    fn rename(a: &str, b: &str) -> Vec<u8> {
        command(
            C_RENAME,
            &[tlv(A_PATH, a.as_bytes()), tlv(A_PATH_TO, b.as_bytes())],
        )
    }

    #[test]
    fn new_files_rewrites_renames_and_unlinks_are_told_apart() {
        let noise: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let s = stream(&[
            command(C_MKDIR, &[tlv(A_PATH, b"o300-1-0")]),
            command(C_MKFILE, &[tlv(A_PATH, b"o300-1-0/o301-1-0")]),
            rename("o300-1-0", "blobs/9"),
            rename("blobs/9/o301-1-0", "blobs/9/77-1.msg"),
            write("blobs/9/77-1.msg", b"Subject: hi\r\n"),
            write("blobs/1/5-1.msg", &noise),
            rename("blobs/1/5-1.msg", "blobs/1/5-1.msg.locked"),
            rename("blobs/1/6-1.msg", "blobs/1/6-2.msg"),
            command(C_UNLINK, &[tlv(A_PATH, b"blobs/1/7-1.msg")]),
            // A move sent as LINK new + UNLINK old, then a write into it.
            command(
                C_LINK,
                &[
                    tlv(A_PATH, b"blobs/2/8-1.msg.locked"),
                    tlv(A_PATH_LINK, b"blobs/2/8-1.msg"),
                ],
            ),
            command(C_UNLINK, &[tlv(A_PATH, b"blobs/2/8-1.msg")]),
            write("blobs/2/8-1.msg.locked", b"xx"),
        ]);
        // However the stream is cut (a command across pieces is copied and
        // completed; whole ones are decoded in place), the counts agree.
        let counted = |piece: usize| {
            let mut m = BtrfsMeter::default();
            for p in s.chunks(piece) {
                m.feed(p);
            }
            let mut sig = VolumeSignals {
                complete: true,
                ..Default::default()
            };
            m.finish(&mut sig);
            sig
        };
        let sig = counted(7);
        for piece in [1, 3, 10, 11, 64, 8200, s.len()] {
            assert_eq!(counted(piece), sig, "pieces of {piece}");
        }
        assert!(sig.complete, "{:?}", sig.note);
        assert_eq!(sig.files_new, 1);
        assert_eq!(sig.data_bytes, 13 + 8192 + 2);
        assert_eq!(sig.rewrite_bytes, 8192 + 2);
        assert_eq!(sig.files_rewritten, 2);
        assert_eq!(sig.renames, 3);
        assert_eq!(sig.renames_new_extension, 2);
        assert_eq!(sig.unlinks, 1);
    }

    #[test]
    fn damaged_streams_count_the_same_whole_or_in_pieces() {
        // Flipped bytes anywhere (lengths, types, paths): never a panic,
        // and the cut path agrees with the whole-buffer path.
        let good = stream(&[
            command(C_MKFILE, &[tlv(A_PATH, b"o1-1-0")]),
            rename("o1-1-0", "blobs/1/1.msg"),
            write("blobs/1/1.msg", &[7u8; 3000]),
            write("blobs/2/2.msg", &[9u8; 5000]),
            rename("blobs/2/2.msg", "blobs/2/2.msg.locked"),
        ]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..400 {
            let mut s = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % s.len();
                s[at] ^= (next() % 255 + 1) as u8;
            }
            let count = |pieces: &mut dyn FnMut() -> usize| {
                let mut m = BtrfsMeter::default();
                let mut rest = &s[..];
                while !rest.is_empty() {
                    let n = pieces().clamp(1, rest.len());
                    m.feed(&rest[..n]);
                    rest = &rest[n..];
                }
                let mut sig = VolumeSignals::default();
                m.finish(&mut sig);
                sig
            };
            let whole = count(&mut || usize::MAX);
            let cut = count(&mut || (next() % 9000) as usize);
            assert_eq!(whole, cut);
        }
    }

    #[test]
    fn garbage_stops_decoding_and_is_marked_incomplete() {
        let mut m = BtrfsMeter::default();
        m.feed(b"not a btrfs stream at all, no");
        let mut sig = VolumeSignals {
            complete: true,
            ..Default::default()
        };
        m.finish(&mut sig);
        assert!(!sig.complete);
        let mut m = BtrfsMeter::default();
        let mut s = MAGIC.to_vec();
        s.extend(1u32.to_le_bytes());
        s.extend(command(C_WRITE, &[vec![15, 0, 200, 0, 1]]));
        m.feed(&s);
        let mut sig = VolumeSignals::default();
        m.finish(&mut sig);
        assert!(sig.note.unwrap().contains("malformed"));
    }

    #[test]
    fn extensions_ignore_maildir_flags() {
        assert_eq!(extension(b"cur/123.M1P2.host:2,S"), b"host");
        assert_eq!(extension(b"a/b.msg.locked"), b"locked");
        assert_eq!(extension(b".hidden"), b"");
    }
}
