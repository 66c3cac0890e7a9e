//! One container's life: created -> running -> stopped -> deleted, whatever
//! it runs (see [`crate::workload`]).

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::sync::watch;

use crate::error::TaskError;
use crate::signal::Signal;
use crate::stdio::StdioPaths;
use crate::usage::Stats;
use crate::workload::{ExecRequest, Exited, OnExit, Workload};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, not started.
    Created,
    /// Started, not ended.
    Running,
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
    pub stdio: StdioPaths,
    state: State,
    workload: Box<dyn Workload>,
    exit: watch::Sender<Option<Exited>>,
    /// Processes started in it (`kubectl exec`), by exec id.
    execs: HashMap<String, Task>,
}

impl Task {
    /// A new task in [`State::Created`].
    pub fn new(
        id: String,
        bundle: PathBuf,
        stdio: StdioPaths,
        workload: Box<dyn Workload>,
    ) -> Self {
        Self {
            id,
            bundle,
            mounted_rootfs: None,
            stdio,
            state: State::Created,
            workload,
            exit: watch::channel(None).0,
            execs: HashMap::new(),
        }
    }

    /// Its own process on the node, if it has one.
    pub fn pid(&self) -> Option<u32> {
        self.workload.pid()
    }

    /// The task itself (`exec_id` empty), or the process `exec_id` in it.
    pub fn process(&mut self, exec_id: &str) -> Result<&mut Task, TaskError> {
        if exec_id.is_empty() {
            return Ok(self);
        }
        let id = format!("{} exec {exec_id}", self.id);
        self.execs.get_mut(exec_id).ok_or(TaskError::NotFound(id))
    }

    /// Adds process `exec_id` to run in it, not started.
    pub fn exec(
        &mut self,
        exec_id: &str,
        process: &[u8],
        stdio: StdioPaths,
    ) -> Result<(), TaskError> {
        if self.state() != State::Running {
            return Err(self.refuse("not running"));
        }
        if self.execs.contains_key(exec_id) {
            return Err(TaskError::AlreadyExists(format!(
                "{} exec {exec_id}",
                self.id
            )));
        }
        let workload = self.workload.exec(ExecRequest {
            exec_id,
            process,
            stdio: stdio.clone(),
        })?;
        let exec = Task::new(exec_id.to_owned(), self.bundle.clone(), stdio, workload);
        self.execs.insert(exec_id.to_owned(), exec);
        Ok(())
    }

    /// Takes process `exec_id` out of it, to be released.
    pub fn remove_exec(&mut self, exec_id: &str) -> Option<Task> {
        self.execs.remove(exec_id)
    }

    /// Where it is in its life; stopped once its exit is known.
    pub fn state(&self) -> State {
        if self.exited().is_some() {
            State::Stopped
        } else {
            self.state
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

    /// What it uses now.
    pub fn stats(&self) -> Result<Stats, TaskError> {
        self.workload.stats()
    }

    fn refuse(&self, state: &'static str) -> TaskError {
        TaskError::State {
            id: self.id.clone(),
            state,
        }
    }

    /// Starts the task. `on_exit` is called once, from any thread, when it
    /// ends; the task's exit watch is already set by then.
    pub fn start(
        &mut self,
        on_exit: impl FnOnce(Exited) + Send + 'static,
    ) -> Result<(), TaskError> {
        match self.state() {
            State::Created => {}
            // A task killed before it started is stopped, not started.
            State::Stopped => return Err(self.refuse("already stopped")),
            State::Running => return Err(self.refuse("already started")),
        }
        let exit = self.exit.clone();
        let on_exit: OnExit = Box::new(move |exited| {
            exit.send_replace(Some(exited));
            on_exit(exited);
        });
        match self.workload.start(on_exit) {
            Ok(()) => {
                self.state = State::Running;
                Ok(())
            }
            Err(e) => {
                // Nothing ran; record a failed exit so wait and delete work.
                self.state = State::Stopped;
                self.exit.send_replace(Some(Exited::now(1)));
                Err(e)
            }
        }
    }

    /// Delivers a terminating `signal`. Returns the exit if the task ended
    /// right here (a sandbox, or a task never started); otherwise it comes
    /// through the `on_exit` given to [`Task::start`].
    pub fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, TaskError> {
        if self.state() == State::Stopped {
            return Err(self.refuse("already stopped"));
        }
        let ended = self.workload.kill(signal)?;
        if let Some(exited) = ended {
            self.state = State::Stopped;
            self.exit.send_replace(Some(exited));
        }
        Ok(ended)
    }

    /// Gives back what the task and its processes held on the node; it has
    /// ended. May block.
    pub fn release(self) {
        for exec in self.execs.into_values() {
            exec.release();
        }
        self.workload.release();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the calls it gets; ends when killed, with the signal's status.
    #[derive(Default)]
    struct Stub {
        on_exit: Arc<Mutex<Option<OnExit>>>,
    }

    impl Workload for Stub {
        fn start(&mut self, on_exit: OnExit) -> Result<(), TaskError> {
            *self.on_exit.lock().expect("lock") = Some(on_exit);
            Ok(())
        }

        fn kill(&mut self, signal: Signal) -> Result<Option<Exited>, TaskError> {
            match self.on_exit.lock().expect("lock").take() {
                Some(on_exit) => {
                    on_exit(Exited::now(signal.exit_status()));
                    Ok(None)
                }
                None => Ok(Some(Exited::now(signal.exit_status()))),
            }
        }

        fn stats(&self) -> Result<Stats, TaskError> {
            Ok(Stats::default())
        }

        fn release(self: Box<Self>) {}
    }

    fn task() -> Task {
        Task::new(
            "c1".into(),
            PathBuf::new(),
            StdioPaths::default(),
            Box::new(Stub::default()),
        )
    }

    #[test]
    fn a_started_task_ends_through_its_exit_and_then_refuses_kills() {
        let mut task = task();
        assert_eq!(task.state(), State::Created);
        let told = Arc::new(Mutex::new(None));
        let seen = told.clone();
        task.start(move |e| *seen.lock().expect("lock") = Some(e.status))
            .expect("start");
        assert_eq!(task.state(), State::Running);
        assert_eq!(task.kill(Signal::KILL).expect("kill"), None, "told later");
        assert_eq!(*told.lock().expect("lock"), Some(137));
        assert_eq!(task.exited().map(|e| e.status), Some(137));
        assert_eq!(task.state(), State::Stopped);
        assert!(matches!(
            task.kill(Signal::TERM),
            Err(TaskError::State { .. })
        ));
        assert!(matches!(task.start(|_| {}), Err(TaskError::State { .. })));
    }

    #[test]
    fn a_task_killed_before_start_is_stopped_and_never_starts() {
        let mut task = task();
        let ended = task.kill(Signal::TERM).expect("kill");
        assert_eq!(ended.map(|e| e.status), Some(143));
        assert_eq!(task.state(), State::Stopped);
        let refused = task.start(|_| {}).expect_err("start after kill");
        assert_eq!(refused.to_string(), "container c1 is already stopped");
    }
}
