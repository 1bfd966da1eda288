//! The archive's per-request deadline (issue 30): an S3 endpoint that
//! accepts a connection and then stalls (as RGW did with a full OSD: it
//! took the PUT and never answered, and `archive` hung for more than ten
//! minutes) fails each request within `request_timeout`, retried
//! `retries` times, with an error naming the archive, the bucket, the
//! object and what timed out. The stalling server is a tiny TCP listener
//! here (no S3 behaviour is needed to stall); everything else about the
//! archive runs against a real Ceph RGW in tests/archive.rs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use snapsite::wire::s3::{Bucket, Credentials, Limits};

/// How the listener treats each connection it accepts.
#[derive(Clone, Copy)]
enum Stall {
    /// Never read, never answer.
    Silent,
    /// Read the request head, answer 200 with a body of 1 MB, send 1000
    /// bytes of it, then nothing.
    MidBody,
}

/// A listener on 127.0.0.1 that holds every connection (until the test
/// ends) and counts them.
struct Staller {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn staller(how: Stall) -> Staller {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            n.fetch_add(1, Ordering::SeqCst);
            if let Stall::MidBody = how {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
                let _ = s.write_all(&[7u8; 1000]);
                let _ = s.flush();
            }
            held.push(s);
        }
    });
    Staller { port, accepted }
}

fn bucket(port: u16, retries: u32) -> Bucket {
    Bucket::new(
        &format!("http://127.0.0.1:{port}"),
        "mail-archive",
        "us-east-1",
        Credentials::new("AKIDEXAMPLE", "secret"),
    )
    .unwrap()
    .with_limits(Limits {
        archive: "offsite".into(),
        timeout: Duration::from_secs(1),
        retries,
    })
}

fn assert_names(e: &str, object: &str, phase: &str) {
    eprintln!("{e}");
    for want in [
        "archive `offsite`",
        "mail-archive",
        object,
        "timed out",
        "request_timeout",
        phase,
    ] {
        assert!(e.contains(want), "`{want}` missing from: {e}");
    }
}

#[test]
fn a_stalled_head_fails_in_time_and_is_retried() {
    let s = staller(Stall::Silent);
    let b = bucket(s.port, 1);
    let t = Instant::now();
    let e = b.head("mail-a/sets/x/index.json").unwrap_err().to_string();
    let took = t.elapsed();
    assert_names(&e, "mail-a/sets/x/index.json", "waiting for the answer");
    assert!(e.contains("gave up after 2 attempts"), "{e}");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 2, "one retry: {e}");
    // Two 1 s deadlines and a 0.5 s backoff, not minutes.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_stalled_put_says_how_much_was_sent_and_presents_nothing() {
    let s = staller(Stall::Silent);
    let b = bucket(s.port, 0);
    // More than loopback's socket buffers hold: the send itself stalls.
    let body = vec![1u8; 32 << 20];
    let t = Instant::now();
    let e = b
        .put(
            "mail-a/sets/x/r1/part-000000",
            &mut std::io::Cursor::new(&body[..]),
            body.len() as u64,
            snapsite::wire::s3::Payload::Sha256("0".repeat(64)),
            true,
        )
        .unwrap_err()
        .to_string();
    assert_names(
        &e,
        "mail-a/sets/x/r1/part-000000",
        "while sending the body (",
    );
    assert!(e.contains(&format!("of {} bytes sent", body.len())), "{e}");
    assert!(!e.contains("gave up"), "retries = 0 tries once: {e}");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
}

/// The same stall with the body sent `aws-chunked` (how a part goes over
/// http): the error counts the part's own bytes sent, not the framing.
#[test]
fn a_stalled_chunked_put_says_how_much_was_sent() {
    let s = staller(Stall::Silent);
    let b = bucket(s.port, 0);
    let body = vec![1u8; 32 << 20];
    let e = b
        .put(
            "mail-a/sets/x/r1/part-000001",
            &mut std::io::Cursor::new(&body[..]),
            body.len() as u64,
            snapsite::wire::s3::Payload::Chunked,
            true,
        )
        .unwrap_err()
        .to_string();
    assert_names(
        &e,
        "mail-a/sets/x/r1/part-000001",
        "while sending the body (",
    );
    assert!(e.contains(&format!("of {} bytes sent", body.len())), "{e}");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
}

/// A body that fails to read (a part that ended short of its PUT's
/// length, a stage file that cannot be read) is not the network's
/// failure: the PUT is not tried again, whatever `retries` says, and the
/// error says how far the body got and why.
#[test]
fn a_body_that_cannot_be_read_is_not_retried() {
    struct Breaks(u64);
    impl Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("the part ended short"));
            }
            let k = buf.len().min(self.0 as usize);
            buf[..k].fill(3);
            self.0 -= k as u64;
            Ok(k)
        }
    }
    impl std::io::Seek for Breaks {
        fn seek(&mut self, _: std::io::SeekFrom) -> std::io::Result<u64> {
            Ok(0)
        }
    }
    let s = staller(Stall::Silent);
    let b = bucket(s.port, 3);
    // The listener counts a connection when its thread accepts it, which
    // may lag the client's connect: wait for the count to settle.
    let settled = |want: usize| {
        let t = Instant::now();
        while s.accepted.load(Ordering::SeqCst) < want && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // A retry would connect again after a 0.5 s backoff.
        std::thread::sleep(Duration::from_millis(800));
        s.accepted.load(Ordering::SeqCst)
    };
    for (i, payload) in [
        snapsite::wire::s3::Payload::Chunked,
        snapsite::wire::s3::Payload::Sha256("0".repeat(64)),
    ]
    .into_iter()
    .enumerate()
    {
        let e = b
            .put(
                "mail-a/sets/x/r1/part-000002",
                &mut Breaks(100_000),
                1 << 20,
                payload,
                true,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reading the body failed after 100000 of 1048576 bytes")
                && e.contains("the part ended short")
                && e.contains("part-000002"),
            "{e}"
        );
        assert!(!e.contains("gave up"), "{e}");
        assert_eq!(settled(i + 1), i + 1, "one connection per PUT: {e}");
    }
}

#[test]
fn a_body_that_stops_mid_way_is_a_timeout_and_the_get_is_retried() {
    let s = staller(Stall::MidBody);
    let b = bucket(s.port, 2);
    let t = Instant::now();
    let mut calls = 0;
    let e = b
        .fetch("mail-a/sets/x/r1/part-000003", |r| {
            calls += 1;
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v.len())
        })
        .unwrap_err()
        .to_string();
    assert_names(
        &e,
        "mail-a/sets/x/r1/part-000003",
        "while reading the body, after 1000 bytes",
    );
    assert!(e.contains("gave up after 3 attempts"), "{e}");
    assert_eq!(calls, 3, "each attempt reads from the start");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 3);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn a_refused_connect_names_the_phase() {
    // Nothing listens on a port just released.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let e = bucket(port, 1)
        .head("mail-a/sets/y/index.json")
        .unwrap_err()
        .to_string();
    for want in [
        "archive `offsite`",
        "mail-a/sets/y/index.json",
        "while connecting to http://127.0.0.1",
        "gave up after 2 attempts",
    ] {
        assert!(e.contains(want), "`{want}` missing from: {e}");
    }
}
