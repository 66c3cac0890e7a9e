//! The containers of one shim's pod, as the node makes them: the sandbox
//! first, which names the pod's network, cgroup and hostname; then each
//! container's Wasm program, compiled (or loaded from the cache) and linked
//! with what its spec grants, or, where the entrypoint is a Linux program,
//! a Linux container for runc.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::capabilities::Grants;
use crate::cgroup::{Cgroups, MainThread};
use crate::engine::WasmEngine;
use crate::error::TaskError;
use crate::linux::{LinuxContainer, PodNamespaces, PodView, Runc};
use crate::source::{Images, load_program};
use crate::spec::{ContainerRole, ContainerSpec, Network};
use crate::stdio::StdioPaths;
use crate::usage::Usage;
use crate::workload::{Linux, PodSandbox, Request, WasmGuest, Workload, Workloads};

/// Makes the workloads of a pod's containers on this node.
pub struct Pod {
    engine: Arc<WasmEngine>,
    images: Option<Arc<Images>>,
    cgroups: Arc<Cgroups>,
    /// Found when the pod's first Linux container is made.
    runc: std::sync::OnceLock<Runc>,
    shared: Mutex<Shared>,
    pid: u32,
}

/// What the pod's containers share.
#[derive(Default)]
struct Shared {
    /// The pod's network namespace, from its sandbox's spec.
    network: Option<Network>,
    /// The pod's hostname, from its sandbox's spec.
    hostname: Option<String>,
    /// The IPC and UTS namespaces of its Linux containers, once it has one.
    namespaces: Option<Arc<PodNamespaces>>,
}

impl Pod {
    /// Containers whose programs `engine` compiles, in the node's cgroup
    /// hierarchy.
    pub fn new(engine: Arc<WasmEngine>) -> Self {
        Self {
            engine,
            images: None,
            cgroups: Arc::new(Cgroups::detect(Path::new(crate::cgroup::ROOT))),
            runc: std::sync::OnceLock::new(),
            shared: Mutex::default(),
            pid: std::process::id(),
        }
    }

    /// Lets a pod's sandbox move the shim into the pod's cgroup through
    /// `main`, the way that avoids the kernel's node-wide lock (see
    /// [`MainThread`]).
    pub fn with_main_thread(mut self, main: MainThread) -> Self {
        self.cgroups = Arc::new(self.cgroups.with_main_thread(main));
        self
    }

    /// Lets containers run Wasm layers of their images, read from
    /// containerd's content store (gRPC socket `address`, `namespace`).
    pub fn with_images(mut self, address: String, namespace: String) -> Self {
        self.images = Some(Arc::new(Images::new(address, namespace)));
        self
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        // Fields set whole: a panic elsewhere leaves them usable.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CRI puts a pod's containers in the network namespace of the
    /// sandbox's process, `/proc/PID/ns/net`, and our PID is the shim's, in
    /// the node's namespace. The sandbox's spec names the pod's namespace
    /// itself: remember it, and give it to the pod's containers.
    fn place_in_pod(&self, spec: &mut ContainerSpec) {
        let mut pod = self.shared();
        let ours = Network::Join(format!("/proc/{}/ns/net", self.pid).into());
        match spec.role {
            ContainerRole::Sandbox => {
                pod.network = Some(spec.network.clone());
                pod.hostname = spec.hostname.clone();
            }
            ContainerRole::Guest if spec.network == ours => {
                spec.network = pod.network.clone().unwrap_or(Network::Host);
            }
            ContainerRole::Guest => {}
        }
    }

    /// A Linux container for runc, in the pod's namespaces; the first one
    /// makes the IPC and UTS namespaces the pod's Linux containers share.
    fn linux(
        &self,
        id: &str,
        bundle: &Path,
        spec: &ContainerSpec,
        stdio: &StdioPaths,
        program: &str,
    ) -> Result<Box<dyn Workload>, TaskError> {
        let namespaces = {
            let mut pod = self.shared();
            match &pod.namespaces {
                Some(held) => held.clone(),
                None => {
                    let made = Arc::new(PodNamespaces::new(pod.hostname.as_deref())?);
                    pod.namespaces = Some(made.clone());
                    made
                }
            }
        };
        let view = PodView {
            network: &spec.network,
            namespaces: &namespaces,
        };
        let container = LinuxContainer::create(
            self.runc.get_or_init(Runc::locate).clone(),
            id,
            bundle,
            &spec.rootfs,
            &view,
            stdio.open()?,
            spec.cgroups_path.as_deref(),
        )?;
        tracing::info!(%id, program, pid = container.pid(), "Linux container created");
        Ok(Box::new(Linux(container)))
    }
}

/// The Linux program a container's entrypoint names in its rootfs, if it
/// names one rather than Wasm.
fn native_program(spec: &ContainerSpec) -> Option<String> {
    let entrypoint = spec.args.first()?;
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map_or(wasmpod_oci::DEFAULT_PATH, |(_, value)| value.as_str());
    wasmpod_oci::native_program(&spec.rootfs, entrypoint, &spec.cwd, path)
}

impl Workloads for Pod {
    fn make(&self, request: Request<'_>) -> Result<Box<dyn Workload>, TaskError> {
        let Request {
            id,
            bundle,
            mut spec,
            rootfs,
            stdio,
        } = request;
        self.place_in_pod(&mut spec);
        // Before any cgroup is joined: runc puts a Linux container in its
        // own.
        if spec.role == ContainerRole::Guest
            && let Some(program) = native_program(&spec)
        {
            return self.linux(id, &bundle, &spec, &stdio, &program);
        }
        let grants = Grants::for_container(&spec)?;
        // Joined before the compile: on cgroup v1 the memory it keeps
        // (baseline code) is then charged where the kubelet reads this
        // container's memory, not to the sandbox.
        let cgroup = self.cgroups.join(id, &spec, self.pid);
        let usage = cgroup.map(Usage::in_cgroup).unwrap_or_default();
        let sandbox = spec.role == ContainerRole::Sandbox;
        let made = (|| {
            if sandbox {
                tracing::info!(%id, "pod sandbox created");
                return Ok(None);
            }
            let runtime = tokio::runtime::Handle::current();
            let program = load_program(
                &self.engine,
                self.images.as_deref(),
                &runtime,
                id,
                &spec,
                rootfs,
                &grants,
            )?;
            Ok::<_, TaskError>(Some((program, stdio.open()?)))
        })();
        let workload: Box<dyn Workload> = match made {
            Ok(None) => Box::new(PodSandbox::new(id, usage, self.cgroups.clone(), self.pid)),
            Ok(Some((program, stdio))) => Box::new(WasmGuest::new(
                id,
                program,
                grants,
                stdio,
                self.engine.epochs(),
                usage,
                self.cgroups.clone(),
                self.pid,
            )),
            Err(e) => {
                if let Some(cgroup) = usage.cgroup() {
                    self.cgroups.leave(id, cgroup, sandbox, self.pid);
                }
                return Err(e);
            }
        };
        Ok(workload)
    }
}
