//! The ttrpc task service containerd talks to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, Empty, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest,
    StatsResponse, Status, WaitRequest, WaitResponse,
};
use containerd_shim::event::Event;
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::types::mount::Mount;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{DeleteResponse, ExitSignal, TtrpcContext, TtrpcResult};

use crate::error::TaskError;
use crate::signal::{Kill, Signal};
use crate::spec::ContainerSpec;
use crate::stdio::StdioPaths;
use crate::sys::{HostMounts, RootfsMounts};
use crate::task::{State, Task};
use crate::usage::Stats;
use crate::workload::{Exited, Request, Workloads};

/// Where task events go: containerd's event service in production, a
/// channel in tests.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one event; failures are the sink's to log.
    async fn publish(&self, event: Box<dyn Event>);
}

/// The task service of one shim process (one pod, or one container).
pub struct TaskService<E> {
    workloads: Arc<dyn Workloads>,
    tasks: Mutex<HashMap<String, Task>>,
    events: Arc<E>,
    exit: Arc<ExitSignal>,
    pid: u32,
    mounts: Arc<dyn RootfsMounts>,
}

fn timestamp(at: SystemTime) -> MessageField<Timestamp> {
    MessageField::some(Timestamp::from(at))
}

/// A container's usage as cgroup v1 metrics, the form containerd's CRI
/// reads for ContainerStats (and the kubelet for `kubectl top`).
fn metrics(stats: Stats) -> Metrics {
    let mut m = Metrics::new();
    m.cpu = MessageField::some(CPUStat {
        usage: MessageField::some(CPUUsage {
            total: stats.cpu_ns,
            ..Default::default()
        }),
        ..Default::default()
    });
    m.memory = MessageField::some(MemoryStat {
        rss: stats.rss,
        total_rss: stats.rss,
        total_inactive_file: stats.inactive_file,
        usage: MessageField::some(MemoryEntry {
            usage: stats.memory,
            limit: stats.limit.unwrap_or(u64::MAX),
            ..Default::default()
        }),
        ..Default::default()
    });
    m
}

/// The exit of container `id`, or of its process `exec_id`.
fn exit_event(id: &str, exec_id: &str, pid: u32, exited: Exited) -> TaskExit {
    TaskExit {
        container_id: id.to_owned(),
        id: if exec_id.is_empty() { id } else { exec_id }.to_owned(),
        pid,
        exit_status: exited.status,
        exited_at: timestamp(exited.at),
        ..Default::default()
    }
}

impl<E: EventSink> TaskService<E> {
    /// A service running what `workloads` makes, reporting to `events`;
    /// `exit` is signalled when containerd shuts the last task down.
    pub fn new(workloads: impl Workloads, events: E, exit: Arc<ExitSignal>) -> Self {
        Self {
            workloads: Arc::new(workloads),
            tasks: Mutex::default(),
            events: Arc::new(events),
            exit,
            pid: std::process::id(),
            mounts: Arc::new(HostMounts),
        }
    }

    /// Mounts rootfs snapshots through `mounts` instead of the node's mount
    /// table.
    pub fn with_mounts(mut self, mounts: impl RootfsMounts) -> Self {
        self.mounts = Arc::new(mounts);
        self
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        // A panic while the lock was held leaves the map consistent (every
        // mutation is a single insert/remove/assignment), so keep serving.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_task<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Task) -> Result<T, TaskError>,
    ) -> Result<T, TaskError> {
        let mut tasks = self.tasks();
        let task = tasks
            .get_mut(id)
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))?;
        f(task)
    }

    async fn create_task(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse, TaskError> {
        if self.tasks().contains_key(&req.id) {
            return Err(TaskError::AlreadyExists(req.id));
        }
        if req.terminal {
            return Err(TaskError::Unsupported("a terminal (tty)"));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = ContainerSpec::load(&bundle)?;
        let mounted = if req.rootfs.is_empty() {
            None
        } else {
            self.mounts.mount(&req.rootfs, &spec.rootfs).await?;
            Some(spec.rootfs.clone())
        };
        let stdio_paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let prepared = self
            .prepare(&req.id, bundle, spec, &req.rootfs, stdio_paths)
            .await;
        let mut task = match prepared {
            Ok(task) => task,
            Err(e) => {
                if let Some(rootfs) = &mounted
                    && let Err(unmount) = self.mounts.unmount(rootfs)
                {
                    tracing::warn!(id = %req.id, error = %crate::error::chain(&unmount), "cleanup after a failed create");
                }
                return Err(e);
            }
        };
        task.mounted_rootfs = mounted;
        self.tasks().insert(req.id.clone(), task);
        self.events
            .publish(Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid: self.pid,
                ..Default::default()
            }))
            .await;
        Ok(CreateTaskResponse {
            pid: self.pid,
            ..Default::default()
        })
    }

    /// Makes what the container runs, off the async threads: compiling
    /// can take seconds.
    async fn prepare(
        &self,
        id: &str,
        bundle: PathBuf,
        spec: ContainerSpec,
        rootfs: &[Mount],
        stdio: StdioPaths,
    ) -> Result<Task, TaskError> {
        let workloads = self.workloads.clone();
        let id = id.to_owned();
        let rootfs = rootfs.to_vec();
        tokio::task::spawn_blocking(move || {
            let workload = workloads.make(Request {
                id: &id,
                bundle: bundle.clone(),
                spec,
                rootfs: &rootfs,
                stdio: stdio.clone(),
            })?;
            Ok(Task::new(id, bundle, stdio, workload))
        })
        .await
        .unwrap_or_else(|join| {
            tracing::error!(error = %join, "preparing the container panicked");
            Err(TaskError::Crashed("preparing the container"))
        })
    }

    /// Starts container `id`, or its process `exec_id`.
    async fn start_task(&self, id: &str, exec_id: &str) -> Result<StartResponse, TaskError> {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<u32>();
        let runtime = tokio::runtime::Handle::current();
        let events = self.events.clone();
        let (id_owned, exec_owned) = (id.to_owned(), exec_id.to_owned());
        let pid = self.with_task(id, |task| {
            let process = task.process(exec_id)?;
            process.start(move |exited| {
                tracing::info!(id = %id_owned, exec_id = %exec_owned, status = exited.status, "exited");
                runtime.spawn(async move {
                    // The start event goes out first, whatever the race.
                    let Ok(pid) = started_rx.await else {
                        return;
                    };
                    // The CRI marks a container OOMKilled on TaskOOM, which
                    // must come before its exit.
                    if exited.out_of_memory {
                        events
                            .publish(Box::new(TaskOOM {
                                container_id: id_owned.clone(),
                                ..Default::default()
                            }))
                            .await;
                    }
                    events
                        .publish(Box::new(exit_event(&id_owned, &exec_owned, pid, exited)))
                        .await;
                });
            })?;
            Ok(process.pid().unwrap_or(self.pid))
        })?;
        if exec_id.is_empty() {
            self.events
                .publish(Box::new(TaskStart {
                    container_id: id.to_owned(),
                    pid,
                    ..Default::default()
                }))
                .await;
            tracing::info!(%id, pid, "container started");
        } else {
            self.events
                .publish(Box::new(TaskExecStarted {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    pid,
                    ..Default::default()
                }))
                .await;
            tracing::info!(%id, %exec_id, pid, "exec started");
        }
        let _ = started_tx.send(pid);
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// Adds a process to a running container (`kubectl exec`).
    async fn exec_process(&self, req: ExecProcessRequest) -> Result<(), TaskError> {
        if req.terminal {
            return Err(TaskError::Unsupported("a terminal (tty)"));
        }
        let process = req
            .spec
            .as_ref()
            .map_or(&[][..], |any| any.value.as_slice());
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        self.with_task(&req.id, |t| t.exec(&req.exec_id, process, stdio))?;
        self.events
            .publish(Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }))
            .await;
        Ok(())
    }

    async fn kill_task(&self, req: KillRequest) -> Result<(), TaskError> {
        let signal = match Kill::from_request(req.signal)? {
            Kill::Stop(signal) => signal,
            Kill::Probe => {
                return self.with_task(&req.id, |t| match t.process(&req.exec_id)?.exited() {
                    None => Ok(()),
                    Some(_) => Err(TaskError::State {
                        id: req.id.clone(),
                        state: "already stopped",
                    }),
                });
            }
        };
        let (ended, pid) = self.with_task(&req.id, |t| {
            let process = t.process(&req.exec_id)?;
            Ok((process.kill(signal)?, process.pid().unwrap_or(self.pid)))
        })?;
        tracing::info!(id = %req.id, exec_id = %req.exec_id, %signal, "killed");
        if let Some(exited) = ended {
            self.events
                .publish(Box::new(exit_event(&req.id, &req.exec_id, pid, exited)))
                .await;
        }
        Ok(())
    }

    async fn delete_task(&self, req: DeleteRequest) -> Result<DeleteResponse, TaskError> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(&req.id, &req.exec_id).await;
        }
        let exited = self.with_task(&req.id, |task| {
            if task.state() == State::Created {
                // Deleting a container that never started ends it, as
                // runc's delete does.
                return Ok(task
                    .kill(Signal::KILL)?
                    .unwrap_or(Exited::now(Signal::KILL.exit_status())));
            }
            task.exited().ok_or_else(|| TaskError::State {
                id: req.id.clone(),
                state: "still running (kill it first)",
            })
        })?;
        let task = self.tasks().remove(&req.id);
        if let Some(rootfs) = task.as_ref().and_then(|t| t.mounted_rootfs.as_ref())
            && let Err(e) = self.mounts.unmount(rootfs)
        {
            // The task is gone either way, and containerd must hear it (as
            // from runc's shim); the mount is named here for the admin.
            tracing::warn!(id = %req.id, error = %crate::error::chain(&e), "container deleted, but its rootfs stays mounted");
        }
        if let Some(task) = task {
            let _ = tokio::task::spawn_blocking(move || task.release()).await;
        }
        self.events
            .publish(Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid: self.pid,
                exit_status: exited.status,
                exited_at: timestamp(exited.at),
                ..Default::default()
            }))
            .await;
        tracing::info!(id = %req.id, status = exited.status, "container deleted");
        Ok(DeleteResponse {
            pid: self.pid,
            exit_status: exited.status,
            exited_at: timestamp(exited.at),
            ..Default::default()
        })
    }

    /// Removes process `exec_id` of container `id`, ending it first if it
    /// never started. containerd hears no event of it, as from runc's shim.
    async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<DeleteResponse, TaskError> {
        let (exec, exited, pid) = self.with_task(id, |task| {
            let process = task.process(exec_id)?;
            let exited = match process.state() {
                State::Created => process
                    .kill(Signal::KILL)?
                    .unwrap_or(Exited::now(Signal::KILL.exit_status())),
                _ => process.exited().ok_or_else(|| TaskError::State {
                    id: format!("{id} exec {exec_id}"),
                    state: "still running (kill it first)",
                })?,
            };
            let pid = process.pid().unwrap_or(self.pid);
            Ok((task.remove_exec(exec_id), exited, pid))
        })?;
        if let Some(exec) = exec {
            let _ = tokio::task::spawn_blocking(move || exec.release()).await;
        }
        tracing::info!(%id, %exec_id, status = exited.status, "exec deleted");
        Ok(DeleteResponse {
            pid,
            exit_status: exited.status,
            exited_at: timestamp(exited.at),
            ..Default::default()
        })
    }
}

fn unsupported<T>(what: &'static str) -> TtrpcResult<T> {
    Err(TaskError::Unsupported(what).into())
}

#[async_trait]
impl<E: EventSink> containerd_shim::Task for TaskService<E> {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let id = req.id.clone();
        self.create_task(req).await.map_err(|e| {
            tracing::warn!(%id, error = %crate::error::chain(&e), "create failed");
            e.into()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        Ok(self.start_task(&req.id, &req.exec_id).await?)
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.with_task(&req.id, |task| {
            let bundle = task.bundle.to_string_lossy().into_owned();
            let t = task.process(&req.exec_id)?;
            let pid = t.pid().unwrap_or(self.pid);
            let exited = t.exited();
            let status = match t.state() {
                State::Created => Status::CREATED,
                State::Running => Status::RUNNING,
                State::Stopped => Status::STOPPED,
            };
            Ok(StateResponse {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                bundle,
                pid,
                status: status.into(),
                stdin: t.stdio.stdin.clone(),
                stdout: t.stdio.stdout.clone(),
                stderr: t.stdio.stderr.clone(),
                exit_status: exited.map_or(0, |e| e.status),
                exited_at: exited.map_or_else(MessageField::none, |e| timestamp(e.at)),
                ..Default::default()
            })
        })?)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let mut exit = self.with_task(&req.id, |t| Ok(t.process(&req.exec_id)?.exit_watch()))?;
        let exited = match exit.wait_for(Option::is_some).await {
            Ok(e) => *e,
            // The task was deleted while we waited; it has no status left.
            Err(_) => None,
        };
        let exited = exited.ok_or_else(|| TaskError::NotFound(req.id.clone()))?;
        Ok(WaitResponse {
            exit_status: exited.status,
            exited_at: timestamp(exited.at),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        self.kill_task(req).await?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        Ok(self.delete_task(req).await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        self.with_task(&req.id, |_| Ok(()))?;
        Ok(PidsResponse {
            processes: vec![ProcessInfo {
                pid: self.pid,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let stats = self.with_task(&req.id, |task| task.stats())?;
        let any = containerd_shim::util::convert_to_any(Box::new(metrics(stats)))
            .map_err(|e| ttrpc_internal(&e))?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        self.with_task(&req.id, |_| Ok(()))?;
        Ok(ConnectResponse {
            shim_pid: self.pid,
            task_pid: self.pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        self.with_task(&req.id, |_| Ok(()))?;
        Ok(Empty::new())
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.tasks().is_empty() {
            tracing::info!("no containers left; shim exits");
            self.exit.signal();
        }
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let (id, exec_id) = (req.id.clone(), req.exec_id.clone());
        self.exec_process(req).await.map_err(|e| {
            tracing::warn!(%id, %exec_id, error = %crate::error::chain(&e), "exec failed");
            ttrpc_error(e)
        })?;
        Ok(Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _req: containerd_shim::api::ResizePtyRequest,
    ) -> TtrpcResult<Empty> {
        unsupported("a terminal (tty)")
    }

    async fn pause(
        &self,
        _ctx: &TtrpcContext,
        _req: containerd_shim::api::PauseRequest,
    ) -> TtrpcResult<Empty> {
        unsupported("pause")
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        _req: containerd_shim::api::ResumeRequest,
    ) -> TtrpcResult<Empty> {
        unsupported("resume")
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: containerd_shim::api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        unsupported("checkpoint")
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        _req: containerd_shim::api::UpdateTaskRequest,
    ) -> TtrpcResult<Empty> {
        unsupported("update")
    }
}

fn ttrpc_error(e: TaskError) -> containerd_shim::protos::ttrpc::Error {
    e.into()
}

fn ttrpc_internal(e: &dyn std::error::Error) -> containerd_shim::protos::ttrpc::Error {
    use containerd_shim::protos::ttrpc;
    ttrpc::Error::RpcStatus(ttrpc::get_status(
        ttrpc::Code::INTERNAL,
        crate::error::chain(e),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use std::path::Path;

    use super::*;
    use crate::engine::WasmEngine;
    use crate::pod::Pod;
    use crate::signal::SignalError;
    use crate::sys::MountError;
    use crate::workload::{OnExit, Workload};

    /// Topic and exit status (exit and delete events) of each event.
    type Seen = Vec<(String, Option<u32>)>;

    /// Records every event published.
    #[derive(Default, Clone)]
    struct Recorder(Arc<StdMutex<Seen>>);

    #[async_trait]
    impl EventSink for Recorder {
        async fn publish(&self, event: Box<dyn Event>) {
            let any: &dyn std::any::Any = event.as_ref() as &dyn std::any::Any;
            let status = any
                .downcast_ref::<TaskExit>()
                .map(|e| e.exit_status)
                .or_else(|| any.downcast_ref::<TaskDelete>().map(|e| e.exit_status));
            self.0.lock().expect("lock").push((event.topic(), status));
        }
    }

    fn sandbox_bundle(dir: &std::path::Path) {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/pause"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "annotations": {
                crate::spec::CONTAINER_TYPE_ANNOTATION: "sandbox",
                crate::spec::SANDBOX_ID_ANNOTATION: "pod-1",
            }
        });
        std::fs::create_dir_all(dir.join("rootfs")).expect("rootfs");
        std::fs::write(dir.join("config.json"), spec.to_string()).expect("config");
    }

    fn service(dir: &std::path::Path) -> (TaskService<Recorder>, Recorder) {
        let engine = Arc::new(WasmEngine::new(dir.join("cache")).expect("engine"));
        let events = Recorder::default();
        (
            TaskService::new(Pod::new(engine), events.clone(), Arc::default()),
            events,
        )
    }

    /// Makes workloads that run out of memory as soon as they start, on a
    /// thread of their own, as a guest refused a grow does.
    struct OutOfMemory;

    struct Starved;

    impl Workload for Starved {
        fn start(&mut self, on_exit: OnExit) -> Result<(), TaskError> {
            std::thread::spawn(move || {
                on_exit(Exited {
                    out_of_memory: true,
                    ..Exited::now(crate::guest::OOM_STATUS)
                })
            });
            Ok(())
        }

        fn kill(&mut self, _: Signal) -> Result<Option<Exited>, TaskError> {
            Ok(None)
        }

        fn stats(&self) -> Result<Stats, TaskError> {
            Ok(Stats::default())
        }

        fn release(self: Box<Self>) {}
    }

    impl Workloads for OutOfMemory {
        fn make(&self, _: Request<'_>) -> Result<Box<dyn Workload>, TaskError> {
            Ok(Box::new(Starved))
        }
    }

    #[tokio::test]
    async fn containerd_hears_start_then_oom_then_exit_and_wait_sees_it_before_delete() {
        let tmp = tempfile::tempdir().expect("tempdir");
        sandbox_bundle(tmp.path());
        let events = Recorder::default();
        let svc = TaskService::new(OutOfMemory, events.clone(), Arc::default());
        svc.create_task(create_request("c1", tmp.path()))
            .await
            .expect("create");
        svc.start_task("c1", "").await.expect("start");
        let exited = wait(&svc, "c1").await;
        assert_eq!((exited.status, exited.out_of_memory), (137, true));
        // The exit events go out on the runtime after the exit is recorded.
        for _ in 0..500 {
            if events.0.lock().expect("lock").len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let deleted = svc
            .delete_task(DeleteRequest {
                id: "c1".into(),
                ..Default::default()
            })
            .await
            .expect("delete");
        assert_eq!(deleted.exit_status, 137);
        assert_eq!(
            *events.0.lock().expect("lock"),
            [
                ("/tasks/create".to_owned(), None),
                ("/tasks/start".to_owned(), None),
                ("/tasks/oom".to_owned(), None),
                ("/tasks/exit".to_owned(), Some(137)),
                ("/tasks/delete".to_owned(), Some(137)),
            ]
        );
    }

    fn create_request(id: &str, bundle: &std::path::Path) -> CreateTaskRequest {
        CreateTaskRequest {
            id: id.into(),
            bundle: bundle.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    async fn wait(svc: &TaskService<Recorder>, id: &str) -> Exited {
        let mut rx = svc.with_task(id, |t| Ok(t.exit_watch())).expect("task");
        rx.wait_for(Option::is_some)
            .await
            .expect("exit")
            .expect("some")
    }

    #[tokio::test]
    async fn pod_sandbox_holds_until_killed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        sandbox_bundle(tmp.path());
        let (svc, events) = service(tmp.path());
        svc.create_task(create_request("pod-1", tmp.path()))
            .await
            .expect("create");
        svc.start_task("pod-1", "").await.expect("start");

        let waiting = tokio::time::timeout(Duration::from_millis(200), wait(&svc, "pod-1")).await;
        assert!(waiting.is_err(), "a sandbox must not exit by itself");
        let refused = svc
            .delete_task(DeleteRequest {
                id: "pod-1".into(),
                ..Default::default()
            })
            .await;
        assert!(
            matches!(refused, Err(TaskError::State { .. })),
            "running tasks are not deleted"
        );

        svc.kill_task(KillRequest {
            id: "pod-1".into(),
            signal: 15,
            ..Default::default()
        })
        .await
        .expect("kill");
        assert_eq!(
            wait(&svc, "pod-1").await.status,
            0,
            "SIGTERM stops it cleanly, like pause"
        );
        let again = svc
            .kill_task(KillRequest {
                id: "pod-1".into(),
                signal: 9,
                ..Default::default()
            })
            .await;
        assert!(matches!(again, Err(TaskError::State { .. })));
        let deleted = svc
            .delete_task(DeleteRequest {
                id: "pod-1".into(),
                ..Default::default()
            })
            .await
            .expect("delete");
        assert_eq!(deleted.exit_status, 0);
        assert!(matches!(
            svc.with_task("pod-1", |_| Ok(())),
            Err(TaskError::NotFound(_))
        ));
        assert_eq!(
            *events.0.lock().expect("lock"),
            [
                ("/tasks/create".to_owned(), None),
                ("/tasks/start".to_owned(), None),
                ("/tasks/exit".to_owned(), Some(0)),
                ("/tasks/delete".to_owned(), Some(0)),
            ]
        );
    }

    /// A mount table that mounts and then refuses every unmount, as a
    /// busy mount would.
    #[derive(Default, Clone)]
    struct StuckMounts(Arc<StdMutex<Vec<String>>>);

    #[async_trait]
    impl RootfsMounts for StuckMounts {
        async fn mount(&self, _: &[Mount], target: &Path) -> Result<(), MountError> {
            let call = format!("mount {}", target.display());
            self.0.lock().expect("lock").push(call);
            Ok(())
        }

        fn unmount(&self, target: &Path) -> Result<(), MountError> {
            let call = format!("unmount {}", target.display());
            self.0.lock().expect("lock").push(call);
            Err(MountError::Unmount {
                target: target.to_path_buf(),
                source: nix::Error::EBUSY,
            })
        }
    }

    #[tokio::test]
    async fn a_rootfs_that_will_not_unmount_still_lets_the_task_go() {
        let tmp = tempfile::tempdir().expect("tempdir");
        sandbox_bundle(tmp.path());
        let (svc, events) = service(tmp.path());
        let mounts = StuckMounts::default();
        let svc = svc.with_mounts(mounts.clone());
        let mut request = create_request("pod-1", tmp.path());
        request.rootfs = vec![Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            ..Default::default()
        }];
        svc.create_task(request).await.expect("create");
        let deleted = svc
            .delete_task(DeleteRequest {
                id: "pod-1".into(),
                ..Default::default()
            })
            .await
            .expect("deleted although the unmount failed");
        assert_eq!(deleted.exit_status, 137, "never started: killed");
        let rootfs = tmp.path().join("rootfs");
        assert_eq!(
            *mounts.0.lock().expect("lock"),
            [
                format!("mount {}", rootfs.display()),
                format!("unmount {}", rootfs.display()),
            ]
        );
        assert_eq!(
            *events.0.lock().expect("lock"),
            [
                ("/tasks/create".to_owned(), None),
                ("/tasks/delete".to_owned(), Some(137)),
            ],
            "containerd hears of the delete"
        );
        assert!(matches!(
            svc.with_task("pod-1", |_| Ok(())),
            Err(TaskError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn sigkill_gives_137_and_duplicates_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        sandbox_bundle(tmp.path());
        let (svc, _) = service(tmp.path());
        svc.create_task(create_request("pod-1", tmp.path()))
            .await
            .expect("create");
        let dup = svc.create_task(create_request("pod-1", tmp.path())).await;
        assert!(matches!(dup, Err(TaskError::AlreadyExists(_))));
        svc.start_task("pod-1", "").await.expect("start");
        assert!(matches!(
            svc.start_task("pod-1", "").await,
            Err(TaskError::State { .. })
        ));
        let stop = svc
            .kill_task(KillRequest {
                id: "pod-1".into(),
                signal: 19,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(stop, Err(TaskError::Signal(SignalError::NotTerminating(_)))),
            "SIGSTOP is refused"
        );
        svc.kill_task(KillRequest {
            id: "pod-1".into(),
            signal: 9,
            ..Default::default()
        })
        .await
        .expect("kill");
        assert_eq!(wait(&svc, "pod-1").await.status, 137);
    }

    #[tokio::test]
    async fn a_task_killed_before_start_exits_and_refuses_to_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        sandbox_bundle(tmp.path());
        let (svc, events) = service(tmp.path());
        svc.create_task(create_request("pod-1", tmp.path()))
            .await
            .expect("create");
        svc.kill_task(KillRequest {
            id: "pod-1".into(),
            signal: 9,
            ..Default::default()
        })
        .await
        .expect("kill a created task");
        assert_eq!(wait(&svc, "pod-1").await.status, 137);
        let refused = svc
            .start_task("pod-1", "")
            .await
            .expect_err("start after kill");
        assert_eq!(refused.to_string(), "container pod-1 is already stopped");
        assert_eq!(
            *events.0.lock().expect("lock"),
            [
                ("/tasks/create".to_owned(), None),
                ("/tasks/exit".to_owned(), Some(137)),
            ]
        );
    }

    #[tokio::test]
    async fn bad_bundles_and_terminals_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (svc, events) = service(tmp.path());
        let missing = svc
            .create_task(create_request("c1", &tmp.path().join("nope")))
            .await;
        assert!(matches!(missing, Err(TaskError::Spec(_))));
        let mut tty = create_request("c1", tmp.path());
        tty.terminal = true;
        assert!(matches!(
            svc.create_task(tty).await,
            Err(TaskError::Unsupported(_))
        ));
        assert!(svc.tasks().is_empty());
        assert!(events.0.lock().expect("lock").is_empty());
    }
}
