//! A finished child process in a test: its stdout when it succeeded,
//! otherwise a panic that shows what it printed. Shared by the host tests
//! (`common::output`) and the VM suite (`tests/vm/main.rs` includes it).

use std::process::Output;

/// `out`'s stdout when `what` exited 0; otherwise a panic naming `what`,
/// its exit status, stdout and stderr.
#[track_caller]
pub fn success(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
