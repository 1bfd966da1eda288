//! Directory entries from one block of a ZFS directory's ZAP, as a send
//! stream carries it (a `DRR_WRITE` of a `DMU_OT_DIRECTORY_CONTENTS`
//! object). The layouts are OpenZFS's `include/sys/zap_impl.h` and
//! `zap_leaf.h`:
//!
//! - a *microzap* (`ZBT_MICRO`, small directories with short names): a
//!   64-byte header, then 64-byte entries: the value (the dirent), a
//!   collision differentiator, and a name of up to 50 bytes;
//! - a *fat ZAP* leaf (`ZBT_LEAF`): a 48-byte header, a hash table of
//!   `size / 32` u16s, then 24-byte chunks; an entry chunk points to chains
//!   of array chunks (21 bytes each) holding its name and its value (the
//!   value's integers big-endian). The fat ZAP's header block and pointer
//!   tables hold no names and are passed over.
//!
//! A directory entry's value is the dirent: the object number in its low
//! 48 bits, the file type (`IFTODT`) in its top 4.
//!
//! Hostile input: every index is checked against the block, a chain is
//! followed at most as many steps as the block has chunks, and a block
//! that does not look like either layout yields nothing.

const ZBT_LEAF: u64 = 1 << 63;
const ZBT_MICRO: u64 = (1 << 63) + 3;
const ZAP_LEAF_MAGIC: u32 = 0x2AB_1EAF;
const MZAP_ENT: usize = 64;
const MZAP_NAME: usize = 50;
const CHUNK: usize = 24;
const ARRAY_BYTES: usize = CHUNK - 3;
const CHUNK_ENTRY: u8 = 252;
const CHUNK_ARRAY: u8 = 251;
const CHAIN_END: u16 = 0xffff;
/// `DT_REG`: a regular file.
pub const DT_REG: u64 = 8;

/// The object a dirent names and its type.
pub fn dirent(value: u64) -> (u64, u64) {
    (value & ((1 << 48) - 1), value >> 60)
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Calls `each(name, dirent)` for every entry of the block (`name`
/// without its terminating NUL); returns how many.
pub fn entries(block: &[u8], each: &mut dyn FnMut(&[u8], u64)) -> usize {
    match le64(block, 0) {
        Some(ZBT_MICRO) => micro(block, each),
        Some(ZBT_LEAF) => leaf(block, each).unwrap_or(0),
        _ => 0,
    }
}

fn micro(block: &[u8], each: &mut dyn FnMut(&[u8], u64)) -> usize {
    let mut n = 0;
    for e in block.chunks_exact(MZAP_ENT).skip(1) {
        let name = &e[MZAP_ENT - MZAP_NAME..];
        let len = name.iter().position(|b| *b == 0).unwrap_or(MZAP_NAME);
        if len == 0 {
            continue;
        }
        let value = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
        each(&name[..len], value);
        n += 1;
    }
    n
}

/// A fat ZAP leaf; `None`: not one (bad size or magic).
fn leaf(block: &[u8], each: &mut dyn FnMut(&[u8], u64)) -> Option<usize> {
    let size = block.len();
    if !size.is_power_of_two() || size < 512 {
        return None;
    }
    if u32::from_le_bytes(block.get(24..28)?.try_into().ok()?) != ZAP_LEAF_MAGIC {
        return None;
    }
    let hash_entries = size / 32;
    let start = 48 + 2 * hash_entries;
    let chunks = (size - 2 * hash_entries) / CHUNK - 2;
    let chunk = |i: usize| -> Option<&[u8]> {
        (i < chunks).then(|| &block[start + i * CHUNK..start + (i + 1) * CHUNK])
    };
    // The bytes of an array chain, `want` of them at most.
    let array = |first: u16, want: usize, out: &mut Vec<u8>| -> Option<()> {
        let mut at = first;
        for _ in 0..chunks {
            if out.len() >= want {
                return Some(());
            }
            let c = chunk(usize::from(at))?;
            if c[0] != CHUNK_ARRAY {
                return None;
            }
            let n = (want - out.len()).min(ARRAY_BYTES);
            out.extend_from_slice(&c[1..1 + n]);
            at = le16(c, 1 + ARRAY_BYTES)?;
            if at == CHAIN_END {
                break;
            }
        }
        (out.len() >= want).then_some(())
    };
    let mut n = 0;
    let mut name = Vec::new();
    let mut value = Vec::new();
    for i in 0..chunks {
        let c = chunk(i)?;
        if c[0] != CHUNK_ENTRY {
            continue;
        }
        let (value_intlen, name_chunk, name_len) = (c[1], le16(c, 4)?, le16(c, 6)?);
        let (value_chunk, value_ints) = (le16(c, 8)?, le16(c, 10)?);
        // A directory entry: a string name, one 8-byte value.
        if value_intlen != 8 || value_ints != 1 || name_len < 2 {
            continue;
        }
        name.clear();
        value.clear();
        if array(name_chunk, usize::from(name_len), &mut name).is_none()
            || array(value_chunk, 8, &mut value).is_none()
        {
            continue;
        }
        let Some(len) = name.iter().position(|b| *b == 0) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        let v = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
        each(&name[..len], v);
        n += 1;
    }
    Some(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A microzap block naming `(name, dirent)`.
    pub(crate) fn micro_block(size: usize, names: &[(&str, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; size];
        b[..8].copy_from_slice(&ZBT_MICRO.to_le_bytes());
        for (i, (name, value)) in names.iter().enumerate() {
            let at = MZAP_ENT * (i + 1);
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            b[at + 14..at + 14 + name.len()].copy_from_slice(name.as_bytes());
        }
        b
    }

    /// A fat ZAP leaf naming `(name, dirent)`, laid out as `zap_leaf.c`
    /// does: entry chunk, then the name's array chunks, then the value's.
    pub(crate) fn leaf_block(size: usize, names: &[(&str, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; size];
        b[..8].copy_from_slice(&ZBT_LEAF.to_le_bytes());
        b[24..28].copy_from_slice(&ZAP_LEAF_MAGIC.to_le_bytes());
        let start = 48 + 2 * (size / 32);
        let mut next = 0usize;
        let put_array = |b: &mut Vec<u8>, bytes: &[u8], next: &mut usize| -> u16 {
            let first = *next as u16;
            let pieces: Vec<&[u8]> = bytes.chunks(ARRAY_BYTES).collect();
            for (k, p) in pieces.iter().enumerate() {
                let at = start + *next * CHUNK;
                b[at] = CHUNK_ARRAY;
                b[at + 1..at + 1 + p.len()].copy_from_slice(p);
                let link = if k + 1 == pieces.len() {
                    CHAIN_END
                } else {
                    (*next + 1) as u16
                };
                b[at + 22..at + 24].copy_from_slice(&link.to_le_bytes());
                *next += 1;
            }
            first
        };
        for (name, value) in names {
            let entry = next;
            next += 1;
            let mut nul = name.as_bytes().to_vec();
            nul.push(0);
            let nc = put_array(&mut b, &nul, &mut next);
            let vc = put_array(&mut b, &value.to_be_bytes(), &mut next);
            let at = start + entry * CHUNK;
            b[at] = CHUNK_ENTRY;
            b[at + 1] = 8;
            b[at + 2..at + 4].copy_from_slice(&CHAIN_END.to_le_bytes());
            b[at + 4..at + 6].copy_from_slice(&nc.to_le_bytes());
            b[at + 6..at + 8].copy_from_slice(&(nul.len() as u16).to_le_bytes());
            b[at + 8..at + 10].copy_from_slice(&vc.to_le_bytes());
            b[at + 10..at + 12].copy_from_slice(&1u16.to_le_bytes());
        }
        b
    }

    fn all(block: &[u8]) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        entries(block, &mut |n, v| {
            out.push((String::from_utf8_lossy(n).into_owned(), v))
        });
        out
    }

    #[test]
    fn microzap_and_leaf_entries_are_read() {
        let reg = |o: u64| (DT_REG << 60) | o;
        let names = [
            ("1.msg", reg(5)),
            ("dovecot.index", reg(9)),
            ("cur", (4 << 60) | 7),
        ];
        let want: Vec<(String, u64)> = names.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(all(&micro_block(1024, &names)), want);
        let long = "1733500000.M123P456.mail.example.org,S=1234,W=1260:2,S";
        let leaf_names = [names[0], names[1], (long, reg(1 << 40))];
        let got = all(&leaf_block(16384, &leaf_names));
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (long.to_string(), reg(1 << 40)));
        assert_eq!(dirent(got[2].1), (1 << 40, DT_REG));
    }

    #[test]
    fn damaged_blocks_yield_what_holds_and_never_panic() {
        let reg = (DT_REG << 60) | 5;
        let mut b = leaf_block(4096, &[("a.msg", reg), ("b.msg", reg)]);
        // A name chain pointing past the chunks, and a loop.
        let start = 48 + 2 * (4096 / 32);
        b[start + 4..start + 6].copy_from_slice(&60000u16.to_le_bytes());
        assert_eq!(all(&b).len(), 1);
        let mut b = leaf_block(4096, &[("a.msg.with.a.long.name.over.one.chunk", reg)]);
        b[start + CHUNK + 22..start + CHUNK + 24].copy_from_slice(&1u16.to_le_bytes());
        assert!(all(&b).is_empty());
        // Bad magic, odd sizes, another block type: nothing.
        let mut b = leaf_block(4096, &[("a.msg", reg)]);
        b[24] ^= 1;
        assert!(all(&b).is_empty());
        assert!(all(&leaf_block(4096, &[("a.msg", reg)])[..3000]).is_empty());
        assert!(all(&[0u8; 7]).is_empty());
        let mut hdr = vec![0u8; 4096];
        hdr[..8].copy_from_slice(&((1u64 << 63) + 1).to_le_bytes());
        assert!(all(&hdr).is_empty());
    }
}
