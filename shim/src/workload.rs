//! What a container runs, behind one seam: a Wasm guest, a Linux
//! container run by runc, or the pod's sandbox, which holds the pod and
//! runs nothing. The task service drives
//! each the same way (start, kill, stats, release) and turns what they
//! report into containerd's events; [`Workloads`] makes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::protos::types::mount::Mount;

use crate::capabilities::Grants;
use crate::cgroup::Cgroups;
use crate::engine::Program;
use crate::epochs::Epochs;
use crate::error::TaskError;
use crate::guest::{self, Exit, KillSwitch};
use crate::linux::{LinuxContainer, LinuxExec};
use crate::signal::Signal;
use crate::spec::ContainerSpec;
use crate::stdio::{Stdio, StdioPaths};
use crate::usage::{Stats, Usage};

/// How and when a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    /// Exit status.
    pub status: u32,
    /// When it ended.
    pub at: SystemTime,
    /// It failed after its memory limit refused it memory.
    pub out_of_memory: bool,
}

impl Exited {
    /// Ended now with `status`.
    pub fn now(status: u32) -> Self {
        Self {
            status,
            at: SystemTime::now(),
            out_of_memory: false,
        }
    }
}

/// Told once, from any thread, that a started workload has ended, by
/// itself or by a kill.
pub type OnExit = Box<dyn FnOnce(Exited) + Send>;

/// One container's running part. Calls come from the task service, which
/// keeps the container's state (created, running, stopped) and its exit.
pub trait Workload: Send {
    /// Starts it. `on_exit` is told when it ends, unless [`Workload::kill`]
    /// returns the exit itself.
    fn start(&mut self, on_exit: OnExit) -> Result<(), TaskError>;

    /// Ends it as by `signal`, started or not. Returns the exit if it ended
    /// right here; otherwise the exit comes through `on_exit` once it has.
    fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, TaskError>;

    /// What it uses now.
    fn stats(&self) -> Result<Stats, TaskError>;

    /// Gives back what it holds on the node, once it has ended. May block.
    fn release(self: Box<Self>);

    /// Its own process on the node, if it has one (a Wasm guest is a
    /// thread of the shim).
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Makes a process to run in it, not started (`kubectl exec`).
    fn exec(&mut self, _request: ExecRequest<'_>) -> Result<Box<dyn Workload>, TaskError> {
        Err(TaskError::Unsupported("exec"))
    }
}

/// A process to run in a running container, as containerd asks for it.
pub struct ExecRequest<'a> {
    /// The exec's id, unique within the container.
    pub exec_id: &'a str,
    /// Its OCI process (JSON), as containerd sends it.
    pub process: &'a [u8],
    /// Its standard streams.
    pub stdio: StdioPaths,
}

/// A container as containerd asks for it.
pub struct Request<'a> {
    /// Container id.
    pub id: &'a str,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Its spec, from the bundle.
    pub spec: ContainerSpec,
    /// containerd's snapshot of its rootfs (mounted at `spec.rootfs`).
    pub rootfs: &'a [Mount],
    /// Its standard streams.
    pub stdio: StdioPaths,
}

/// Makes the workload of each container of a shim.
pub trait Workloads: Send + Sync + 'static {
    /// Makes what `request` is to run, ready to start. Runs on a blocking
    /// thread: compiling can take seconds.
    fn make(&self, request: Request<'_>) -> Result<Box<dyn Workload>, TaskError>;
}

/// The pod's sandbox ("pause") container: it holds the pod (its cgroup, its
/// network) and runs nothing until it is killed.
pub struct PodSandbox {
    cgroup: Left,
}

/// A container's cgroup, and how it leaves it.
struct Left {
    cgroups: Arc<Cgroups>,
    id: String,
    usage: Usage,
    pid: u32,
}

impl Left {
    fn leave(self, sandbox: bool) {
        if let Some(cgroup) = self.usage.cgroup() {
            self.cgroups.leave(&self.id, cgroup, sandbox, self.pid);
        }
    }
}

impl PodSandbox {
    /// A sandbox whose cgroup (if it joined one) `cgroups` leaves for the
    /// shim `pid` on release.
    pub fn new(id: &str, usage: Usage, cgroups: Arc<Cgroups>, pid: u32) -> Self {
        Self {
            cgroup: Left {
                cgroups,
                id: id.to_owned(),
                usage,
                pid,
            },
        }
    }
}

impl Workload for PodSandbox {
    fn start(&mut self, _on_exit: OnExit) -> Result<(), TaskError> {
        Ok(())
    }

    fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, TaskError> {
        // Like the pause process: a polite stop is a clean exit.
        let status = if signal.is_polite() {
            0
        } else {
            signal.exit_status()
        };
        Ok(Some(Exited::now(status)))
    }

    fn stats(&self) -> Result<Stats, TaskError> {
        Ok(Stats::default())
    }

    fn release(self: Box<Self>) {
        self.cgroup.leave(true);
    }
}

/// A Wasm program, run on a thread of its own by [`guest::spawn`].
pub struct WasmGuest {
    phase: GuestPhase,
    epochs: Epochs,
    grants: Grants,
    cgroup: Left,
}

enum GuestPhase {
    Ready { program: Program, stdio: Stdio },
    Running(KillSwitch),
    Ended,
}

impl WasmGuest {
    /// Guest `id`, `program` linked with `grants`, ready to run with
    /// `stdio`; a kill ticks `epochs`. `usage` counts what it uses, in the
    /// cgroup it joined, which `cgroups` leaves for the shim `pid` on
    /// release.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: &str,
        program: Program,
        grants: Grants,
        stdio: Stdio,
        epochs: Epochs,
        usage: Usage,
        cgroups: Arc<Cgroups>,
        pid: u32,
    ) -> Self {
        Self {
            phase: GuestPhase::Ready { program, stdio },
            epochs,
            grants,
            cgroup: Left {
                cgroups,
                id: id.to_owned(),
                usage,
                pid,
            },
        }
    }
}

impl Workload for WasmGuest {
    fn start(&mut self, on_exit: OnExit) -> Result<(), TaskError> {
        let GuestPhase::Ready { program, stdio } =
            std::mem::replace(&mut self.phase, GuestPhase::Ended)
        else {
            // The task service starts a container once.
            return Ok(());
        };
        let kill = guest::spawn(
            self.epochs.clone(),
            program,
            &self.grants,
            stdio,
            &self.cgroup.id,
            self.cgroup.usage.clone(),
            move |e: Exit| {
                on_exit(Exited {
                    out_of_memory: e.out_of_memory,
                    ..Exited::now(e.status)
                });
            },
        )?;
        self.phase = GuestPhase::Running(kill);
        Ok(())
    }

    fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, TaskError> {
        match &self.phase {
            GuestPhase::Running(kill) => {
                kill.kill(signal);
                Ok(None)
            }
            // Never ran: it ends here, and its streams close.
            GuestPhase::Ready { .. } | GuestPhase::Ended => {
                self.phase = GuestPhase::Ended;
                Ok(Some(Exited::now(signal.exit_status())))
            }
        }
    }

    fn stats(&self) -> Result<Stats, TaskError> {
        let usage = &self.cgroup.usage;
        let linear = usage.memory();
        let (memory, rss, inactive_file) = match self.cgroup.cgroups.memory_charged(&self.cgroup.id)
        {
            // The pod's whole charge: the shim's memory as the kernel
            // counts it (see crate::cgroup).
            Some(c) => (c.usage.max(linear), c.rss, c.inactive_file),
            None => (linear, linear, 0),
        };
        Ok(Stats {
            cpu_ns: usage.cpu_ns().unwrap_or(0),
            memory,
            rss,
            inactive_file,
            limit: self.grants.memory_limit,
        })
    }

    fn release(self: Box<Self>) {
        self.cgroup.leave(false);
    }
}

/// A Linux container of the pod, run by runc (see [`crate::linux`]).
pub struct Linux(pub(crate) LinuxContainer);

impl Workload for Linux {
    fn start(&mut self, on_exit: OnExit) -> Result<(), TaskError> {
        Ok(self
            .0
            .start(Box::new(move |status| on_exit(Exited::now(status))))?)
    }

    fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, TaskError> {
        Ok(self.0.kill(signal)?.map(Exited::now))
    }

    fn stats(&self) -> Result<Stats, TaskError> {
        Ok(self.0.stats()?)
    }

    fn release(self: Box<Self>) {
        // Dropping it has runc delete it.
    }

    fn pid(&self) -> Option<u32> {
        Some(self.0.pid())
    }

    fn exec(&mut self, request: ExecRequest<'_>) -> Result<Box<dyn Workload>, TaskError> {
        let exec = self
            .0
            .exec(request.exec_id, request.process, request.stdio.open()?)?;
        Ok(Box::new(LinuxProcess(exec)))
    }
}

/// A process run in a Linux container of the pod (`kubectl exec`).
pub struct LinuxProcess(pub(crate) LinuxExec);

impl Workload for LinuxProcess {
    fn start(&mut self, on_exit: OnExit) -> Result<(), TaskError> {
        Ok(self
            .0
            .start(Box::new(move |status| on_exit(Exited::now(status))))?)
    }

    fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, TaskError> {
        Ok(self.0.kill(signal)?.map(Exited::now))
    }

    fn stats(&self) -> Result<Stats, TaskError> {
        Ok(Stats::default())
    }

    fn release(self: Box<Self>) {}

    fn pid(&self) -> Option<u32> {
        self.0.pid()
    }
}
