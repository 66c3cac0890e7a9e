//! Linux containers in a Wasm pod (a mesh proxy, a log agent, an init
//! container), run by the node's OCI runtime, runc, from containerd's
//! bundle.
//!
//! Two things differ from a pod under runc's own shim. The CRI names the
//! pod's namespaces as those of the sandbox's process, which here is the
//! shim, in the node's namespaces: runc gets a copy of the spec in which
//! the network namespace is the pod's own, and the IPC and UTS namespaces
//! are the pod's, held by a parked thread of the shim ([`PodNamespaces`])
//! that the first Linux container of the pod makes, so a Wasm-only pod pays
//! nothing for them. And the container's process is the shim's child (the
//! shim is a child subreaper): a thread of the shim waits for its exit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio as ProcessStdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde_json::Value;

use crate::signal::Signal;
use crate::spec::Network;
use crate::stdio::Stdio;
use crate::usage::Stats;

/// Told once, from the thread that waited, the exit status of a
/// container's process.
pub type OnStatus = Box<dyn FnOnce(u32) + Send>;

/// How long a kill of a container that never started waits for its
/// process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why a Linux container could not be run or managed.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// containerd's `config.json` could not be read or is not JSON.
    #[error("cannot read the container's OCI runtime spec {}", path.display())]
    ReadSpec {
        /// The `config.json` path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// runc's copy of the spec could not be written.
    #[error("cannot write runc's copy of the container's spec under {}", path.display())]
    WriteSpec {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The spec puts the container in a namespace of the sandbox's process
    /// that the pod does not have here.
    #[error(
        "the container asks to share the pod's {0} namespace (shareProcessNamespace?), which Linux containers in a wasmpod pod do not support"
    )]
    SharedNamespace(String),
    /// The pod's IPC and UTS namespaces could not be made.
    #[error("cannot make the pod's IPC and UTS namespaces for its Linux containers")]
    Namespaces(#[source] std::io::Error),
    /// runc could not be run at all.
    #[error("cannot run {} (is runc installed on the node?)", runc.display())]
    Spawn {
        /// The runc binary.
        runc: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// runc ran and failed.
    #[error("runc {verb} {id} failed: {message}")]
    Runc {
        /// The runc command.
        verb: &'static str,
        /// Container id.
        id: String,
        /// What runc said.
        message: String,
    },
    /// The container's pid could not be read from runc's pid file.
    #[error("runc created {id} but its pid file {} is unreadable", path.display())]
    Pid {
        /// Container id.
        id: String,
        /// The pid file.
        path: PathBuf,
    },
    /// An exec id that cannot name a file.
    #[error("exec id {0:?} has characters other than letters, digits and -_.")]
    ExecId(String),
    /// A process of the container could not be signalled.
    #[error("cannot signal a process of container {id}")]
    Signal {
        /// Container id.
        id: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A thread to wait for the container could not be started.
    #[error("cannot start a thread to wait for container {id}")]
    Thread {
        /// Container id.
        id: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The runc binary the shim runs Linux containers with.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
}

impl Runc {
    /// The node's runc: the first `runc` on the shim's PATH, else where
    /// Debian and most distributions install it.
    pub fn locate() -> Self {
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("runc"))
                .find(|candidate| candidate.is_file())
        });
        Self {
            binary: on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/runc")),
        }
    }

    fn command(&self, dir: &Path, verb: &str) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--root")
            .arg(dir.join("state"))
            .arg("--log")
            .arg(dir.join("log.json"))
            .arg("--log-format")
            .arg("json")
            .arg(verb);
        command
    }

    /// Runs `runc VERB FLAGS.. ID ARGS..`; runc's own words on failure.
    fn run(
        &self,
        dir: &Path,
        verb: &'static str,
        flags: &[&str],
        id: &str,
        args: &[&str],
    ) -> Result<Output, LinuxError> {
        let output = self
            .command(dir, verb)
            .args(flags)
            .arg(id)
            .args(args)
            .stdin(ProcessStdio::null())
            .output()
            .map_err(|source| self.spawn_error(source))?;
        if output.status.success() {
            return Ok(output);
        }
        Err(LinuxError::Runc {
            verb,
            id: id.to_owned(),
            message: failure(dir, &output.stderr),
        })
    }

    /// Runs `command` (`runc create` or `runc exec`, its own flags given)
    /// for container `id` with `stdio`, which runc hands to the process it
    /// leaves running; returns that process's pid, from `pid_file`.
    fn launch(
        &self,
        mut command: Command,
        verb: &'static str,
        id: &str,
        dir: &Path,
        pid_file: &Path,
        stdio: Stdio,
    ) -> Result<i32, LinuxError> {
        let streams = |file: Option<File>| file.map_or_else(ProcessStdio::null, ProcessStdio::from);
        let status = command
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdin(streams(stdio.stdin))
            .stdout(streams(stdio.stdout))
            .stderr(streams(stdio.stderr))
            .status()
            .map_err(|source| self.spawn_error(source))?;
        if !status.success() {
            return Err(LinuxError::Runc {
                verb,
                id: id.to_owned(),
                // Also on the process's stderr, which is runc's.
                message: failure(dir, b"see the container's log"),
            });
        }
        std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|&p| p > 0)
            .ok_or_else(|| LinuxError::Pid {
                id: id.to_owned(),
                path: pid_file.to_path_buf(),
            })
    }

    fn spawn_error(&self, source: std::io::Error) -> LinuxError {
        LinuxError::Spawn {
            runc: self.binary.clone(),
            source,
        }
    }
}

/// What runc said of a failure: the last error in its log, else its stderr.
fn failure(dir: &Path, stderr: &[u8]) -> String {
    let logged = std::fs::read_to_string(dir.join("log.json"))
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["level"] == "error")
        .and_then(|entry| entry["msg"].as_str().map(str::to_owned));
    logged.unwrap_or_else(|| String::from_utf8_lossy(stderr).trim().to_owned())
}

/// The IPC and UTS namespaces a pod's Linux containers share, as under
/// runc's pause process: made by a thread of the shim, which then parks
/// until this is dropped, so that runc can join them by that thread's
/// `/proc` entries.
pub struct PodNamespaces {
    ipc: PathBuf,
    uts: PathBuf,
    _hold: mpsc::SyncSender<()>,
}

impl PodNamespaces {
    /// New namespaces, the UTS one named `hostname` (the pod's).
    pub fn new(hostname: Option<&str>) -> Result<Self, LinuxError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (hold, held) = mpsc::sync_channel::<()>(0);
        let hostname = hostname.map(str::to_owned);
        std::thread::Builder::new()
            .name("pod-namespaces".into())
            .spawn(move || {
                // Namespaces are per thread: this one's, not the shim's.
                let made = nix::sched::unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
                    .and_then(|()| match &hostname {
                        Some(name) => nix::unistd::sethostname(name),
                        None => Ok(()),
                    })
                    .map(|()| nix::unistd::gettid());
                let made_them = made.is_ok();
                let _ = ready_tx.send(made);
                if made_them {
                    // Until every sender is gone.
                    let _ = held.recv();
                }
            })
            .map_err(LinuxError::Namespaces)?;
        let tid = ready_rx
            .recv()
            .map_err(|_| LinuxError::Namespaces(std::io::Error::other("the thread ended")))?
            .map_err(|errno| LinuxError::Namespaces(errno.into()))?;
        let ns = PathBuf::from(format!("/proc/{}/task/{tid}/ns", std::process::id()));
        Ok(Self {
            ipc: ns.join("ipc"),
            uts: ns.join("uts"),
            _hold: hold,
        })
    }
}

/// The pod a Linux container joins.
pub struct PodView<'a> {
    /// The pod's network namespace.
    pub network: &'a Network,
    /// The pod's IPC and UTS namespaces.
    pub namespaces: &'a PodNamespaces,
}

/// Rewrites containerd's spec (as JSON, so that nothing runc reads is lost)
/// for runc: the root is `rootfs`, and namespaces the CRI gave as the
/// shim's become the pod's.
fn spec_for_runc(spec: &mut Value, rootfs: &Path, pod: &PodView<'_>) -> Result<(), LinuxError> {
    spec["root"]["path"] = Value::from(rootfs.to_string_lossy().into_owned());
    let shim = format!("/proc/{}/", std::process::id());
    let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() else {
        return Ok(());
    };
    let mut kept = Vec::with_capacity(namespaces.len());
    for mut ns in namespaces.drain(..) {
        let typ = ns["type"].as_str().unwrap_or_default().to_owned();
        let shims = ns["path"].as_str().is_some_and(|p| p.starts_with(&shim));
        if !shims {
            kept.push(ns);
            continue;
        }
        let path = match typ.as_str() {
            "network" => match pod.network {
                Network::Join(path) => path.clone(),
                // hostNetwork: no namespace of its own.
                Network::Host => continue,
                Network::New => return Err(LinuxError::SharedNamespace(typ)),
            },
            "ipc" => pod.namespaces.ipc.clone(),
            "uts" => pod.namespaces.uts.clone(),
            _ => return Err(LinuxError::SharedNamespace(typ)),
        };
        ns["path"] = Value::from(path.to_string_lossy().into_owned());
        kept.push(ns);
    }
    *namespaces = kept;
    Ok(())
}

/// Where a container's exit is kept until someone is told of it.
#[derive(Default)]
struct ExitSlot {
    state: Mutex<Slot>,
    ended: Condvar,
}

#[derive(Default)]
struct Slot {
    exited: Option<u32>,
    on_exit: Option<OnStatus>,
}

impl ExitSlot {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, exited: u32) {
        let on_exit = {
            let mut slot = self.lock();
            slot.exited = Some(exited);
            slot.on_exit.take()
        };
        self.ended.notify_all();
        if let Some(on_exit) = on_exit {
            on_exit(exited);
        }
    }

    /// Tells `on_exit` of the exit, now if it has happened.
    fn tell(&self, on_exit: OnStatus) {
        let exited = {
            let mut slot = self.lock();
            match slot.exited {
                Some(exited) => exited,
                None => {
                    slot.on_exit = Some(on_exit);
                    return;
                }
            }
        };
        on_exit(exited);
    }

    fn wait(&self, timeout: Duration) -> Option<u32> {
        let slot = self.lock();
        let (slot, _) = self
            .ended
            .wait_timeout_while(slot, timeout, |s| s.exited.is_none())
            .unwrap_or_else(|p| p.into_inner());
        slot.exited
    }
}

/// The exit status of a waited-for process, as containerd reports it.
fn exit_status(status: WaitStatus) -> Option<u32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as u32),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as u32),
        _ => None,
    }
}

/// Waits on a thread of its own for process `pid` of container `id` to
/// end: the shim is a child subreaper, so what runc leaves running is its
/// child once runc has returned.
fn watch(pid: i32, id: &str) -> std::io::Result<Arc<ExitSlot>> {
    let exit = Arc::new(ExitSlot::default());
    let watched = exit.clone();
    let id = id.to_owned();
    std::thread::Builder::new()
        .name(format!("linux-{pid}"))
        .spawn(move || {
            let status = loop {
                match waitid(Id::Pid(Pid::from_raw(pid)), WaitPidFlag::WEXITED) {
                    Ok(status) => match exit_status(status) {
                        Some(status) => break status,
                        None => continue,
                    },
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(%id, pid, error = %e, "cannot wait for a process of the container; it counts as failed");
                        break 255;
                    }
                }
            };
            watched.set(status);
        })?;
    Ok(exit)
}

/// A Linux container created by runc, waiting to start or running.
pub struct LinuxContainer {
    id: String,
    runc: Runc,
    /// runc's copy of the spec, its state and log, in the bundle.
    dir: PathBuf,
    pid: i32,
    exit: Arc<ExitSlot>,
    started: bool,
}

impl LinuxContainer {
    /// `runc create`s container `id` from the spec in `bundle`, its root at
    /// `rootfs`, in `pod`, with `stdio` as its standard streams.
    pub fn create(
        runc: Runc,
        id: &str,
        bundle: &Path,
        rootfs: &Path,
        pod: &PodView<'_>,
        stdio: Stdio,
        cgroups_path: Option<&str>,
    ) -> Result<Self, LinuxError> {
        // A systemd driver's cgroupsPath is "slice:prefix:name".
        let systemd_cgroup = cgroups_path.is_some_and(|p| !p.starts_with('/') && p.contains(':'));
        let path = bundle.join("config.json");
        let read_error = |source| LinuxError::ReadSpec {
            path: path.clone(),
            source,
        };
        let text = std::fs::read(&path).map_err(read_error)?;
        let mut spec: Value =
            serde_json::from_slice(&text).map_err(|e| read_error(std::io::Error::other(e)))?;
        spec_for_runc(&mut spec, rootfs, pod)?;
        let dir = bundle.join("runc");
        let write_error = |source| LinuxError::WriteSpec {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir.join("state")).map_err(write_error)?;
        std::fs::write(dir.join("config.json"), spec.to_string()).map_err(write_error)?;
        let pid_file = dir.join("pid");
        let mut create = runc.command(&dir, "create");
        if systemd_cgroup {
            create.arg("--systemd-cgroup");
        }
        create.arg("--bundle").arg(&dir);
        let pid = runc.launch(create, "create", id, &dir, &pid_file, stdio)?;
        let waiter = watch(pid, id);
        let created = Self {
            id: id.to_owned(),
            runc,
            dir,
            pid,
            exit: waiter.as_ref().map(Arc::clone).unwrap_or_default(),
            started: false,
        };
        if let Err(source) = waiter {
            // Dropping it deletes the container.
            drop(created);
            return Err(LinuxError::Thread {
                id: id.to_owned(),
                source,
            });
        }
        Ok(created)
    }

    /// The container's process.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// `runc start`s it; `on_exit` is told when its process ends.
    pub fn start(&mut self, on_exit: OnStatus) -> Result<(), LinuxError> {
        self.runc.run(&self.dir, "start", &[], &self.id, &[])?;
        self.started = true;
        self.exit.tell(on_exit);
        Ok(())
    }

    /// Signals it. One that never started is killed outright and waited
    /// for: its exit is returned, as `signal` would have ended it.
    pub fn kill(&mut self, signal: Signal) -> Result<Option<u32>, LinuxError> {
        if !self.started {
            self.signal(Signal::KILL)?;
            self.exit.wait(KILL_WAIT);
            return Ok(Some(signal.exit_status()));
        }
        self.signal(signal)?;
        Ok(None)
    }

    fn signal(&self, signal: Signal) -> Result<(), LinuxError> {
        let number = signal.number().to_string();
        match self.runc.run(&self.dir, "kill", &[], &self.id, &[&number]) {
            // Gone already: its exit is on its way.
            Err(LinuxError::Runc { .. }) if self.exit.wait(Duration::ZERO).is_some() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// CPU and memory of its cgroup, from `runc events --stats`.
    pub fn stats(&self) -> Result<Stats, LinuxError> {
        let output = self
            .runc
            .run(&self.dir, "events", &["--stats"], &self.id, &[])?;
        let event: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        Ok(stats_of(&event["data"]))
    }
}

impl LinuxContainer {
    /// A process to run in the container (`kubectl exec`), not started:
    /// `process` is the OCI process JSON containerd sends.
    pub fn exec(
        &self,
        exec_id: &str,
        process: &[u8],
        stdio: Stdio,
    ) -> Result<LinuxExec, LinuxError> {
        // The id names files of ours: letters, digits and `-_.` only.
        if exec_id.is_empty()
            || !exec_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(LinuxError::ExecId(exec_id.to_owned()));
        }
        let spec = self.dir.join(format!("exec-{exec_id}.json"));
        std::fs::write(&spec, process).map_err(|source| LinuxError::WriteSpec {
            path: spec.clone(),
            source,
        })?;
        Ok(LinuxExec {
            container: self.id.clone(),
            runc: self.runc.clone(),
            dir: self.dir.clone(),
            spec,
            stdio: Some(stdio),
            pid: None,
            exit: Arc::default(),
        })
    }
}

/// A process run in a Linux container by `runc exec`.
pub struct LinuxExec {
    container: String,
    runc: Runc,
    dir: PathBuf,
    /// Its OCI process JSON.
    spec: PathBuf,
    stdio: Option<Stdio>,
    pid: Option<i32>,
    exit: Arc<ExitSlot>,
}

impl LinuxExec {
    /// Its process, once started.
    pub fn pid(&self) -> Option<u32> {
        self.pid.map(|p| p as u32)
    }

    /// `runc exec`s it; `on_exit` is told when it ends.
    pub fn start(&mut self, on_exit: OnStatus) -> Result<(), LinuxError> {
        let stdio = self.stdio.take().unwrap_or_default();
        let pid_file = self.spec.with_extension("pid");
        let mut exec = self.runc.command(&self.dir, "exec");
        exec.arg("--detach").arg("--process").arg(&self.spec);
        let pid = self
            .runc
            .launch(exec, "exec", &self.container, &self.dir, &pid_file, stdio)?;
        let _ = std::fs::remove_file(&pid_file);
        self.pid = Some(pid);
        self.exit = watch(pid, &self.container).map_err(|source| LinuxError::Thread {
            id: self.container.clone(),
            source,
        })?;
        self.exit.tell(on_exit);
        Ok(())
    }

    /// Signals it; one never started just ends, as by `signal`.
    pub fn kill(&mut self, signal: Signal) -> Result<Option<u32>, LinuxError> {
        let Some(pid) = self.pid else {
            self.stdio = None;
            return Ok(Some(signal.exit_status()));
        };
        // Until its exit is seen, the pid is still this process's (a
        // zombie at worst): the waiter has not reaped it.
        if self.exit.wait(Duration::ZERO).is_none()
            && let Ok(signal) = nix::sys::signal::Signal::try_from(signal.number())
            && let Err(e) = nix::sys::signal::kill(Pid::from_raw(pid), signal)
            && e != Errno::ESRCH
        {
            return Err(LinuxError::Signal {
                id: self.container.clone(),
                source: e.into(),
            });
        }
        Ok(None)
    }
}

impl Drop for LinuxExec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spec);
    }
}

/// runc's stats event in containerd's terms; cgroup v1 and v2 name their
/// raw memory counters differently.
fn stats_of(data: &Value) -> Stats {
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    let memory = &data["memory"];
    let raw = &memory["raw"];
    let either = |v1: &str, v2: &str| {
        if raw[v1].is_u64() {
            number(&raw[v1])
        } else {
            number(&raw[v2])
        }
    };
    let limit = number(&memory["usage"]["limit"]);
    Stats {
        cpu_ns: number(&data["cpu"]["usage"]["total"]),
        memory: number(&memory["usage"]["usage"]),
        rss: either("total_rss", "anon"),
        inactive_file: either("total_inactive_file", "inactive_file"),
        // runc gives "no limit" as the largest value the cgroup takes.
        limit: (limit > 0 && limit < i64::MAX as u64 / 2).then_some(limit),
    }
}

/// Deletes with runc the Linux container whose state is in `bundle`, if a
/// shim that died left one: its process is killed, its cgroup removed.
pub fn delete_left_behind(bundle: &Path) -> Result<(), LinuxError> {
    let dir = bundle.join("runc");
    let Ok(entries) = std::fs::read_dir(dir.join("state")) else {
        return Ok(());
    };
    let runc = Runc::locate();
    for entry in entries.flatten() {
        if let Some(id) = entry.file_name().to_str() {
            runc.run(&dir, "delete", &["--force"], id, &[])?;
        }
    }
    Ok(())
}

impl Drop for LinuxContainer {
    /// `runc delete`: its cgroup and runc's state go, and a process still
    /// there is killed.
    fn drop(&mut self) {
        if let Err(e) = self
            .runc
            .run(&self.dir, "delete", &["--force"], &self.id, &[])
        {
            tracing::warn!(id = %self.id, error = %wasmpod_oci::error_chain(&e), "runc left the container behind");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(id = %self.id, error = %e, "runc's directory stays in the bundle");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_namespaces() -> PodNamespaces {
        let (hold, _) = mpsc::sync_channel(0);
        PodNamespaces {
            ipc: "/proc/1/task/7/ns/ipc".into(),
            uts: "/proc/1/task/7/ns/uts".into(),
            _hold: hold,
        }
    }

    fn spec(namespaces: Value) -> Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["/proxy"], "ioPriority": {"class": "IOPRIO_CLASS_IDLE"}},
            "linux": {"namespaces": namespaces},
        })
    }

    #[test]
    fn the_shims_namespaces_become_the_pods() {
        let shim = std::process::id();
        let mut spec = spec(serde_json::json!([
            {"type": "pid"},
            {"type": "ipc", "path": format!("/proc/{shim}/ns/ipc")},
            {"type": "uts", "path": format!("/proc/{shim}/ns/uts")},
            {"type": "mount"},
            {"type": "network", "path": format!("/proc/{shim}/ns/net")},
        ]));
        let namespaces = pod_namespaces();
        let network = Network::Join("/var/run/netns/cni-1".into());
        let pod = PodView {
            network: &network,
            namespaces: &namespaces,
        };
        spec_for_runc(&mut spec, Path::new("/b/rootfs"), &pod).expect("adapted");
        assert_eq!(
            spec["linux"]["namespaces"],
            serde_json::json!([
                {"type": "pid"},
                {"type": "ipc", "path": "/proc/1/task/7/ns/ipc"},
                {"type": "uts", "path": "/proc/1/task/7/ns/uts"},
                {"type": "mount"},
                {"type": "network", "path": "/var/run/netns/cni-1"},
            ])
        );
        assert_eq!(
            spec["root"],
            serde_json::json!({"path": "/b/rootfs", "readonly": true})
        );
        assert_eq!(
            spec["process"]["ioPriority"]["class"], "IOPRIO_CLASS_IDLE",
            "what the shim does not read is kept"
        );
    }

    #[test]
    fn a_host_network_pod_has_no_network_namespace_and_a_shared_pid_one_is_refused() {
        let shim = std::process::id();
        let namespaces = pod_namespaces();
        let pod = PodView {
            network: &Network::Host,
            namespaces: &namespaces,
        };
        let mut host = spec(serde_json::json!([
            {"type": "network", "path": format!("/proc/{shim}/ns/net")},
        ]));
        spec_for_runc(&mut host, Path::new("/r"), &pod).expect("adapted");
        assert_eq!(host["linux"]["namespaces"], serde_json::json!([]));
        let mut shared = spec(serde_json::json!([
            {"type": "pid", "path": format!("/proc/{shim}/ns/pid")},
        ]));
        let refused = spec_for_runc(&mut shared, Path::new("/r"), &pod).expect_err("refused");
        assert!(refused.to_string().contains("pid namespace"), "{refused}");
    }

    #[test]
    fn stats_read_both_cgroup_versions() {
        let v1 = serde_json::json!({
            "cpu": {"usage": {"total": 1500}},
            "memory": {"usage": {"usage": 4096, "limit": 9223372036854771712u64},
                       "raw": {"total_rss": 1024, "total_inactive_file": 512}},
        });
        let stats = stats_of(&v1);
        assert_eq!(
            (
                stats.cpu_ns,
                stats.memory,
                stats.rss,
                stats.inactive_file,
                stats.limit
            ),
            (1500, 4096, 1024, 512, None)
        );
        let v2 = serde_json::json!({
            "memory": {"usage": {"usage": 8192, "limit": 65536},
                       "raw": {"anon": 2048, "inactive_file": 256}},
        });
        let stats = stats_of(&v2);
        assert_eq!(
            (stats.memory, stats.rss, stats.inactive_file, stats.limit),
            (8192, 2048, 256, Some(65536))
        );
    }

    #[test]
    fn a_pods_namespaces_are_new_ones_held_by_a_thread() {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let root = status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        if !root {
            eprintln!("skipped: making namespaces needs root");
            return;
        }
        let held = PodNamespaces::new(Some("pod-1")).expect("namespaces");
        let ours = std::fs::read_link("/proc/thread-self/ns/uts").expect("our uts");
        let pods = std::fs::read_link(&held.uts).expect("the pod's uts");
        assert_ne!(ours, pods, "a namespace of its own");
        assert_ne!(
            std::fs::read_link("/proc/thread-self/ns/ipc").expect("our ipc"),
            std::fs::read_link(&held.ipc).expect("the pod's ipc")
        );
        let tid = held
            .uts
            .parent()
            .and_then(Path::parent)
            .expect("task dir")
            .to_owned();
        drop(held);
        for _ in 0..500 {
            if !tid.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the holding thread outlived its namespaces");
    }
}
