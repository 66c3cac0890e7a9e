//! One container's life: created -> running -> stopped -> deleted.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::capabilities::Grants;
use crate::engine::Program;
use crate::epochs::Epochs;
use crate::guest::{self, Exit, KillSwitch};
use crate::signal::Signal;
use crate::spec::ContainerRole;
use crate::stdio::Stdio;
use crate::usage::Usage;

/// How and when a task ended.
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

/// Where a task is in its life.
pub enum State {
    /// Created, not started; holds what start needs.
    Created {
        /// The linked program; `None` for a pod sandbox.
        program: Option<Program>,
        /// Open standard streams.
        stdio: Stdio,
    },
    /// Running; a sandbox has no guest to kill.
    Running {
        /// Stops the guest.
        guest: Option<KillSwitch>,
    },
    /// Ended (see [`Task::exited`]).
    Stopped,
}

/// A container of this shim.
pub struct Task {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Where the rootfs is mounted, if this shim mounted it.
    pub mounted_rootfs: Option<PathBuf>,
    /// Stdio paths, reported back by `state`.
    pub stdio: crate::stdio::StdioPaths,
    /// Sandbox or guest.
    pub role: ContainerRole,
    /// Capabilities for the guest.
    pub grants: Grants,
    /// Current state.
    pub state: State,
    /// What the guest uses, for `Stats`.
    pub usage: Usage,
    exit: watch::Sender<Option<Exited>>,
}

impl Task {
    /// A new task in [`State::Created`].
    pub fn new(
        id: String,
        bundle: PathBuf,
        role: ContainerRole,
        grants: Grants,
        program: Option<Program>,
        stdio: Stdio,
        stdio_paths: crate::stdio::StdioPaths,
    ) -> Self {
        Self {
            id,
            bundle,
            mounted_rootfs: None,
            stdio: stdio_paths,
            role,
            grants,
            state: State::Created { program, stdio },
            usage: Usage::default(),
            exit: watch::channel(None).0,
        }
    }

    /// The exit, once there is one.
    pub fn exited(&self) -> Option<Exited> {
        *self.exit.borrow()
    }

    /// A receiver that sees the exit when it happens.
    pub fn exit_watch(&self) -> watch::Receiver<Option<Exited>> {
        self.exit.subscribe()
    }

    /// Starts the task. `on_exit` is called once, from any thread, when it
    /// ends; the task's exit watch is already set by then.
    pub fn start(
        &mut self,
        epochs: Epochs,
        on_exit: impl FnOnce(Exited) + Send + 'static,
    ) -> Result<(), crate::error::TaskError> {
        let (program, stdio) = match std::mem::replace(&mut self.state, State::Stopped) {
            State::Created { program, stdio } => (program, stdio),
            other => {
                // A task killed before it started is stopped, not started.
                let state = match other {
                    State::Stopped => "already stopped",
                    _ => "already started",
                };
                self.state = other;
                return Err(crate::error::TaskError::State {
                    id: self.id.clone(),
                    state,
                });
            }
        };
        let Some(program) = program else {
            // A pod sandbox holds the pod's namespaces and waits to be killed.
            self.state = State::Running { guest: None };
            return Ok(());
        };
        let exit = self.exit.clone();
        let spawned = guest::spawn(
            epochs,
            program,
            &self.grants,
            stdio,
            &self.id,
            self.usage.clone(),
            move |e: Exit| {
                let exited = Exited {
                    out_of_memory: e.out_of_memory,
                    ..Exited::now(e.status)
                };
                exit.send_replace(Some(exited));
                on_exit(exited);
            },
        );
        match spawned {
            Ok(kill) => {
                self.state = State::Running { guest: Some(kill) };
                Ok(())
            }
            Err(e) => {
                // Nothing ran; record a failed exit so wait and delete work.
                self.exit.send_replace(Some(Exited::now(1)));
                Err(e.into())
            }
        }
    }

    /// Delivers a terminating `signal`. Returns the exit if the task ended
    /// right here (a sandbox, or a task never started); a guest's exit comes
    /// through the `on_exit` given to [`Task::start`].
    pub fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, crate::error::TaskError> {
        if self.exited().is_some() {
            return Err(crate::error::TaskError::State {
                id: self.id.clone(),
                state: "already stopped",
            });
        }
        match &self.state {
            State::Running { guest: Some(kill) } => {
                kill.kill(signal);
                Ok(None)
            }
            State::Running { guest: None } | State::Created { .. } => {
                let status = match self.role {
                    // Like the pause process: a polite stop is a clean exit.
                    ContainerRole::Sandbox if signal.is_polite() => 0,
                    _ => signal.exit_status(),
                };
                let exited = Exited::now(status);
                self.state = State::Stopped;
                self.exit.send_replace(Some(exited));
                Ok(Some(exited))
            }
            State::Stopped => Err(crate::error::TaskError::State {
                id: self.id.clone(),
                state: "already stopped",
            }),
        }
    }

    /// Marks the task stopped once its guest has ended.
    pub fn reap(&mut self) {
        if self.exited().is_some() {
            self.state = State::Stopped;
        }
    }
}
