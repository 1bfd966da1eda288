//! A writer (and checking parser) of btrfs send streams, format v1, for
//! tests that play a hostile primary: it writes exactly the commands it is
//! told to, paths included, so a test can send what `btrfs send` never would
//! (symlinks out of the subvolume, `../` paths, odd subvolume names, a second
//! stream appended to a first).
//!
//! Layout (btrfs-progs `common/send-stream.c`, kernel `fs/btrfs/send.h`):
//! `"btrfs-stream\0"`, le32 version; then commands: le32 payload length,
//! le16 command, le32 crc32c of header + payload with the crc field zeroed,
//! then the payload as TLV attributes (le16 type, le16 length, data).
//! The crc32c is the raw Castagnoli CRC seeded with 0 and not inverted
//! (`btrfs_crc32c(0, ...)`), checked against a real `btrfs send` stream in
//! tests/hostile.rs.
#![allow(dead_code)]

pub const MAGIC: &[u8; 13] = b"btrfs-stream\0";
pub const VERSION: u32 = 1;
/// `btrfs send` writes file data in chunks of this size (BTRFS_SEND_READ_SIZE).
pub const WRITE_CHUNK: usize = 48 * 1024;

pub mod cmd {
    pub const SUBVOL: u16 = 1;
    pub const SNAPSHOT: u16 = 2;
    pub const MKFILE: u16 = 3;
    pub const MKDIR: u16 = 4;
    pub const SYMLINK: u16 = 8;
    pub const RENAME: u16 = 9;
    pub const LINK: u16 = 10;
    pub const UNLINK: u16 = 11;
    pub const RMDIR: u16 = 12;
    pub const WRITE: u16 = 15;
    pub const TRUNCATE: u16 = 17;
    pub const CHMOD: u16 = 18;
    pub const CHOWN: u16 = 19;
    pub const UTIMES: u16 = 20;
    pub const END: u16 = 21;
    pub const UPDATE_EXTENT: u16 = 22;
}

pub mod attr {
    pub const UUID: u16 = 1;
    pub const CTRANSID: u16 = 2;
    pub const INO: u16 = 3;
    pub const SIZE: u16 = 4;
    pub const MODE: u16 = 5;
    pub const UID: u16 = 6;
    pub const GID: u16 = 7;
    pub const RDEV: u16 = 8;
    pub const CTIME: u16 = 9;
    pub const MTIME: u16 = 10;
    pub const ATIME: u16 = 11;
    pub const OTIME: u16 = 12;
    pub const PATH: u16 = 15;
    pub const PATH_TO: u16 = 16;
    pub const PATH_LINK: u16 = 17;
    pub const FILE_OFFSET: u16 = 18;
    pub const DATA: u16 = 19;
    pub const CLONE_UUID: u16 = 20;
    pub const CLONE_CTRANSID: u16 = 21;
}

fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    t
}

/// Raw CRC-32C (Castagnoli, reflected) from `seed`, without the usual
/// pre/post inversion: what btrfs calls `crc32c(seed, data, len)`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    let t = crc32c_table();
    let mut crc = seed;
    for &b in data {
        crc = t[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The checksum btrfs puts in a command header.
pub fn command_crc(cmd_with_zeroed_crc: &[u8]) -> u32 {
    crc32c_raw(0, cmd_with_zeroed_crc)
}

/// A deterministic uuid (v4-shaped) from a seed.
pub fn uuid_from_seed(seed: u64) -> [u8; 16] {
    let h = blake3::hash(&seed.to_le_bytes());
    let mut u = [0u8; 16];
    u.copy_from_slice(&h.as_bytes()[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// The form `btrfs subvolume show` prints (and snapsite announces as storage id).
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn parse_uuid(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    assert_eq!(hex.len(), 32, "not a uuid: {s}");
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    u
}

/// One TLV attribute value.
pub enum Val<'a> {
    Bytes(&'a [u8]),
    U64(u64),
    /// le64 seconds + le32 nanoseconds.
    Time(u64, u32),
}

/// Builds a send stream in memory, command by command.
pub struct StreamWriter {
    buf: Vec<u8>,
    next_ino: u64,
}

impl Default for StreamWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamWriter {
    pub fn new() -> StreamWriter {
        let mut buf = MAGIC.to_vec();
        buf.extend_from_slice(&VERSION.to_le_bytes());
        StreamWriter { buf, next_ino: 257 }
    }

    /// Continue an existing byte vector (to append a second stream, header included).
    pub fn appended_to(mut bytes: Vec<u8>) -> StreamWriter {
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        StreamWriter {
            buf: bytes,
            next_ino: 257,
        }
    }

    /// Any command with any attributes, checksummed like `btrfs send` does.
    pub fn command(&mut self, cmd: u16, attrs: &[(u16, Val)]) -> &mut Self {
        let mut payload = Vec::new();
        for (t, v) in attrs {
            let data: Vec<u8> = match v {
                Val::Bytes(b) => b.to_vec(),
                Val::U64(n) => n.to_le_bytes().to_vec(),
                Val::Time(s, ns) => {
                    let mut d = s.to_le_bytes().to_vec();
                    d.extend_from_slice(&ns.to_le_bytes());
                    d
                }
            };
            assert!(data.len() <= u16::MAX as usize, "attribute too long");
            payload.extend_from_slice(&t.to_le_bytes());
            payload.extend_from_slice(&(data.len() as u16).to_le_bytes());
            payload.extend_from_slice(&data);
        }
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&cmd.to_le_bytes());
        self.buf.extend_from_slice(&[0u8; 4]);
        self.buf.extend_from_slice(&payload);
        let crc = command_crc(&self.buf[start..]);
        self.buf[start + 6..start + 10].copy_from_slice(&crc.to_le_bytes());
        self
    }

    fn ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }

    /// A new subvolume `path` whose Received UUID will be `uuid`.
    pub fn subvol(&mut self, path: &str, uuid: [u8; 16], ctransid: u64) -> &mut Self {
        self.command(
            cmd::SUBVOL,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::UUID, Val::Bytes(&uuid)),
                (attr::CTRANSID, Val::U64(ctransid)),
            ],
        )
    }

    /// An incremental stream's start: a snapshot of the subvolume whose
    /// Received UUID is `parent_uuid` (ctransid `parent_ctransid`).
    pub fn snapshot(
        &mut self,
        path: &str,
        uuid: [u8; 16],
        ctransid: u64,
        parent_uuid: [u8; 16],
        parent_ctransid: u64,
    ) -> &mut Self {
        self.command(
            cmd::SNAPSHOT,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::UUID, Val::Bytes(&uuid)),
                (attr::CTRANSID, Val::U64(ctransid)),
                (attr::CLONE_UUID, Val::Bytes(&parent_uuid)),
                (attr::CLONE_CTRANSID, Val::U64(parent_ctransid)),
            ],
        )
    }

    /// A new inode at `path`, made by command `c` (MKDIR, MKFILE).
    fn make_inode(&mut self, c: u16, path: &str) -> &mut Self {
        let ino = self.ino();
        self.command(
            c,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::INO, Val::U64(ino)),
            ],
        )
    }

    pub fn mkdir(&mut self, path: &str) -> &mut Self {
        self.make_inode(cmd::MKDIR, path)
    }

    pub fn mkfile(&mut self, path: &str) -> &mut Self {
        self.make_inode(cmd::MKFILE, path)
    }

    /// `path` becomes a symlink to `target` (any string: absolute, `..`).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let ino = self.ino();
        self.command(
            cmd::SYMLINK,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::INO, Val::U64(ino)),
                (attr::PATH_LINK, Val::Bytes(target.as_bytes())),
            ],
        )
    }

    pub fn rename(&mut self, from: &str, to: &str) -> &mut Self {
        self.command(
            cmd::RENAME,
            &[
                (attr::PATH, Val::Bytes(from.as_bytes())),
                (attr::PATH_TO, Val::Bytes(to.as_bytes())),
            ],
        )
    }

    /// Hard link: `path` becomes another name of `existing`.
    pub fn link(&mut self, path: &str, existing: &str) -> &mut Self {
        self.command(
            cmd::LINK,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::PATH_LINK, Val::Bytes(existing.as_bytes())),
            ],
        )
    }

    pub fn unlink(&mut self, path: &str) -> &mut Self {
        self.command(cmd::UNLINK, &[(attr::PATH, Val::Bytes(path.as_bytes()))])
    }

    /// Write `data` at `offset`, in `btrfs send`-sized chunks.
    pub fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> &mut Self {
        let mut off = 0usize;
        loop {
            let end = (off + WRITE_CHUNK).min(data.len());
            self.command(
                cmd::WRITE,
                &[
                    (attr::PATH, Val::Bytes(path.as_bytes())),
                    (attr::FILE_OFFSET, Val::U64(offset + off as u64)),
                    (attr::DATA, Val::Bytes(&data[off..end])),
                ],
            );
            off = end;
            if off >= data.len() {
                break;
            }
        }
        self
    }

    pub fn truncate(&mut self, path: &str, size: u64) -> &mut Self {
        self.command(
            cmd::TRUNCATE,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::SIZE, Val::U64(size)),
            ],
        )
    }

    pub fn chmod(&mut self, path: &str, mode: u64) -> &mut Self {
        self.command(
            cmd::CHMOD,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::MODE, Val::U64(mode)),
            ],
        )
    }

    pub fn chown(&mut self, path: &str, uid: u64, gid: u64) -> &mut Self {
        self.command(
            cmd::CHOWN,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::UID, Val::U64(uid)),
                (attr::GID, Val::U64(gid)),
            ],
        )
    }

    /// Times as (seconds, nanoseconds) since the epoch.
    pub fn utimes(
        &mut self,
        path: &str,
        atime: (u64, u32),
        mtime: (u64, u32),
        ctime: (u64, u32),
    ) -> &mut Self {
        self.command(
            cmd::UTIMES,
            &[
                (attr::PATH, Val::Bytes(path.as_bytes())),
                (attr::ATIME, Val::Time(atime.0, atime.1)),
                (attr::MTIME, Val::Time(mtime.0, mtime.1)),
                (attr::CTIME, Val::Time(ctime.0, ctime.1)),
            ],
        )
    }

    /// A file with content in one go (mkfile + write + chmod 0644).
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.mkfile(path).write(path, 0, data).chmod(path, 0o644)
    }

    pub fn end(&mut self) -> &mut Self {
        self.command(cmd::END, &[])
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// One parsed command: its number and raw attributes in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub cmd: u16,
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl Command {
    pub fn attr(&self, t: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }
    pub fn path(&self) -> Option<String> {
        self.attr(attr::PATH)
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

/// Parse one or more concatenated v1 streams, checking every command's crc.
pub fn parse(bytes: &[u8]) -> Result<Vec<Command>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        if bytes.len() < pos + 17 || &bytes[pos..pos + 13] != MAGIC {
            return Err(format!("no stream header at {pos}"));
        }
        let v = u32::from_le_bytes(bytes[pos + 13..pos + 17].try_into().unwrap());
        if v != VERSION {
            return Err(format!("stream version {v} at {pos}, only 1 is parsed"));
        }
        pos += 17;
        loop {
            if pos == bytes.len() {
                return Ok(out);
            }
            if bytes.len() < pos + 10 {
                return Err(format!("cut command header at {pos}"));
            }
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let c = u16::from_le_bytes(bytes[pos + 4..pos + 6].try_into().unwrap());
            let crc = u32::from_le_bytes(bytes[pos + 6..pos + 10].try_into().unwrap());
            if bytes.len() < pos + 10 + len {
                return Err(format!("cut command at {pos}"));
            }
            let mut copy = bytes[pos..pos + 10 + len].to_vec();
            copy[6..10].fill(0);
            let want = command_crc(&copy);
            if want != crc {
                return Err(format!(
                    "crc mismatch on command {c} at {pos}: stream {crc:08x}, computed {want:08x}"
                ));
            }
            let payload = &bytes[pos + 10..pos + 10 + len];
            let mut attrs = Vec::new();
            let mut p = 0usize;
            while p < payload.len() {
                if payload.len() < p + 4 {
                    return Err(format!("cut attribute in command at {pos}"));
                }
                let t = u16::from_le_bytes(payload[p..p + 2].try_into().unwrap());
                let l = u16::from_le_bytes(payload[p + 2..p + 4].try_into().unwrap()) as usize;
                if payload.len() < p + 4 + l {
                    return Err(format!("attribute {t} overruns command at {pos}"));
                }
                attrs.push((t, payload[p + 4..p + 4 + l].to_vec()));
                p += 4 + l;
            }
            pos += 10 + len;
            out.push(Command { cmd: c, attrs });
            if c == cmd::END {
                break;
            }
        }
    }
    Ok(out)
}

/// Write parsed commands back (one stream): the writer's encoding of what
/// `btrfs send` produced, for a byte-for-byte comparison.
pub fn reencode(cmds: &[Command]) -> Vec<u8> {
    let mut w = StreamWriter::new();
    for c in cmds {
        let attrs: Vec<(u16, Val)> = c
            .attrs
            .iter()
            .map(|(t, v)| (*t, Val::Bytes(v.as_slice())))
            .collect();
        w.command(c.cmd, &attrs);
    }
    w.into_bytes()
}
