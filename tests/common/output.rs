//! A finished child process in a test: what it printed, and its stdout
//! when it succeeded. Shared by the host tests (`common::output`) and the
//! VM suite (`tests/vm/main.rs` includes it).

use std::process::Output;

/// `out`'s exit status, stdout and stderr, for an assertion message.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `out`'s stdout when `what` exited 0; otherwise a panic naming `what`
/// with its [`text`].
#[track_caller]
pub fn success(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what} failed: {}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
