#![no_main]
// Structure-aware: sessions of protocol steps built with `arbitrary`, run
// against a fresh standby with the in-memory store; see
// snapsite::testing::fuzzing::serve_sessions for the invariants checked after each.
use arbitrary::Arbitrary;
use snapsite::testing::fuzzing::{Op, serve_sessions};

#[derive(Arbitrary, Debug)]
enum Step {
    Hello(bool),
    Begin(u8, u8, Option<u8>, bool),
    Data(bool, u16, Vec<u8>),
    End(bool),
    Commit(u8, u8, u64, u64, u8),
    Abort,
    Bye,
    Raw(Vec<u8>),
    SpoolHello,
    /// Small numbers: offsets and sequence numbers that can line up.
    SpoolBatch(u8, bool, Vec<(u8, u8, u16, u16)>, Vec<u8>, bool),
}

impl From<Step> for Op {
    fn from(s: Step) -> Op {
        match s {
            Step::Hello(protocol_ok) => Op::Hello { protocol_ok },
            Step::Begin(set, role, base, resume) => Op::Begin {
                set,
                role,
                base,
                resume,
            },
            Step::Data(honest, cut, junk) => Op::Data { honest, cut, junk },
            Step::End(honest) => Op::End { honest },
            Step::Commit(set, roles, seq, generation, tweak) => Op::Commit {
                set,
                roles,
                seq,
                generation,
                tweak,
            },
            Step::Abort => Op::Abort,
            Step::Bye => Op::Bye,
            Step::Raw(b) => Op::Raw(b),
            Step::SpoolHello => Op::SpoolHello,
            Step::SpoolBatch(seq, reset, events, data, honest) => Op::SpoolBatch {
                seq: seq.into(),
                reset,
                events: events
                    .into_iter()
                    .map(|(k, f, a, b)| (k, f, a.into(), b.into()))
                    .collect(),
                data,
                honest,
            },
        }
    }
}

libfuzzer_sys::fuzz_target!(|sessions: Vec<Vec<Step>>| {
    // At most a few sessions of a few dozen steps: each runs a real serve.
    let sessions: Vec<Vec<Op>> = sessions
        .into_iter()
        .take(4)
        .map(|s| s.into_iter().take(48).map(Op::from).collect())
        .collect();
    serve_sessions(&sessions);
});
