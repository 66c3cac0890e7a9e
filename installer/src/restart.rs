//! Restarting containerd so it reads the changed config. containerd does
//! not reload on SIGHUP, so it is restarted: by its systemd unit, or by a
//! SIGTERM to a supervisor that starts it again, or not at all.
//!
//! Running containers and their shims outlive the restart (containerd's
//! unit has `KillMode=process`), and so does the installer's own container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::layout::{Edit, Flavour, Layout};

/// How containerd is restarted after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// `systemctl restart` of the flavour's unit, run in the host's mount
    /// namespace (the pod needs `hostPID`).
    Systemd,
    /// SIGTERM to the containerd process, for a supervisor that starts it
    /// again (containerd exits cleanly on SIGTERM).
    Signal,
    /// No restart: the node is labelled as waiting for one.
    None,
}

/// What went wrong restarting containerd.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// None of the flavour's units is installed on the host.
    #[error(
        "none of the systemd units {units:?} exists on this host; set the chart's node.restart to signal or none"
    )]
    NoUnit {
        /// The units looked for.
        units: &'static [&'static str],
    },
    /// `systemctl` could not be run or failed.
    #[error("`systemctl restart {unit}` on the host failed: {detail}")]
    Systemctl {
        /// The unit.
        unit: String,
        /// Its exit status or why it did not run.
        detail: String,
    },
    /// No containerd process reads the config.
    #[error("no running containerd reads {0}; is it started with another --config?")]
    NoProcess(String),
    /// The signal could not be sent.
    #[error("cannot signal containerd (pid {pid})")]
    Kill {
        /// Its pid.
        pid: i32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// containerd did not come back in time.
    #[error("containerd did not {what} within {secs} s")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        secs: u64,
    },
}

/// The config file the running containerd reads for `layout` (host path):
/// the template's output for k3s and rke2. k0s' containerd reads a file of
/// k0s' own, so any containerd process is taken.
fn read_config(layout: &Layout) -> Option<&Path> {
    match &layout.edit {
        Edit::Toml => Some(&layout.target),
        Edit::TemplateBlock { generated } => Some(generated),
        Edit::DropIn => None,
    }
}

/// containerd processes in `proc` (the host's `/proc` under `hostPID`)
/// reading `config` (none: any). A containerd without `--config` reads
/// `/etc/containerd/config.toml`.
pub fn find_containerd(proc: &Path, config: Option<&Path>) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "containerd" {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let reads = args
            .windows(2)
            .find(|w| matches!(w[0], b"--config" | b"-c"))
            .map_or_else(
                || PathBuf::from("/etc/containerd/config.toml"),
                |w| PathBuf::from(String::from_utf8_lossy(w[1]).into_owned()),
            );
        if config.is_none_or(|config| config == reads) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// The first of the flavour's units that `installed` says the host has.
pub fn unit(
    flavour: Flavour,
    installed: impl Fn(&str) -> bool,
) -> Result<&'static str, RestartError> {
    flavour
        .units()
        .iter()
        .copied()
        .find(|unit| installed(unit))
        .ok_or(RestartError::NoUnit {
            units: flavour.units(),
        })
}

/// Restarts containerd for `layout` by `method`. `host_exec` runs a
/// command in the host's mount namespace (the installer re-running itself).
/// With `running_or_not` (a rollback), a containerd that is not running is
/// fine for `signal`: its supervisor starts it again with the config as it
/// now is.
pub fn restart(
    method: Method,
    layout: &Layout,
    running_or_not: bool,
    host_exec: impl Fn(&[&str]) -> Result<(), String>,
) -> Result<(), RestartError> {
    match method {
        Method::None => Ok(()),
        Method::Systemd => {
            // Asked of the host's systemd, which knows every unit directory.
            let unit = unit(layout.flavour, |unit| {
                host_exec(&["systemctl", "cat", unit]).is_ok()
            })?;
            // --no-block: the restart goes on if this process is stopped by it.
            host_exec(&["systemctl", "restart", "--no-block", unit]).map_err(|detail| {
                RestartError::Systemctl {
                    unit: unit.to_owned(),
                    detail,
                }
            })
        }
        Method::Signal => {
            let proc = Path::new("/proc");
            let config = read_config(layout);
            let shown = config.map_or_else(|| "its config".to_owned(), |c| c.display().to_string());
            let old = find_containerd(proc, config);
            let Some(&pid) = old.first() else {
                return if running_or_not {
                    Ok(())
                } else {
                    Err(RestartError::NoProcess(shown))
                };
            };
            kill(Pid::from_raw(pid), Signal::SIGTERM)
                .map_err(|source| RestartError::Kill { pid, source })?;
            wait_for(Duration::from_secs(30), "exit after SIGTERM", || {
                !proc.join(pid.to_string()).exists()
                    || std::fs::read_to_string(proc.join(format!("{pid}/stat")))
                        .is_ok_and(|stat| stat.contains(") Z "))
            })?;
            wait_for(Duration::from_secs(60), "start again", || {
                find_containerd(proc, config).iter().any(|new| *new != pid)
            })
        }
    }
}

/// Polls `done` every 100 ms until it holds or `limit` passes.
fn wait_for(
    limit: Duration,
    what: &'static str,
    mut done: impl FnMut() -> bool,
) -> Result<(), RestartError> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(RestartError::Timeout {
                what,
                secs: limit.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_installed_unit_is_restarted() {
        let error = unit(Flavour::K3s, |_| false).expect_err("none");
        assert!(error.to_string().contains("k3s-agent.service"), "{error}");
        let found = unit(Flavour::K3s, |unit| unit == "k3s-agent.service").expect("found");
        assert_eq!(found, "k3s-agent.service");
        let found = unit(Flavour::Rke2, |_| true).expect("found");
        assert_eq!(found, "rke2-server.service", "a server before an agent");
    }

    #[test]
    fn containerd_is_told_apart_by_the_config_it_reads() {
        let proc = tempfile::tempdir().expect("tempdir");
        for (pid, comm, cmdline) in [
            ("10", "containerd", &b"/usr/bin/containerd\0"[..]),
            (
                "11",
                "containerd",
                b"containerd\0--config\0/run/test/config.toml\0",
            ),
            ("12", "bash", b"bash\0"),
        ] {
            let dir = proc.path().join(pid);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("comm"), format!("{comm}\n")).expect("write");
            std::fs::write(dir.join("cmdline"), cmdline).expect("write");
        }
        let default = Path::new("/etc/containerd/config.toml");
        assert_eq!(find_containerd(proc.path(), Some(default)), vec![10]);
        assert_eq!(
            find_containerd(proc.path(), Some(Path::new("/run/test/config.toml"))),
            vec![11]
        );
        assert_eq!(find_containerd(proc.path(), None), vec![10, 11]);
    }
}
