//! A finished child process in a test: what it printed, its stdout when
//! it succeeded, and what a ship reported. Shared by the host tests (`common::output`) and the
//! VM suite (`tests/vm/main.rs` includes it).

use std::process::Output;

/// The entry of `role` in a `ship --json` report's `snapshots`; a panic
/// showing the report when it has none.
#[track_caller]
pub fn sent<'a>(report: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == role)
        .unwrap_or_else(|| panic!("{role} not shipped: {report}"))
}

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
