//! Processes recorded by the DR verbs and by `run`: who they were (pid,
//! process group, start time, boot), whether that same process still lives
//! (pid reuse and reboots detected), and stopping a recorded group.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::base::error::{Context, Error, Result};

/// A process group leader as recorded in the progress file: enough to find
/// what is left of its group after a crash, and to not mistake another
/// group for it (pid reuse, reboot).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcRecord {
    pub pid: i32,
    pub pgid: i32,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat).
    pub start_ticks: u64,
    /// /proc/sys/kernel/random/boot_id when it ran.
    pub boot_id: String,
}

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub struct Stat {
    pub state: char,
    pub pgrp: i32,
    pub start_ticks: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parens: the fields follow the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

pub fn record(pid: u32) -> ProcRecord {
    let pid = pid as i32;
    ProcRecord {
        pid,
        pgid: pid,
        start_ticks: stat(pid).map(|s| s.start_ticks).unwrap_or(0),
        boot_id: boot_id(),
    }
}

/// Live (not zombie) processes of group `pgid`.
pub fn members(pgid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z'))
        .collect();
    v.sort();
    v
}

/// `snapsite ... serve ...`, alive.
pub fn is_live_serve(pid: i32) -> bool {
    if pid <= 1 || stat(pid).is_none_or(|s| s.state == 'Z') {
        return false;
    }
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let exe_ok = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy().contains("snapsite"));
    exe_ok && args.iter().skip(1).any(|a| a == "serve")
}

const STOP_WAIT: Duration = Duration::from_secs(10);

/// SIGKILL group `pgid`, wait (bounded) until no live process is left
/// in it; returns the pids that were there.
pub fn kill_group_and_wait(pgid: i32, what: &str) -> Result<Vec<i32>> {
    let before = members(pgid);
    if before.is_empty() {
        return Ok(before);
    }
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            return Err(Error::refused(format!(
                "cannot kill {what} (process group {pgid}): {e}"
            )));
        }
    }
    let start = Instant::now();
    loop {
        let left = members(pgid);
        if left.is_empty() {
            return Ok(before);
        }
        if start.elapsed() > STOP_WAIT {
            return Err(Error::refused(format!(
                "{what} (process group {pgid}) still has processes {left:?} {} s after SIGKILL",
                STOP_WAIT.as_secs()
            ))
            .with_hint("they are stuck in the kernel (a hung mount or device?); free them or reboot, then run failover again"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Is the recorded process still running (same boot, same start time)?
/// Also for `status` about a recorded `run`.
pub fn is_alive(rec: &ProcRecord) -> bool {
    is_running(rec.pid, rec.start_ticks, &rec.boot_id)
}

/// The one test of "that very process still runs", for every record of a
/// process (a [`ProcRecord`], a journal's owner): this boot (an unknown
/// boot id is not taken for this one), a live process with that pid (not
/// a zombie or dead one) and the same start time (not a later process
/// given the same pid).
pub fn is_running(pid: i32, start_ticks: u64, boot: &str) -> bool {
    !boot.is_empty()
        && boot == boot_id()
        && pid > 1
        && stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X') && s.start_ticks == start_ticks)
}

/// Stop what is left of a recorded group; `None` when nothing is (the
/// machine rebooted, the group ended, or its pid now names another).
pub fn stop_recorded_group(rec: &ProcRecord, what: &str) -> Result<Option<String>> {
    if rec.boot_id != boot_id() || rec.pgid <= 1 {
        return Ok(None);
    }
    if rec.pgid == nix::unistd::getpgrp().as_raw() {
        return Ok(None);
    }
    // While any process is in the group, its number cannot be reused;
    // a process with the leader's pid but another start time means the
    // group ended and the number was taken again.
    if stat(rec.pid).is_some_and(|s| s.start_ticks != rec.start_ticks) {
        return Ok(None);
    }
    let killed = kill_group_and_wait(rec.pgid, what)?;
    if killed.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "stopped {} process(es) left by {what} (process group {}: pids {killed:?})",
        killed.len(),
        rec.pgid
    )))
}

/// A child forked into its own process group that waits, before it
/// execs, for `go` (or exits when the parent dies first).
pub struct Gated {
    pid: Pid,
    gate: std::os::fd::OwnedFd,
}

impl Gated {
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }
    /// Let it exec, wait for it; its exit code (`None`: killed by a signal).
    pub fn go(self) -> Result<Option<i32>> {
        use nix::sys::wait::{WaitStatus, waitpid};
        let Gated { pid, gate } = self;
        let _ = nix::unistd::write(&gate, b"g");
        drop(gate);
        loop {
            match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
                Ok(WaitStatus::Signaled(..)) => return Ok(None),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::io("waiting for the replay", std::io::Error::from(e)));
                }
            }
        }
    }
    /// Never let it exec.
    pub fn cancel(self) {
        let Gated { pid, gate } = self;
        drop(gate); // it reads EOF and exits
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

fn find_program(name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return if executable(Path::new(name)) {
            Ok(PathBuf::from(name))
        } else {
            Err(Error::not_found(format!("{name}: not an executable file")))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| Error::not_found(format!("{name}: not found in PATH")))
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| Error::config("the replay command has a NUL byte in an argument"))
}

/// Fork `argv` (stdin /dev/null, stdout to our stderr, `env` added) in
/// a new process group, held before exec until `Gated::go`.
pub fn spawn_gated(argv: &[String], env: &[(&str, String)]) -> Result<Gated> {
    use std::os::unix::ffi::OsStrExt;
    let prog = cstr(find_program(&argv[0])?.as_os_str().as_bytes())?;
    let args: Vec<CString> = argv.iter().map(cstr).collect::<Result<_>>()?;
    let mut envs: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if env.iter().any(|(ek, _)| k.as_bytes() == ek.as_bytes()) {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if let Ok(c) = CString::new(kv) {
            envs.push(c);
        }
    }
    for (k, v) in env {
        envs.push(cstr(format!("{k}={v}"))?);
    }
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = envs.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let devnull = std::fs::File::open("/dev/null").ctx("open /dev/null")?;
    let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe", std::io::Error::from(e)))?;
    let (r, w, null) = (gate_r.as_raw_fd(), gate_w.as_raw_fd(), devnull.as_raw_fd());
    // SAFETY: the child only makes async-signal-safe calls (setpgid,
    // close, read, dup2, execve, _exit) on data prepared before the fork.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(Error::io("fork", std::io::Error::from(e))),
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            libc::setpgid(0, 0);
            libc::close(w);
            let mut b = 0u8;
            loop {
                let n = libc::read(r, (&mut b as *mut u8).cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                // The failover died before it recorded us: never run.
                libc::_exit(125);
            }
            libc::dup2(null, 0);
            libc::dup2(2, 1);
            libc::execve(prog.as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr());
            libc::_exit(127)
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(gate_r);
            // Also from this side: the group exists before we record it.
            let _ = nix::unistd::setpgid(child, child);
            Ok(Gated {
                pid: child,
                gate: gate_w,
            })
        }
    }
}
