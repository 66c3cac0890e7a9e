//! The shim v2 process protocol: `start`, `delete` and the long-running
//! daemon, as containerd drives them.

use async_trait::async_trait;
use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};
use std::path::Path;

use crate::cgroup::Hierarchy;
use crate::service::EventSink;
use crate::spec::ContainerSpec;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_TYPE: &str = "io.containerd.wasmpod.v1";

/// What containerd-shim's `run` needs for the actions it still handles
/// for us: `-info` and `delete`.
pub struct WasmpodShim;

/// The task service type `run` asks for; never served, because main.rs
/// hands the server to [`crate::daemon::serve`].
pub struct NoTasks;

impl containerd_shim::Task for NoTasks {}

/// Sends events to containerd.
pub struct ContainerdEvents {
    publisher: RemotePublisher,
    namespace: String,
}

impl ContainerdEvents {
    /// Publishes through `publisher` into containerd `namespace`.
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        Self {
            publisher,
            namespace,
        }
    }
}

#[async_trait]
impl EventSink for ContainerdEvents {
    async fn publish(&self, event: Box<dyn Event>) {
        let topic = event.topic();
        if let Err(e) = self
            .publisher
            .publish(
                containerd_shim::Context::default(),
                &topic,
                &self.namespace,
                event,
            )
            .await
        {
            tracing::warn!(%topic, error = %e, "cannot publish event");
        }
    }
}

#[async_trait]
impl containerd_shim::Shim for WasmpodShim {
    type T = NoTasks;

    async fn new(_runtime_id: &str, _args: &Flags, _config: &mut Config) -> Self {
        Self
    }

    async fn start_shim(&mut self, _opts: StartOpts) -> Result<String, Error> {
        // main.rs sends `start` to crate::daemon::start instead.
        Err(Error::Unimplemented(
            "start is handled by wasmpod's daemon module".into(),
        ))
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // Called after a shim died: no Wasm runs any more, but a Linux
        // container may (runc's), and the rootfs this shim mounted and the
        // container's cgroups may still be there (a pod's cgroup with one
        // left inside cannot be removed).
        if let Err(e) = crate::linux::delete_left_behind(Path::new(".")) {
            eprintln!("{}", crate::error::chain(&e));
        }
        if let Ok(spec) = ContainerSpec::load(Path::new(".")) {
            if let Err(e) = crate::sys::unmount_rootfs(&spec.rootfs) {
                eprintln!("{}", crate::error::chain(&e));
            }
            if let Some(path) = spec.cgroups_path.as_deref()
                && let Some(hierarchy) = Hierarchy::detect(Path::new(crate::cgroup::ROOT))
                && let Err(e) = hierarchy.remove_left(path)
            {
                eprintln!("{}", crate::error::chain(&e));
            }
        }
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: containerd_shim::protos::protobuf::MessageField::some(
                containerd_shim::util::timestamp()?,
            ),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {}

    async fn create_task_service(&self, _publisher: RemotePublisher) -> Self::T {
        NoTasks
    }
}
