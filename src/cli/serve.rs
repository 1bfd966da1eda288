//! `snapsite serve`: the standby's end of `ship` (`--stdio`) or of a seed on
//! disk (`--from DIR`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use snapsite::base::config::Config;
use snapsite::standby::serve;

/// `serve --stdio`: one session with the primary, deadlines on both pipes.
pub(super) fn cmd_serve(cfg: &Config, idle_timeout: Duration) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd;
    // Lead a process group (unless sshd made us a session leader,
    // which leads one already), so that `failover` can stop this
    // session and the receive it runs with one kill.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    // Deadlines sit under the buffers: poll sees the real pipe.
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let timeout = (!idle_timeout.is_zero()).then_some(idle_timeout);
    let served = serve::serve(
        cfg,
        std::io::BufReader::with_capacity(
            1 << 20,
            snapsite::wire::stream::Deadline::new(stdin, timeout, "the primary"),
        ),
        std::io::BufWriter::with_capacity(
            1 << 16,
            snapsite::wire::stream::Deadline::new(stdout, timeout, "the primary"),
        ),
    );
    // The first suspect set is told once, whatever the session's end.
    if cfg.detect.enabled {
        if let Err(e) = snapsite::ops::suspect::notify(cfg) {
            tracing::warn!(error = %e, "suspect sets: notification not sent");
        }
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// `serve --from DIR`: receive a seed written by `ship --to`.
pub(super) fn cmd_serve_seed(cfg: &Config, dir: &Path) -> anyhow::Result<ExitCode> {
    let id = snapsite::primary::seed::receive_seed(cfg, dir)?;
    println!("seeded: set {id} committed from {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
