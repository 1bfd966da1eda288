//! The `serve_session` target: a whole `serve` session against the in-memory
//! store, built from structure-aware steps (`Op`, from `arbitrary`).

use super::*;

// ---------------------------------------------------------------------------
// A whole `serve` session against the in-memory store (structure-aware: the
// `serve_session` fuzz target builds the steps with `arbitrary`).

/// One thing the primary (honest or not) sends in a session.
#[derive(Debug, Clone)]
pub enum Op {
    /// `Hello` (with this standby's protocol, or another).
    Hello {
        protocol_ok: bool,
    },
    /// `Begin` of set number `set` (see [`session_set_id`]) for role number
    /// `role`, incremental from set `base`.
    Begin {
        set: u8,
        role: u8,
        base: Option<u8>,
        resume: bool,
    },
    /// The honest stream of the last `Begin` (cut to `cut` bytes when
    /// non-zero), or `junk`.
    Data {
        honest: bool,
        cut: u16,
        junk: Vec<u8>,
    },
    /// `End` with the count and blake3 of the data sent since `Begin`, or a
    /// wrong blake3.
    End {
        honest: bool,
    },
    /// `Commit` of set `set` with the roles in bit mask `roles`; `tweak`
    /// bits: 1 a member named after another set, 2 another kind, 4 a storage
    /// id that is not the stream's, 8 the time of another set.
    Commit {
        set: u8,
        roles: u8,
        seq: u64,
        generation: u64,
        tweak: u8,
    },
    Abort,
    Bye,
    /// A message body as it is (JSON or not), sealed as a message frame.
    Raw(Vec<u8>),
    /// `SpoolHello`: the session becomes a redolog spool session.
    SpoolHello,
    /// `SpoolBatch` number `seq` with `events` (see [`spool_event`]) and
    /// `data`, its blake3 right or wrong.
    SpoolBatch {
        seq: u64,
        reset: bool,
        events: Vec<(u8, u8, u64, u64)>,
        data: Vec<u8>,
        honest: bool,
    },
}

pub(super) const SPOOL_FILES: [&str; 6] = [
    "redo.log",
    "archive/redo-1.log",
    "archive/redo-2.log",
    "other.log",
    "../redo.log",
    "archive/../redo.log",
];

/// A spool event from the fuzzer's numbers: kind, file, two values (offset,
/// length or size; the second file of a rename).
pub fn spool_event(kind: u8, file: u8, a: u64, b: u64) -> crate::wire::stream::SpoolEvent {
    use crate::wire::stream::SpoolEvent;
    let name = |i: u64| SPOOL_FILES[i as usize % SPOOL_FILES.len()].to_string();
    let file = name(u64::from(file));
    match kind % 5 {
        0 => SpoolEvent::Base { file, size: a },
        1 => SpoolEvent::Append {
            file,
            offset: a,
            len: b,
        },
        2 => SpoolEvent::Truncate { file, size: a },
        3 => SpoolEvent::Rename {
            from: file,
            to: name(b),
        },
        _ => SpoolEvent::Remove { file },
    }
}

pub(super) const SESSION_ROLES: [&str; 2] = ["mysql", "redolog"];

/// The set id a session's set number stands for (even: full, odd: redolog).
pub fn session_set_id(set: u8) -> String {
    let kind = if set % 2 == 0 {
        crate::base::model::SetKind::Full
    } else {
        crate::base::model::SetKind::Redolog
    };
    crate::base::model::new_set_id(
        jiff::Timestamp::from_second(1_790_000_000 + 60 * i64::from(set % 16)).expect("time"),
        kind,
    )
}

pub(super) fn honest_stream(set: u8, role: &str, base: Option<u8>) -> Vec<u8> {
    let id = session_set_id(set);
    crate::backend::mem::MemStore::stream(
        &id,
        base.map(session_set_id).as_deref(),
        format!("{role} data of {id}").as_bytes(),
    )
}

/// Frames with their checks, as `Writer` writes them (and as it cannot:
/// raw message bodies).
pub(super) struct Frames {
    pub(super) out: Vec<u8>,
    pub(super) n: u64,
}

impl Frames {
    pub(super) fn frame(&mut self, tag: u8, body: &[u8]) {
        self.out.push(tag);
        self.out
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.out
            .extend_from_slice(&head_check(self.n, tag, body.len() as u32));
        self.out.extend_from_slice(body);
        if tag == b'M' {
            self.out.extend_from_slice(&body_check(self.n, body));
        }
        self.n += 1;
    }
    pub(super) fn msg(&mut self, m: &Msg) {
        self.frame(b'M', &serde_json::to_vec(m).expect("serializes"));
    }
}

pub(super) fn session_bytes(ops: &[Op]) -> Vec<u8> {
    use crate::base::model::{Member, SetKind};
    let mut f = Frames {
        out: MAGIC.to_vec(),
        n: 0,
    };
    let mut begun: Option<(u8, &str, Option<u8>)> = None;
    let mut sent: Vec<u8> = Vec::new();
    for op in ops {
        match op {
            Op::Hello { protocol_ok } => f.msg(&Msg::Hello {
                protocol: if *protocol_ok {
                    crate::wire::stream::PROTOCOL_VERSION
                } else {
                    crate::wire::stream::PROTOCOL_VERSION + 1
                },
                site: "primary".into(),
                version: "fuzz".into(),
                since: None,
            }),
            Op::Begin {
                set,
                role,
                base,
                resume,
            } => {
                let r = SESSION_ROLES[*role as usize % SESSION_ROLES.len()];
                let stream = honest_stream(*set, r, *base);
                f.msg(&Msg::Begin {
                    set_id: session_set_id(*set),
                    role: r.into(),
                    snapshot: session_set_id(*set),
                    base: base.map(session_set_id),
                    storage_id: Some(blake3::hash(&stream).to_hex().to_string()),
                    resume: *resume,
                });
                begun = Some((*set, r, *base));
                sent.clear();
            }
            Op::Data { honest, cut, junk } => {
                let d = match (honest, begun) {
                    (true, Some((set, r, base))) => {
                        let s = honest_stream(set, r, base);
                        let n = if *cut == 0 {
                            s.len()
                        } else {
                            (*cut as usize).min(s.len())
                        };
                        s[..n].to_vec()
                    }
                    _ => junk.clone(),
                };
                sent.extend_from_slice(&d);
                f.frame(b'D', &d);
            }
            Op::End { honest } => {
                let hash = if *honest {
                    blake3::hash(&sent)
                } else {
                    blake3::hash(b"something else")
                };
                f.msg(&Msg::End {
                    bytes: sent.len() as u64,
                    blake3: hash.to_hex().to_string(),
                });
            }
            Op::Commit {
                set,
                roles,
                seq,
                generation,
                tweak,
            } => {
                let id = session_set_id(*set);
                let t = crate::base::model::parse_set_id(&session_set_id(if tweak & 8 != 0 {
                    set.wrapping_add(2)
                } else {
                    *set
                }))
                .expect("a set id")
                .0;
                let kind = match (set % 2 == 0) != (tweak & 2 != 0) {
                    true => SetKind::Full,
                    false => SetKind::Redolog,
                };
                let members = SESSION_ROLES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| roles & (1 << i) != 0)
                    .map(|(_, r)| Member {
                        source: format!("/live/{r}"),
                        snapshot: if tweak & 1 != 0 {
                            session_set_id(set.wrapping_add(1))
                        } else {
                            id.clone()
                        },
                        storage_id: Some(if tweak & 4 != 0 {
                            "not-the-stream".into()
                        } else {
                            blake3::hash(&honest_stream(*set, r, None))
                                .to_hex()
                                .to_string()
                        }),
                        after: t + jiff::SignedDuration::from_millis(5),
                        ..Member::plain(r, &id, t)
                    })
                    .collect();
                f.msg(&Msg::Commit {
                    manifest: Manifest {
                        seq: *seq,
                        generation: *generation,
                        ..Manifest::plain(&id, kind, "primary", members)
                    },
                });
            }
            Op::Abort => f.msg(&Msg::Abort {
                reason: "fuzz".into(),
            }),
            Op::Bye => f.msg(&Msg::Bye),
            Op::Raw(body) => f.frame(b'M', body),
            Op::SpoolHello => f.msg(&Msg::SpoolHello {
                protocol: crate::wire::stream::PROTOCOL_VERSION,
                site: "primary".into(),
                version: "fuzz".into(),
            }),
            Op::SpoolBatch {
                seq,
                reset,
                events,
                data,
                honest,
            } => {
                let hash = if *honest {
                    blake3::hash(data)
                } else {
                    blake3::hash(b"something else")
                };
                f.msg(&Msg::SpoolBatch {
                    seq: *seq,
                    as_of: jiff::Timestamp::from_second(1_790_000_000).expect("time"),
                    reset: *reset,
                    events: events
                        .iter()
                        .map(|&(k, fi, a, b)| spool_event(k, fi, a, b))
                        .collect(),
                    bytes: data.len() as u64,
                    blake3: hash.to_hex().to_string(),
                });
                for c in data.chunks(4096) {
                    f.frame(b'D', c);
                }
            }
        }
    }
    f.out
}

/// Run `sessions` one after the other against a fresh standby (in-memory
/// store, state in a scratch directory). After each: the site lock is free,
/// no receive is left open, every committed set is complete in the store
/// (failover could use it), no set committed before has changed, and the
/// spool journal holds whole records only.
pub fn serve_sessions(sessions: &[Vec<Op>]) -> Outcome {
    use crate::base::catalog::Catalog;
    let dir = scratch("serve");
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let mut text = format!(
        "site = \"standby\"\nstate_dir = \"{}\"\n[stream]\nfiles = [\"redo.log\", \"archive/redo-*.log\"]\nspool_max = \"1MiB\"\n",
        state.display()
    );
    for r in SESSION_ROLES {
        text.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"{0}/live/{r}\"\nsnapshot_dir = \"{0}/snap/{r}\"\n",
            dir.display()
        ));
    }
    let cfg = crate::base::config::Config::parse(&text, &dir.join("standby.toml")).expect("config");
    let store = crate::backend::mem::MemStore::new();
    let catalog = Catalog::new(&cfg.state_dir);
    let mut committed: std::collections::BTreeMap<String, String> = Default::default();
    let mut spool_pending = 0;
    for ops in sessions {
        let input = session_bytes(ops);
        let s = store.clone();
        let _ = crate::standby::serve::serve_with(
            &cfg,
            &move |_| Ok(s.backend()),
            Cursor::new(input),
            Vec::new(),
        );
        assert!(
            catalog.lock("fuzz", std::time::Duration::ZERO).is_ok(),
            "the site lock is held after the session"
        );
        let st = store.0.lock().expect("store");
        assert_eq!(st.open_receives, 0, "a receive left open");
        let now = catalog.manifests().unwrap_or_default();
        for m in &now {
            for x in &m.members {
                assert!(
                    st.snaps.contains_key(&(x.role.clone(), x.snapshot.clone())),
                    "set {} committed without its {} snapshot",
                    m.id,
                    x.role
                );
            }
            assert!(m.validate_shape().is_ok(), "committed an invalid manifest");
        }
        let now: std::collections::BTreeMap<String, String> = now
            .iter()
            .map(|m| (m.id.clone(), serde_json::to_string(m).expect("serializes")))
            .collect();
        for (id, m) in &committed {
            assert_eq!(
                now.get(id),
                Some(m),
                "committed set {id} changed or vanished"
            );
        }
        committed = now;
        // The spool holds whole records only: a restart finds nothing to
        // cut, and loads what this one loads.
        let spool = catalog.root().join("spool");
        let journal = spool.join("journal");
        if let Ok(len) = std::fs::metadata(&journal).map(|m| m.len()) {
            let sp = crate::standby::spool::Spool::load(&spool, false).expect("the spool loads");
            let again = crate::standby::spool::Spool::load(&spool, true).expect("the spool loads");
            assert_eq!(
                std::fs::metadata(&journal).expect("journal").len(),
                len,
                "serve left a torn spool journal"
            );
            assert_eq!(sp.pending_bytes(), again.pending_bytes());
            spool_pending = sp.pending_bytes();
        }
    }
    Outcome {
        committed: committed.into_keys().collect(),
        spool_pending,
    }
}

/// What the standby holds after [`serve_sessions`].
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// Ids of the committed sets.
    pub committed: Vec<String>,
    /// Bytes the spool holds for failover.
    pub spool_pending: u64,
}
