//! The `start` action and the long-running shim server.
//!
//! containerd-shim 0.12 answers `start` with a task API v3 JSON document and
//! serves only `containerd.task.v3.Task`. containerd 1.6 reads the answer as
//! a bare socket address and calls `containerd.task.v2.Task`, and 2.1 asks
//! for at most version 2 (`MAX_SHIM_VERSION=2`). Both names carry the same
//! messages, so this module answers with the bare address, which every
//! containerd from 1.6 on accepts as version 2, and serves the task service
//! under both names.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Flags, StartOpts};
use tokio::signal::unix::{SignalKind, signal};

use crate::cgroup::{Hierarchy, MainThread};
use crate::compiler::Compiler;
use crate::engine::WasmEngine;
use crate::pod::Pod;
use crate::service::TaskService;
use crate::shim::ContainerdEvents;
use crate::spec::ContainerSpec;

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

/// Why the shim could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// containerd did not pass what a shim needs.
    #[error("containerd did not set {0}")]
    MissingEnv(&'static str),
    /// Spawning the server process failed.
    #[error("cannot start the shim server")]
    Spawn(#[source] containerd_shim::Error),
    /// The socket could not be bound or probed.
    #[error("cannot listen on {path}")]
    Listen {
        /// Socket path.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The ttrpc server failed.
    #[error("the ttrpc server failed")]
    Ttrpc(#[source] containerd_shim::protos::ttrpc::Error),
    /// Connecting back to containerd's event service failed.
    #[error("cannot connect to containerd's event service")]
    Events(#[source] containerd_shim::Error),
    /// The Wasm engine could not be built.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// Writing the start answer failed.
    #[error("cannot answer containerd")]
    Io(#[from] std::io::Error),
}

/// `start`: launches (or finds) the server for this container's pod and
/// prints its address for containerd.
pub async fn start(flags: &Flags) -> Result<(), DaemonError> {
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| DaemonError::MissingEnv("TTRPC_ADDRESS"))?;
    // containerd runs `start` in the bundle directory. Containers of one
    // pod share a server (and so one engine); others get one each.
    let grouping = ContainerSpec::load(Path::new("."))
        .ok()
        .and_then(|spec| spec.sandbox_id().map(str::to_owned))
        .unwrap_or_else(|| flags.id.clone());
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address,
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let address = opts.socket_address(&grouping);
    if serving(&address) {
        // A pod's later containers join the server its sandbox started:
        // spawning a server only to have it find the socket taken costs a
        // process start on every container start.
        crate::logging::init_fifo_only(flags.debug);
        tracing::info!(socket = %address, "joining the pod's running shim");
    } else {
        containerd_shim::spawn(opts, &grouping, Vec::new())
            .await
            .map_err(DaemonError::Spawn)?;
    }
    // `delete` and a restarted containerd find the server through this file.
    std::fs::write("address", &address)?;
    use std::io::Write;
    let mut stdout = std::io::stdout();
    stdout.write_all(address.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Whether a server answers on `address` (`unix://PATH`).
fn serving(address: &str) -> bool {
    UnixStream::connect(address.strip_prefix("unix://").unwrap_or(address)).is_ok()
}

/// The server: serves the task API until containerd shuts the last task
/// down.
pub async fn serve(flags: &Flags) -> Result<(), DaemonError> {
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket)
        .to_owned();
    let listen_err = |source| DaemonError::Listen {
        path: path.clone(),
        source,
    };
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if serving(&path) {
                // Another container of this pod started at the same time
                // and got here first: its server serves us too.
                std::fs::write("address", &flags.socket)?;
                tracing::info!(socket = %flags.socket, "joining the pod's running shim");
                return Ok(());
            }
            std::fs::remove_file(&path).map_err(listen_err)?;
            UnixListener::bind(&path).map_err(listen_err)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = Path::new(&path).parent() {
                std::fs::create_dir_all(dir).map_err(listen_err)?;
            }
            UnixListener::bind(&path).map_err(listen_err)?
        }
        Err(e) => return Err(listen_err(e)),
    };
    let listener = Listener::try_from(listener).map_err(listen_err)?;

    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| DaemonError::MissingEnv("TTRPC_ADDRESS"))?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(DaemonError::Events)?;
    // The processes of the pod's Linux containers, which runc leaves
    // behind, become ours to wait for (see crate::linux).
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "not a child subreaper: Linux containers of this pod cannot run");
    }
    let cache_dir = crate::cache::dir_from_env();
    // The cgroup the shim started in, before a pod's takes it.
    let home = Hierarchy::detect(Path::new(crate::cgroup::ROOT))
        .as_ref()
        .and_then(crate::cgroup::current);
    let compiler = Compiler::new(&cache_dir, home);
    let engine = Arc::new(WasmEngine::new(cache_dir)?.with_background(Arc::new(compiler)));
    let exit = Arc::new(ExitSignal::default());
    let events = ContainerdEvents::new(publisher, flags.namespace.clone());
    let (main_thread, mut main_jobs) = MainThread::new();
    let service: Arc<dyn containerd_shim::Task + Send + Sync> = Arc::new(TaskService::new(
        Pod::new(engine.clone())
            .with_images(flags.address.clone(), flags.namespace.clone())
            .with_main_thread(main_thread),
        events,
        exit.clone(),
    ));

    let v3 = create_task(service.clone());
    let v2 = create_task(service)
        .into_iter()
        .map(|(name, s)| {
            (
                if name == TASK_V3 {
                    TASK_V2.to_owned()
                } else {
                    name
                },
                s,
            )
        })
        .collect();
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(v3)
        .register_service(v2);
    server.start().await.map_err(DaemonError::Ttrpc)?;
    // The `start` process reads our stdout until it closes: that is how it
    // knows the server listens.
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(std::io::Error::from)?;
    tracing::info!(
        socket = %flags.socket,
        cache = %engine.cache().dir().display(),
        "wasmpod shim serving"
    );

    // A Ctrl-C meant for whoever started containerd must not end the
    // guests: containerd stops the shim through the API.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // This future runs on the main thread (`block_on`), which takes the
    // jobs only it can do.
    loop {
        tokio::select! {
            () = exit.wait() => break,
            Some(job) = main_jobs.next() => job(),
            _ = term.recv() => tracing::debug!("ignoring SIGTERM; containerd shuts shims down"),
            _ = int.recv() => tracing::debug!("ignoring SIGINT"),
        }
    }
    if let Err(e) = server.shutdown().await {
        tracing::warn!(error = %e, "ttrpc shutdown");
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("wasmpod shim exiting");
    Ok(())
}
