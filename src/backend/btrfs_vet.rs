//! Nothing privileged from the wire (btrfs): a send stream is vetted
//! command by command before `btrfs receive` sees a byte of the command,
//! and refused when it would make a character or block device, a set-uid
//! or set-gid file (or directory), or give a file capabilities
//! (`security.capability`). A mail store has none of these; a standby that
//! received one would hand a local user root through a received snapshot
//! or failover's copy (`--chroot` confines paths, not modes). A volume with
//! `allow_privileged_files = true` skips the check.
//!
//! Only the commands that can carry such a thing are decoded (MKNOD,
//! MKFIFO, MKSOCK, CHMOD, SET_XATTR), the way btrfs-progs decodes them:
//! every attribute is looked at (btrfs-progs keeps the last of a repeated
//! one), and from protocol version 2 on a DATA attribute runs to the end
//! of the command. Checksums are `btrfs receive`'s to check.

use crate::base::model::wire_str;

/// The btrfs send stream format (btrfs-progs `send.h`), one table for the
/// vetting here and the ransomware meter (`standby::signals::btrfs`).
pub(crate) mod stream {
    pub const MAGIC: &[u8; 13] = b"btrfs-stream\0";
    pub const HEADER: usize = MAGIC.len() + 4;
    /// u32 length, u16 command, u32 crc.
    pub const CMD_HEADER: usize = 10;
    /// The largest command held back (btrfs-progs' v2 buffer is 144 KiB).
    pub const MAX_CMD: usize = 4 << 20;

    pub const C_MKFILE: u16 = 3;
    pub const C_MKDIR: u16 = 4;
    pub const C_MKNOD: u16 = 5;
    pub const C_MKFIFO: u16 = 6;
    pub const C_MKSOCK: u16 = 7;
    pub const C_SYMLINK: u16 = 8;
    pub const C_RENAME: u16 = 9;
    pub const C_LINK: u16 = 10;
    pub const C_UNLINK: u16 = 11;
    pub const C_SET_XATTR: u16 = 13;
    pub const C_WRITE: u16 = 15;
    pub const C_CLONE: u16 = 16;
    pub const C_CHMOD: u16 = 18;
    pub const C_END: u16 = 21;
    pub const C_ENCODED_WRITE: u16 = 25;

    pub const A_SIZE: u16 = 4;
    pub const A_MODE: u16 = 5;
    pub const A_XATTR_NAME: u16 = 13;
    pub const A_PATH: u16 = 15;
    pub const A_PATH_TO: u16 = 16;
    pub const A_PATH_LINK: u16 = 17;
    pub const A_DATA: u16 = 19;
    pub const A_CLONE_LEN: u16 = 21;
    pub const A_UNENCODED_LEN: u16 = 29;
}
use stream::{
    A_DATA, A_MODE, A_PATH, A_PATH_TO, A_XATTR_NAME, C_CHMOD, C_END, C_MKFIFO, C_MKNOD, C_MKSOCK,
    C_RENAME, C_SET_XATTR, CMD_HEADER, HEADER, MAGIC, MAX_CMD,
};

const S_IFMT: u64 = 0o170000;
const S_IFCHR: u64 = 0o020000;
const S_IFBLK: u64 = 0o060000;
const S_ISUID: u64 = 0o4000;
const S_ISGID: u64 = 0o2000;

/// The vetting state of one stream.
#[derive(Debug, Default)]
pub struct StreamVet {
    /// Bytes taken but not yet passed on.
    pending: Vec<u8>,
    /// How much of `pending` is decoded (whole commands).
    parsed: usize,
    /// The stream's protocol version, once its header was read.
    version: Option<u32>,
    /// After END (`btrfs receive -e` stops there) nothing is decoded.
    ended: bool,
    /// A refused command made under a new file's temporary name
    /// (`o<inode>-<gen>-0`): held back, with everything after it, until the
    /// rename that gives its real name, for the refusal to name it.
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    /// Where the refused command starts in `pending`.
    at: usize,
    why: Why,
    path: Vec<u8>,
}

/// How long to look for a held file's real name.
const HOLD_LIMIT: usize = 1 << 20;

/// What a command would make.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Why {
    Device,
    SetUid(u64),
    SetGid(u64),
    Capabilities,
    BadMode,
    Malformed,
}

impl Why {
    fn say(self, path: &[u8]) -> String {
        let path = wire_str(&String::from_utf8_lossy(path));
        match self {
            Why::Device => format!("the stream makes `{path}` a device node"),
            Why::SetUid(m) => format!("the stream makes `{path}` set-uid (mode {m:o})"),
            Why::SetGid(m) => format!("the stream makes `{path}` set-gid (mode {m:o})"),
            Why::Capabilities => format!("the stream gives `{path}` file capabilities"),
            Why::BadMode => format!("the stream gives `{path}` a malformed mode"),
            Why::Malformed => "the stream has a malformed command".to_string(),
        }
    }
}

/// btrfs send's temporary name of a new inode: `o<ino>-<gen>-<n>`, as the
/// last path component.
fn is_orphan_name(path: &[u8]) -> bool {
    let last = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    let Some(rest) = last.strip_prefix(b"o") else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|b| *b == b'-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

impl StreamVet {
    pub fn new() -> StreamVet {
        StreamVet::default()
    }

    /// Take `data`; returns how many bytes at the front of
    /// [`pending`](Self::pending) are vetted (whole commands) and may be
    /// passed on, or why the stream is refused.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, String> {
        self.pending.extend_from_slice(data);
        if self.ended {
            self.parsed = self.pending.len();
            return Ok(self.parsed);
        }
        if self.version.is_none() {
            if self.pending.len() < HEADER {
                return Ok(0);
            }
            if &self.pending[..MAGIC.len()] != MAGIC {
                return Err("not a btrfs send stream".into());
            }
            let v = u32::from_le_bytes(
                self.pending[MAGIC.len()..HEADER]
                    .try_into()
                    .expect("4 bytes"),
            );
            self.version = Some(v);
            self.parsed = HEADER;
        }
        let v2 = self.version.is_some_and(|v| v >= 2);
        while self.pending.len() - self.parsed >= CMD_HEADER {
            let at = self.parsed;
            let buf = &self.pending;
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let cmd = u16::from_le_bytes([buf[at + 4], buf[at + 5]]);
            if len > MAX_CMD {
                return Err(format!(
                    "a command of {len} bytes (more than {MAX_CMD}) is not a btrfs send stream"
                ));
            }
            if buf.len() - at - CMD_HEADER < len {
                break;
            }
            let body = &buf[at + CMD_HEADER..at + CMD_HEADER + len];
            self.parsed = at + CMD_HEADER + len;
            if let Some(h) = &self.held {
                // Waiting for the held file's real name.
                if cmd == C_RENAME {
                    let attrs = attributes(body, v2)?;
                    let from = last_attr(&attrs, A_PATH);
                    if from == Some(h.path.as_slice()) {
                        let to = last_attr(&attrs, A_PATH_TO).unwrap_or(&h.path);
                        return Err(h.why.say(to));
                    }
                }
                if cmd == C_END || self.parsed - h.at > HOLD_LIMIT {
                    return Err(h.why.say(&h.path));
                }
                continue;
            }
            if let Err((why, path)) = check_command(cmd, body, v2) {
                if !is_orphan_name(&path) {
                    return Err(why.say(&path));
                }
                self.held = Some(Held { at, why, path });
                continue;
            }
            if cmd == C_END {
                self.ended = true;
                self.parsed = self.pending.len();
                break;
            }
        }
        Ok(self.held.as_ref().map_or(self.parsed, |h| h.at))
    }

    /// The bytes taken and not yet passed on.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// The first `n` pending bytes were passed on.
    pub fn consume(&mut self, n: usize) {
        self.pending.drain(..n);
        self.parsed -= n;
        if let Some(h) = &mut self.held {
            h.at -= n;
        }
    }

    /// The end of the input: why the stream is refused, if a refused
    /// command is still held back for its name.
    pub fn finish(&self) -> Result<(), String> {
        match &self.held {
            Some(h) => Err(h.why.say(&h.path)),
            None => Ok(()),
        }
    }
}

/// The attributes of a command, as btrfs-progs reads them.
fn attributes(body: &[u8], v2: bool) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body.len() - i < 2 {
            return Err("a truncated attribute".into());
        }
        let t = u16::from_le_bytes([body[i], body[i + 1]]);
        if v2 && t == A_DATA {
            out.push((t, &body[i + 2..]));
            break;
        }
        if body.len() - i < 4 {
            return Err("a truncated attribute".into());
        }
        let l = u16::from_le_bytes([body[i + 2], body[i + 3]]) as usize;
        if body.len() - i - 4 < l {
            return Err("an attribute longer than its command".into());
        }
        out.push((t, &body[i + 4..i + 4 + l]));
        i += 4 + l;
    }
    Ok(out)
}

/// The value btrfs-progs uses: the last of a repeated attribute.
fn last_attr<'a>(attrs: &[(u16, &'a [u8])], t: u16) -> Option<&'a [u8]> {
    attrs.iter().rev().find(|(a, _)| *a == t).map(|(_, v)| *v)
}

/// A command that would make something privileged: what, and its path.
fn check_command(cmd: u16, body: &[u8], v2: bool) -> Result<(), (Why, Vec<u8>)> {
    if !matches!(cmd, C_MKNOD | C_MKFIFO | C_MKSOCK | C_CHMOD | C_SET_XATTR) {
        return Ok(());
    }
    let attrs = attributes(body, v2).map_err(|_| (Why::Malformed, Vec::new()))?;
    let path = last_attr(&attrs, A_PATH).unwrap_or_default().to_vec();
    if cmd == C_SET_XATTR {
        for (_, name) in attrs.iter().filter(|(t, _)| *t == A_XATTR_NAME) {
            if *name == b"security.capability" {
                return Err((Why::Capabilities, path));
            }
        }
        return Ok(());
    }
    for (_, raw) in attrs.iter().filter(|(t, _)| *t == A_MODE) {
        let Ok(bytes) = <[u8; 8]>::try_from(*raw) else {
            return Err((Why::BadMode, path));
        };
        let mode = u64::from_le_bytes(bytes);
        if cmd == C_MKNOD && matches!(mode & S_IFMT, S_IFCHR | S_IFBLK) {
            return Err((Why::Device, path));
        }
        if mode & S_ISUID != 0 {
            return Err((Why::SetUid(mode & 0o7777), path));
        }
        if mode & S_ISGID != 0 {
            return Err((Why::SetGid(mode & 0o7777), path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(t: u16, v: &[u8]) -> Vec<u8> {
        let mut o = t.to_le_bytes().to_vec();
        o.extend_from_slice(&(v.len() as u16).to_le_bytes());
        o.extend_from_slice(v);
        o
    }

    fn command(cmd: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let mut o = (body.len() as u32).to_le_bytes().to_vec();
        o.extend_from_slice(&cmd.to_le_bytes());
        o.extend_from_slice(&0u32.to_le_bytes());
        o.extend_from_slice(&body);
        o
    }

    fn stream(version: u32, cmds: &[Vec<u8>]) -> Vec<u8> {
        let mut o = MAGIC.to_vec();
        o.extend_from_slice(&version.to_le_bytes());
        for c in cmds {
            o.extend_from_slice(c);
        }
        o
    }

    fn chmod(path: &str, mode: u64) -> Vec<u8> {
        command(
            C_CHMOD,
            &[
                tlv(A_PATH, path.as_bytes()),
                tlv(A_MODE, &mode.to_le_bytes()),
            ],
        )
    }

    /// Fed in pieces of every size, a stream is vetted the same way; the
    /// bytes passed on never include a refused command.
    fn vet(s: &[u8]) -> Result<usize, String> {
        let mut results = Vec::new();
        for piece in [s.len().max(1), 1, 3, 7, 64] {
            let mut v = StreamVet::new();
            let mut passed = Vec::new();
            let mut res = Ok(());
            for c in s.chunks(piece) {
                match v.feed(c) {
                    Ok(n) => {
                        passed.extend_from_slice(&v.pending()[..n]);
                        v.consume(n);
                    }
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            let res = res.and_then(|()| v.finish());
            assert!(s.starts_with(&passed));
            results.push(res.map(|()| passed.len()));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        results.remove(0)
    }

    #[test]
    fn ordinary_files_pass_privileged_ones_are_refused() {
        let end = command(C_END, &[]);
        let ok = stream(
            1,
            &[chmod("d", 0o2775 & 0o777), chmod("f", 0o644), end.clone()],
        );
        assert_eq!(vet(&ok), Ok(ok.len()));
        let fifo = command(
            C_MKFIFO,
            &[tlv(A_PATH, b"p"), tlv(A_MODE, &(0o010644u64).to_le_bytes())],
        );
        assert!(vet(&stream(1, &[fifo, end.clone()])).is_ok());

        let e = vet(&stream(1, &[chmod("bin/id", 0o4755), end.clone()])).unwrap_err();
        assert!(e.contains("`bin/id` set-uid (mode 4755)"), "{e}");
        let e = vet(&stream(1, &[chmod("dir", 0o2775)])).unwrap_err();
        assert!(e.contains("set-gid"), "{e}");
        let dev = command(
            C_MKNOD,
            &[
                tlv(A_PATH, b"null"),
                tlv(A_MODE, &(0o020666u64).to_le_bytes()),
                tlv(8, &0x103u64.to_le_bytes()),
            ],
        );
        assert!(vet(&stream(1, &[dev])).unwrap_err().contains("device node"));
        let blk = command(
            C_MKNOD,
            &[
                tlv(A_PATH, b"sda"),
                tlv(A_MODE, &(0o060600u64).to_le_bytes()),
            ],
        );
        assert!(vet(&stream(2, &[blk])).unwrap_err().contains("device node"));
        let cap = command(
            C_SET_XATTR,
            &[
                tlv(A_PATH, b"bin/x"),
                tlv(A_XATTR_NAME, b"security.capability"),
                tlv(14, b"\x01\x00\x00\x02"),
            ],
        );
        assert!(
            vet(&stream(1, &[cap]))
                .unwrap_err()
                .contains("capabilities")
        );
        // A repeated mode: btrfs-progs keeps the last; every one is checked.
        let twice = command(
            C_CHMOD,
            &[
                tlv(A_PATH, b"f"),
                tlv(A_MODE, &0o644u64.to_le_bytes()),
                tlv(A_MODE, &0o4755u64.to_le_bytes()),
            ],
        );
        assert!(vet(&stream(1, &[twice])).is_err());
        let short = command(C_CHMOD, &[tlv(A_PATH, b"f"), tlv(A_MODE, &[1, 2])]);
        assert!(vet(&stream(1, &[short])).unwrap_err().contains("malformed"));
        assert!(vet(b"not-a-stream-at-all!").is_err());
    }

    #[test]
    fn v2_data_runs_to_the_end_of_the_command_as_btrfs_progs_reads_it() {
        // The same bytes read two ways: in v1 an empty DATA attribute and
        // then a set-uid mode; in v2 a DATA attribute has no length, so
        // everything after it is data, not a mode (btrfs-progs reads it so).
        let c = command(
            C_CHMOD,
            &[
                tlv(A_PATH, b"f"),
                tlv(A_DATA, &[]),
                tlv(A_MODE, &0o4755u64.to_le_bytes()),
            ],
        );
        assert!(vet(&stream(2, std::slice::from_ref(&c))).is_ok());
        assert!(vet(&stream(1, &[c])).unwrap_err().contains("set-uid"));
    }

    #[test]
    fn a_new_file_is_named_by_its_real_name() {
        let orphan = b"o257-9-0";
        let dev = command(
            C_MKNOD,
            &[
                tlv(A_PATH, orphan),
                tlv(A_MODE, &(0o020666u64).to_le_bytes()),
            ],
        );
        let rename = command(
            C_RENAME,
            &[tlv(A_PATH, orphan), tlv(A_PATH_TO, b"dev/null")],
        );
        let end = command(C_END, &[]);
        let e = vet(&stream(1, &[dev.clone(), rename, end.clone()])).unwrap_err();
        assert!(e.contains("`dev/null` a device node"), "{e}");
        // No rename before the end (or the input's end): the temporary name.
        let e = vet(&stream(1, &[dev.clone(), end])).unwrap_err();
        assert!(e.contains("`o257-9-0` a device node"), "{e}");
        let e = vet(&stream(1, &[dev])).unwrap_err();
        assert!(e.contains("`o257-9-0`"), "{e}");
        assert!(
            is_orphan_name(b"a/o12-3-0") && !is_orphan_name(b"o12-3") && !is_orphan_name(b"ox-1-2")
        );
    }

    #[test]
    fn after_end_nothing_is_decoded_and_a_huge_command_is_refused() {
        let s = stream(1, &[command(C_END, &[]), chmod("x", 0o4755)]);
        assert_eq!(vet(&s), Ok(s.len()));
        let mut huge = stream(1, &[]);
        huge.extend_from_slice(&(u32::MAX).to_le_bytes());
        huge.extend_from_slice(&[0; 6]);
        assert!(vet(&huge).unwrap_err().contains("more than"));
    }
}
