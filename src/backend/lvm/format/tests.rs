use super::*;
use std::io::Write;

fn header(kind: StreamKind, size: u64) -> Header {
    Header {
        version: VERSION,
        kind,
        size,
        block_size: 65536,
        snapshot: "20261127T080000.123Z-full".into(),
        storage_id: Some("aWuivk-zyKd-8Tko-IYJJ-eeA3-f2gg-z1NQXu".into()),
        base: None,
        base_storage_id: None,
        resume: None,
        overwritten: None,
    }
}

fn device(size: u64, fill: &[(u64, u8, usize)]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.set_len(size).unwrap();
    for (off, byte, len) in fill {
        f.write_all_at(&vec![*byte; *len], *off).unwrap();
    }
    f.flush().unwrap();
    f
}

fn read_all(f: &File, size: u64) -> Vec<u8> {
    let mut v = vec![0; size as usize];
    f.read_exact_at(&mut v, 0).unwrap();
    v
}

/// The whole stream of `dev`'s extents `ext` (a `kind` send of `size` bytes).
fn encode(dev: &File, kind: StreamKind, size: u64, ext: Vec<Extent>) -> Vec<u8> {
    let mut stream = Vec::new();
    Encoder::new(dev.try_clone().unwrap(), &header(kind, size), ext)
        .read_to_end(&mut stream)
        .unwrap();
    stream
}

#[test]
fn full_stream_skips_zeros_and_round_trips() {
    let size = 8 << 20;
    let src = device(size, &[(0, 7, 100_000), (3 << 20, 9, 1 << 20)]);
    let ext = vec![Extent {
        offset: 0,
        len: size,
        data: true,
    }];
    let stream = encode(&src, StreamKind::Full, size, ext);
    // 100_000 bytes round up to two 64 KiB units, plus 1 MiB
    assert!(
        stream.len() < (1 << 20) + 2 * 65536 + 4096,
        "{}",
        stream.len()
    );
    let dst = device(size, &[]);
    assert!(decode_into(&stream, &dst, 7), "end record verifies");
    assert_eq!(read_all(&src, size), read_all(&dst, size));
}

/// The sink's logic in small: hash the records, write, zero; returns
/// whether the end record matched.
fn decode_into(stream: &[u8], dev: &File, piece: usize) -> bool {
    let mut d = Decoder::default();
    let mut h = RecordHash::default();
    let mut ok = false;
    for p in stream.chunks(piece) {
        d.feed(p, &mut |ev| {
            match ev {
                Event::Header(_) => {}
                Event::Write { offset, len } => h.begin_write(offset, len),
                Event::Data { offset, data } => {
                    h.more(data);
                    dev.write_all_at(data, offset).unwrap();
                }
                Event::Zero { offset, len } => {
                    h.zero(offset, len);
                    dev.write_all_at(&vec![0; len as usize], offset).unwrap();
                }
                Event::End { data_bytes, hash } => {
                    ok = data_bytes == h.data_bytes && hash == h.finish();
                }
            }
            Ok(())
        })
        .unwrap();
    }
    assert!(d.done());
    ok
}

#[test]
fn incremental_stream_writes_and_zeroes() {
    let size = 4 << 20;
    let new = device(size, &[(0, 1, 4 << 20), (65536, 2, 65536)]);
    new.write_all_at(&vec![0; 131072], 2 << 20).unwrap();
    let ext = vec![
        Extent {
            offset: 65536,
            len: 65536,
            data: true,
        },
        Extent {
            offset: 2 << 20,
            len: 131072,
            data: true, // rewritten with zeros: becomes a Z record
        },
        Extent {
            offset: 3 << 20,
            len: 65536,
            data: false,
        },
    ];
    new.write_all_at(&vec![0; 65536], 3 << 20).unwrap();
    let stream = encode(&new, StreamKind::Incremental, size, ext);
    assert!(stream.len() < 65536 + 1024, "{}", stream.len());
    for piece in [1, 13, 4096, 1 << 20] {
        let dst = device(size, &[(0, 1, 4 << 20)]);
        assert!(decode_into(&stream, &dst, piece), "end record verifies");
        assert_eq!(read_all(&new, size), read_all(&dst, size), "piece {piece}");
    }
}

/// The stream as the first encoder produced it (one `MAX_WRITE` read at
/// a time from each extent's offset, runs of zero and non-zero units):
/// the bytes on the wire must not change with how the device is read.
fn reference_stream(dev: &File, h: &Header, extents: &[Extent]) -> Vec<u8> {
    let json = serde_json::to_vec(h).unwrap();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    let unit = h.block_size.clamp(4096, MAX_WRITE) as usize;
    let mut hash = RecordHash::default();
    for e in extents {
        if !e.data {
            out.push(b'Z');
            out.extend_from_slice(&e.offset.to_be_bytes());
            out.extend_from_slice(&e.len.to_be_bytes());
            hash.zero(e.offset, e.len);
            continue;
        }
        let mut at = e.offset;
        while at < e.offset + e.len {
            let n = (e.offset + e.len - at).min(MAX_WRITE) as usize;
            let mut chunk = vec![0; n];
            dev.read_exact_at(&mut chunk, at).unwrap();
            let zero_at = |i: usize| chunk[i..(i + unit).min(n)].iter().all(|b| *b == 0);
            let mut i = 0;
            while i < n {
                let z = zero_at(i);
                let mut j = i;
                while j < n && zero_at(j) == z {
                    j = (j + unit).min(n);
                }
                let off = at + i as u64;
                if !z {
                    out.push(b'W');
                    out.extend_from_slice(&off.to_be_bytes());
                    out.extend_from_slice(&((j - i) as u32).to_be_bytes());
                    out.extend_from_slice(&chunk[i..j]);
                    hash.write(off, &chunk[i..j]);
                } else if h.kind == StreamKind::Incremental {
                    out.push(b'Z');
                    out.extend_from_slice(&off.to_be_bytes());
                    out.extend_from_slice(&((j - i) as u64).to_be_bytes());
                    hash.zero(off, (j - i) as u64);
                }
                i = j;
            }
            at += n as u64;
        }
    }
    out.push(b'E');
    out.extend_from_slice(&hash.data_bytes.to_be_bytes());
    out.extend_from_slice(&hash.finish());
    out
}

#[test]
fn batched_read_ahead_sends_the_same_bytes_as_one_read_per_record() {
    // 23 MiB + 4 KiB: data and zeros in runs that cross the pieces'
    // and the batches' boundaries, a single non-zero byte at the end
    // of a zero unit, an odd tail.
    let size: u64 = (23 << 20) + 4096;
    let mut x = 7u64;
    let mut data = vec![0u8; size as usize];
    let mut at = 0usize;
    while at < data.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run = 4096 * (1 + (x % 700) as usize);
        let end = (at + run).min(data.len());
        if x % 3 != 0 {
            for (k, b) in data[at..end].iter_mut().enumerate() {
                *b = (x >> (k % 56)) as u8 | 1;
            }
        }
        at = end;
    }
    // 12..20 MiB all data: whole batches sent as they were read
    for (k, b) in data[12 << 20..20 << 20].iter_mut().enumerate() {
        *b = (k % 251) as u8 | 2;
    }
    data[(5 << 20) + 65535] = 0;
    data[(9 << 20) - 1] = 42;
    let dev = tempfile::tempfile().unwrap();
    dev.write_all_at(&data, 0).unwrap();
    let extent = |offset: u64, len: u64, data: bool| Extent { offset, len, data };
    let layouts = [
        vec![extent(0, size, true)],
        vec![
            extent(0, 65536, true),
            extent(65536, 3 << 20, false),
            extent((3 << 20) + 65536, (7 << 20) + 12288, true),
            extent(11 << 20, 0, true),
            extent(12 << 20, size - (12 << 20), true),
        ],
    ];
    for kind in [StreamKind::Full, StreamKind::Incremental] {
        for block in [4096, 65536, 1 << 20] {
            for ext in &layouts {
                let mut h = header(kind, size);
                h.block_size = block;
                let mut got = Vec::new();
                Encoder::new(dev.try_clone().unwrap(), &h, ext.clone())
                    .read_to_end(&mut got)
                    .unwrap();
                let want = reference_stream(&dev, &h, ext);
                assert!(
                    got == want,
                    "{kind:?}, unit {block}, {} extents: {} bytes, want {}",
                    ext.len(),
                    got.len(),
                    want.len()
                );
            }
        }
    }
}

#[test]
fn a_read_error_ends_the_stream_with_the_error_and_a_dropped_encoder_stops() {
    let dev = tempfile::tempfile().unwrap();
    dev.set_len(1 << 20).unwrap();
    let h = header(StreamKind::Full, 8 << 20);
    // The extent runs past the end of the file: a short read.
    let ext = vec![Extent {
        offset: 0,
        len: 8 << 20,
        data: true,
    }];
    let mut out = Vec::new();
    let e = Encoder::new(dev.try_clone().unwrap(), &h, ext.clone())
        .read_to_end(&mut out)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    // Read a little, then drop: the threads are stopped, not leaked
    // blocked on their queues (the drop returns).
    let big = tempfile::tempfile().unwrap();
    big.set_len(64 << 20).unwrap();
    big.write_all_at(&[1u8; 1 << 20], 0).unwrap();
    let mut enc = Encoder::new(
        big,
        &header(StreamKind::Full, 64 << 20),
        vec![Extent {
            offset: 0,
            len: 64 << 20,
            data: true,
        }],
    );
    let mut buf = [0u8; 4096];
    enc.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..MAGIC.len()], MAGIC);
    drop(enc);
}

#[test]
fn decoder_rejects_garbage() {
    let mut d = Decoder::default();
    assert!(d.feed(b"NOTLVM!!", &mut |_| Ok(())).is_err());
    // a write beyond the device
    let h = serde_json::to_vec(&header(StreamKind::Full, 4096)).unwrap();
    let mut s = MAGIC.to_vec();
    s.extend_from_slice(&(h.len() as u32).to_be_bytes());
    s.extend_from_slice(&h);
    s.push(b'W');
    s.extend_from_slice(&4000u64.to_be_bytes());
    s.extend_from_slice(&200u32.to_be_bytes());
    let mut d = Decoder::default();
    let e = d.feed(&s, &mut |_| Ok(())).unwrap_err();
    assert!(e.to_string().contains("beyond"), "{e}");
    // bytes after the end
    let mut s2 = MAGIC.to_vec();
    s2.extend_from_slice(&(h.len() as u32).to_be_bytes());
    s2.extend_from_slice(&h);
    s2.push(b'E');
    s2.extend_from_slice(&[0u8; 40]);
    s2.push(b'W');
    let mut d = Decoder::default();
    assert!(d.feed(&s2, &mut |_| Ok(())).is_err());
}
