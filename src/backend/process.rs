//! Snapshot streams through external programs: a sender's stdout read
//! as a [`SnapshotSource`] (`btrfs send`, `zfs send`) and a receiver's
//! stdin written as a [`SnapshotSink`] whose backend-specific steps
//! ([`ReceiveSteps`]) run around it. Neither outlives its ship.

use super::*;

/// A snapshot stream read from an external program's stdout (`btrfs send`,
/// `zfs send`); `finish` checks its exit status. Dropped without `finish`
/// or `abort` (an error returned past it), it kills and reaps the program:
/// no sender outlives its ship to hold the snapshot busy or stay a zombie.
pub struct ProcessSource {
    running: Option<Running>,
    stdout: Option<ChildStdout>,
}

impl ProcessSource {
    pub fn spawn(cmd: Cmd) -> Result<BoxedSource> {
        let mut running = cmd.spawn(Stdio::null(), Stdio::piped())?;
        let stdout = running.child.stdout.take().expect("piped");
        Ok(Box::new(ProcessSource {
            running: Some(running),
            stdout: Some(stdout),
        }))
    }
}

impl Read for ProcessSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stdout.as_mut() {
            Some(out) => out.read(buf),
            None => Ok(0),
        }
    }
}

impl SnapshotSource for ProcessSource {
    fn finish(mut self: Box<Self>) -> Result<()> {
        drop(self.stdout.take());
        match self.running.take() {
            Some(running) => running.wait(),
            None => Ok(()),
        }
    }
    fn abort(self: Box<Self>) {
        // Dropping it kills and reaps the program.
        drop(self);
    }
}

impl Drop for ProcessSource {
    fn drop(&mut self) {
        drop(self.stdout.take());
        if let Some(running) = self.running.take() {
            running.kill();
        }
    }
}

/// The backend's part of a [`ProcessSink`]: what to check before and after
/// the receiving program, and how to remove what it made.
pub trait ReceiveSteps: Send {
    /// Gated sinks only ([`ProcessSink::gated`]): check the stream's first
    /// bytes and only then start the receiving program (stdin piped). An
    /// error refuses the stream before the program saw a byte.
    fn start(&mut self, _head: &[u8]) -> Result<Running> {
        Err(Error::storage(
            "this receive started its program at once; nothing to gate",
        ))
    }
    /// Gated sinks only: the stream ended before its first bytes were
    /// complete, so no program ever ran. The error `commit` returns.
    fn not_started(&mut self, _head: &[u8]) -> Error {
        Error::integrity("the stream ended before its header was complete")
    }
    /// The program exited 0: verify what it made, call `record` with the
    /// storage id, mark the snapshot complete. An error discards.
    fn verify(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>>;
    /// Remove everything this receive made (the program is gone by now).
    fn discard(&mut self);
}

/// A receive into an external program's stdin (`btrfs receive`, `zfs
/// receive`): a `Write` over the child's stdin. `commit` closes stdin,
/// waits for an exit 0 and runs the backend's `verify` (which records), or
/// discards; `abort` kills the child and discards; dropped while the child
/// runs, it discards. A gated sink collects the stream's first bytes and
/// lets the backend check them before the child starts; then they and the
/// rest pass through unchanged.
pub struct ProcessSink<S: ReceiveSteps> {
    steps: S,
    role: String,
    pub(super) running: Option<Running>,
    stdin: Option<ChildStdin>,
    /// Gated: how many bytes to collect before `start` (0: not gated).
    gate: usize,
    head: Vec<u8>,
    /// Why the gate refused the stream; `commit` returns it.
    failed: Option<Error>,
    /// `cut` keeps the program's partial state instead of discarding.
    resumable: bool,
}

impl<S: ReceiveSteps> ProcessSink<S> {
    /// The receiving program is running (stdin piped); every byte goes to it.
    pub fn new(role: &str, mut running: Running, steps: S) -> Self {
        let stdin = running.child.stdin.take().expect("piped");
        ProcessSink {
            steps,
            role: role.to_string(),
            running: Some(running),
            stdin: Some(stdin),
            gate: 0,
            head: Vec::new(),
            failed: None,
            resumable: false,
        }
    }

    /// Nothing runs yet: the first `len` bytes go to `steps.start`, which
    /// checks them and starts the program.
    pub fn gated(role: &str, len: usize, steps: S) -> Self {
        ProcessSink {
            steps,
            role: role.to_string(),
            running: None,
            stdin: None,
            gate: len,
            head: Vec::with_capacity(len),
            failed: None,
            resumable: false,
        }
    }

    /// A cut stream (`SnapshotSink::cut`) closes stdin and waits, keeping
    /// what the program saved for a resume (`zfs receive -s`).
    pub fn resumable(mut self) -> Self {
        self.resumable = true;
        self
    }

    fn finish(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let Some(running) = self.running.take() else {
            return Err(self.steps.not_started(&self.head));
        };
        drop(self.stdin.take());
        running.wait().ctx(format!("volume `{}`", self.role))?;
        self.steps.verify(record)
    }

    fn discard(&mut self) {
        drop(self.stdin.take());
        if let Some(r) = self.running.take() {
            r.kill();
        }
        self.steps.discard();
    }
}

impl<S: ReceiveSteps> Write for ProcessSink<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(std::io::Error::other(e.to_string()));
        }
        if let Some(stdin) = self.stdin.as_mut() {
            return stdin.write(buf);
        }
        assert!(self.gate > 0, "open until commit/abort");
        // Still collecting the first bytes.
        let take = (self.gate - self.head.len()).min(buf.len());
        self.head.extend_from_slice(&buf[..take]);
        if self.head.len() < self.gate {
            return Ok(buf.len());
        }
        let rest = &buf[take..];
        let mut running = match self.steps.start(&self.head) {
            Ok(r) => r,
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                self.failed = Some(e);
                return Err(io);
            }
        };
        let stdin = self
            .stdin
            .insert(running.child.stdin.take().expect("piped"));
        self.running = Some(running);
        stdin.write_all(&self.head)?;
        stdin.write_all(rest)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl<S: ReceiveSteps + 'static> SnapshotSink for ProcessSink<S> {
    fn commit(
        mut self: Box<Self>,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        match self.finish(record) {
            Ok(id) => Ok(id),
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }
    fn abort(mut self: Box<Self>) {
        self.discard();
    }
    fn cut(mut self: Box<Self>) {
        if !self.resumable {
            self.discard();
            return;
        }
        // End of input mid-stream: the program saves its resumable state
        // and exits non-zero. Keep that state.
        drop(self.stdin.take());
        if let Some(r) = self.running.take() {
            let _ = r.wait();
        }
    }
}

impl<S: ReceiveSteps> Drop for ProcessSink<S> {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.discard();
        }
    }
}
