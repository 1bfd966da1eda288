use super::*;
use std::sync::{Arc, Mutex};

/// Records what the sink asked of it; `dd` writes the stream to `out`.
struct Probe {
    log: Arc<Mutex<Vec<String>>>,
    out: PathBuf,
    /// The program `start` runs (gated sinks).
    program: Vec<String>,
    refuse_head: bool,
    fail_verify: bool,
}

impl Probe {
    fn new(tag: &str) -> (Probe, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let out =
            std::env::temp_dir().join(format!("snapsite-processsink-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let program = vec![
            "dd".into(),
            format!("of={}", out.display()),
            "status=none".into(),
        ];
        let p = Probe {
            log: log.clone(),
            out,
            program,
            refuse_head: false,
            fail_verify: false,
        };
        (p, log)
    }
    fn spawn(&self) -> Running {
        Cmd::new(&self.program[0])
            .args(&self.program[1..])
            .spawn(Stdio::piped(), Stdio::null())
            .unwrap()
    }
    fn log(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

impl ReceiveSteps for Probe {
    fn start(&mut self, head: &[u8]) -> Result<Running> {
        self.log(format!("start {}", String::from_utf8_lossy(head)));
        if self.refuse_head {
            return Err(Error::refused("bad head"));
        }
        Ok(self.spawn())
    }
    fn not_started(&mut self, head: &[u8]) -> Error {
        self.log(format!("not_started {}", head.len()));
        Error::refused("short")
    }
    fn verify(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        let got = std::fs::read(&self.out).unwrap_or_default();
        self.log(format!("verify {}", String::from_utf8_lossy(&got)));
        if self.fail_verify {
            return Err(Error::integrity("verify failed"));
        }
        record(Some("id-1".into()))?;
        Ok(Some("id-1".into()))
    }
    fn discard(&mut self) {
        self.log("discard".into());
        let _ = std::fs::remove_file(&self.out);
    }
}

fn entries(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[test]
fn commit_waits_verifies_and_records() {
    let (p, log) = Probe::new("commit");
    let out = p.out.clone();
    let running = p.spawn();
    let mut sink: Box<dyn SnapshotSink> = Box::new(ProcessSink::new("v", running, p));
    sink.write_all(b"hello ").unwrap();
    sink.write_all(b"world").unwrap();
    let mut recorded = Vec::new();
    let id = sink
        .commit(&mut |id| {
            recorded.push(id);
            Ok(())
        })
        .unwrap();
    assert_eq!(id.as_deref(), Some("id-1"));
    assert_eq!(recorded, [Some("id-1".to_string())]);
    // verify ran after the program had written everything; no discard,
    // not even when the sink is dropped afterwards
    assert_eq!(entries(&log), ["verify hello world"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"hello world");
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn a_failing_program_or_verify_or_record_discards() {
    // the program exits 3: no verify, discard, the error names the volume
    let (mut p, log) = Probe::new("exit3");
    p.program = ["sh", "-c", "cat >/dev/null; exit 3"]
        .map(String::from)
        .to_vec();
    let running = p.spawn();
    let mut sink: Box<dyn SnapshotSink> = Box::new(ProcessSink::new("vol-x", running, p));
    sink.write_all(b"data").unwrap();
    let e = sink.commit(&mut |_| panic!("recorded")).unwrap_err();
    assert!(e.to_string().contains("volume `vol-x`"), "{e}");
    assert!(e.to_string().contains("exit status: 3"), "{e}");
    assert_eq!(entries(&log), ["discard"]);

    // verify fails: discard, nothing recorded
    let (mut p, log) = Probe::new("verify");
    p.fail_verify = true;
    let out = p.out.clone();
    let running = p.spawn();
    let mut sink: Box<dyn SnapshotSink> = Box::new(ProcessSink::new("v", running, p));
    sink.write_all(b"x").unwrap();
    assert!(sink.commit(&mut |_| panic!("recorded")).is_err());
    assert_eq!(entries(&log), ["verify x", "discard"]);
    assert!(!out.exists());

    // the caller's record fails: discard
    let (p, log) = Probe::new("record");
    let running = p.spawn();
    let sink: Box<dyn SnapshotSink> = Box::new(ProcessSink::new("v", running, p));
    let e = sink
        .commit(&mut |_| Err(Error::storage("disk full")))
        .unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    assert_eq!(entries(&log), ["verify ", "discard"]);
}

fn alive(pid: u32) -> bool {
    // A reaped child has no /proc entry; a zombie would say so in stat.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn abort_and_drop_kill_the_program_and_discard() {
    for how in ["abort", "drop", "cut"] {
        let (mut p, log) = Probe::new(how);
        // never reads its stdin, would run for a minute
        p.program = ["sleep", "60"].map(String::from).to_vec();
        let running = p.spawn();
        let pid = running.pid();
        let mut sink: Box<dyn SnapshotSink> = Box::new(ProcessSink::new("v", running, p));
        sink.write_all(b"partial").unwrap();
        assert!(alive(pid));
        let t = std::time::Instant::now();
        match how {
            "abort" => sink.abort(),
            "cut" => sink.cut(), // not resumable: like abort
            _ => drop(sink),
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "{how} waited"
        );
        assert!(!alive(pid), "{how}: pid {pid} still runs");
        assert_eq!(entries(&log), ["discard"], "{how}");
    }
}

#[test]
fn gated_sink_checks_the_head_then_passes_everything_through() {
    let data: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    // every way of cutting the writes: 1-byte writes, a cut right at
    // the gate, one big write
    for chunk in [1, 3, 7, 10, 11, 100] {
        let (p, log) = Probe::new(&format!("gate{chunk}"));
        let out = p.out.clone();
        let mut sink = ProcessSink::gated("v", 10, p);
        for (i, c) in data.chunks(chunk).enumerate() {
            if (i + 1) * chunk < 10 {
                // not started before the head is complete
                assert!(sink.running.is_none(), "chunk {chunk}");
            }
            sink.write_all(c).unwrap();
        }
        let sink: Box<dyn SnapshotSink> = Box::new(sink);
        sink.commit(&mut |_| Ok(())).unwrap();
        let want = String::from_utf8(data.clone()).unwrap();
        assert_eq!(
            entries(&log),
            [format!("start {}", &want[..10]), format!("verify {want}")],
            "chunk {chunk}"
        );
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn gated_sink_refuses_before_any_program_runs() {
    // a refused head: the write fails, later writes too, commit returns
    // the refusal and discards
    let (mut p, log) = Probe::new("refuse");
    p.refuse_head = true;
    let out = p.out.clone();
    let mut sink = ProcessSink::gated("v", 4, p);
    sink.write_all(b"ab").unwrap();
    let e = sink.write_all(b"cdef").unwrap_err();
    assert!(e.to_string().contains("bad head"), "{e}");
    assert!(sink.write_all(b"g").is_err());
    assert!(sink.running.is_none());
    let sink: Box<dyn SnapshotSink> = Box::new(sink);
    let e = sink.commit(&mut |_| panic!("recorded")).unwrap_err();
    assert!(e.to_string().contains("bad head"), "{e}");
    assert_eq!(entries(&log), ["start abcd", "discard"]);
    assert!(!out.exists(), "no program wrote anything");

    // the stream ends inside the head: not_started's error, discard
    let (p, log) = Probe::new("short");
    let mut sink = ProcessSink::gated("v", 4, p);
    sink.write_all(b"ab").unwrap();
    let sink: Box<dyn SnapshotSink> = Box::new(sink);
    assert!(sink.commit(&mut |_| panic!("recorded")).is_err());
    assert_eq!(entries(&log), ["not_started 2", "discard"]);

    // dropped before it started: nothing ran, nothing to discard
    let (p, log) = Probe::new("dropped");
    let mut sink = ProcessSink::gated("v", 4, p);
    sink.write_all(b"ab").unwrap();
    drop(sink);
    assert!(entries(&log).is_empty());
}

#[test]
fn resumable_cut_keeps_the_program_state() {
    let (p, log) = Probe::new("resumable");
    let out = p.out.clone();
    let mut sink = ProcessSink::gated("v", 2, p).resumable();
    sink.write_all(b"abcdef").unwrap();
    let sink: Box<dyn SnapshotSink> = Box::new(sink);
    sink.cut();
    // the program ran to the end of its input and what it wrote stays
    assert_eq!(entries(&log), ["start ab"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"abcdef");
    std::fs::remove_file(&out).unwrap();
}

/// A send program whose source is dropped on an error path (neither
/// `finish` nor `abort`) is killed and reaped: without that `yes` would
/// stay a zombie (or, blocked in a kernel send, hold its snapshot busy)
/// for as long as `run` lives.
#[test]
fn dropped_process_source_reaps_its_program() {
    let mut src = ProcessSource::spawn(Cmd::new("yes")).unwrap();
    let mut buf = [0u8; 64];
    src.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..4], b"y\ny\n");
    // The box hides the pid: read it from /proc as the child of this test
    // whose command is `yes` and whose parent is us.
    let me = std::process::id();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            head.ends_with("(yes") && rest.split(' ').nth(1) == Some(&me.to_string())
        })
        .expect("the spawned `yes` is a child of this test");
    drop(src);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "`yes` (pid {pid}) outlived its dropped source: {}",
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
    );
}
