//! The last step of the health gate: a tiny Wasm container run through the
//! runtime containerd's CRI lists for `wasmpod`, as a pod's container would
//! be, so a shim that is listed but cannot start, or starts and cannot run a
//! guest, fails the install (and is rolled back) before the node is labelled
//! ready.
//!
//! The container goes through containerd's own task API, not the CRI: that
//! needs no image, no pod sandbox and no network, so it works on an
//! air-gapped node, and it is invisible to the kubelet. It lives in a
//! namespace of its own, its rootfs is a host directory of the installer's
//! holding one WASI module, and its stdout goes to a file there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteNamespaceRequest, DeleteTaskRequest, KillRequest, StartRequest, WaitRequest,
    containers_client::ContainersClient, namespaces_client::NamespacesClient,
    tasks_client::TasksClient,
};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

/// The containerd namespace the canary runs in; nothing else is in it.
pub const NAMESPACE: &str = "wasmpod-installer";
/// The canary container's ID, fixed so a run cut short is cleaned up by the next.
pub const CONTAINER: &str = "wasmpod-canary";
/// What the canary prints, and what the gate expects to read back.
const GREETING: &str = "wasmpod canary: a guest ran\n";
/// How long the canary may take from create to exit: a shim start and the
/// compile of a module of a few hundred bytes take milliseconds.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A WASI P1 command that writes [`GREETING`] to stdout and exits 0, and
/// exits 1 if the write fails. In the text format:
///
/// ```text
/// (module
///   (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
///   (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
///   (memory (export "memory") 1)
///   (data (i32.const 64) "wasmpod canary: a guest ran\n")
///   (func (export "_start")
///     (i32.store (i32.const 0) (i32.const 64))    ;; iovec: the greeting's address
///     (i32.store (i32.const 4) (i32.const LEN))   ;; and length
///     (if (call 0 (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
///       (then (call 1 (i32.const 1))))))
/// ```
///
/// Encoded with `wasm-encoder` rather than parsed from that text: a text
/// parser would double the installer's size for these few bytes.
fn module() -> Vec<u8> {
    use wasm_encoder::{
        BlockType, CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection,
        Function, FunctionSection, ImportSection, MemArg, MemArgTarget, MemorySection, MemoryType,
        Module, TypeSection, ValType,
    };
    const WASI: &str = "wasi_snapshot_preview1";
    const GREETING_AT: i32 = 64;
    let word = MemArg {
        offset: 0,
        align: 2,
        target: MemArgTarget::Memory(0),
        ordering: None,
    };
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]); // 0: fd_write
    types.ty().function([ValType::I32], []); // 1: proc_exit
    types.ty().function([], []); // 2: _start
    let mut imports = ImportSection::new();
    imports.import(WASI, "fd_write", EntityType::Function(0)); // func 0
    imports.import(WASI, "proc_exit", EntityType::Function(1)); // func 1
    let mut functions = FunctionSection::new();
    functions.function(2); // func 2: _start
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("_start", ExportKind::Func, 2);
    // The greeting is a constant of a few dozen bytes.
    let len = GREETING.len() as i32;
    let mut start = Function::new([]);
    start
        .instructions()
        .i32_const(0)
        .i32_const(GREETING_AT)
        .i32_store(word)
        .i32_const(4)
        .i32_const(len)
        .i32_store(word)
        // fd_write(stdout, iovs 0, one iovec, bytes written to 8)
        .i32_const(1)
        .i32_const(0)
        .i32_const(1)
        .i32_const(8)
        .call(0)
        .if_(BlockType::Empty)
        .i32_const(1)
        .call(1)
        .end()
        .end();
    let mut code = CodeSection::new();
    code.function(&start);
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(GREETING_AT), GREETING.bytes());
    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code)
        .section(&data);
    module.finish()
}

/// Why the canary did not run.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// Its files could not be written on the host.
    #[error("cannot write the test container's files in {dir}: {source}")]
    Files {
        /// The directory (as the installer sees it).
        dir: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// containerd refused a step.
    #[error("containerd refused to {what} the test container: {}", .status.message())]
    Rpc {
        /// The step.
        what: &'static str,
        /// containerd's answer.
        status: Status,
    },
    /// It did not exit in time (and was killed).
    #[error("the test container did not exit within {} s", TIMEOUT.as_secs())]
    Timeout,
    /// It exited with a failure.
    #[error("the test container exited with status {status}{stderr}")]
    Failed {
        /// Its exit status.
        status: u32,
        /// What it wrote to stderr (the shim's `wasmpod:` line), as `: ...`.
        stderr: String,
    },
    /// It exited 0 without printing what it should have.
    #[error("the test container exited 0 but printed {0:?}, not its greeting")]
    Output(String),
}

/// One run of the canary on a node.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The runtime to run it with: the CRI's `runtime_path` for `wasmpod`,
    /// else its `runtime_type`.
    pub runtime: String,
    /// Its directory as containerd sees it (a host path).
    pub host_dir: PathBuf,
    /// The same directory as the installer sees it.
    pub dir: PathBuf,
}

impl Canary {
    /// Writes the module, runs it to its exit through containerd on
    /// `channel`, and checks its exit status and stdout. The container and
    /// its namespace are removed afterwards, pass or fail.
    pub async fn run(&self, channel: Channel) -> Result<(), CanaryError> {
        self.write_files()?;
        let api = Api { channel };
        // A run cut short (the installer's pod restarted) left these.
        api.remove().await;
        let outcome = api.run(self).await;
        api.remove().await;
        if let Err(status) = api.delete_namespace().await {
            tracing::debug!(
                namespace = NAMESPACE,
                error = status.message(),
                "namespace kept"
            );
        }
        let status = outcome?;
        if status != 0 {
            let stderr = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
            let stderr = stderr.trim();
            return Err(CanaryError::Failed {
                status,
                stderr: if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                },
            });
        }
        let stdout = std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default();
        if stdout != GREETING {
            return Err(CanaryError::Output(stdout));
        }
        Ok(())
    }

    /// Removes the canary's directory (on uninstall).
    pub fn remove_files(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    fn write_files(&self) -> Result<(), CanaryError> {
        let files = |source| CanaryError::Files {
            dir: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(self.dir.join("rootfs")).map_err(files)?;
        std::fs::write(self.dir.join("rootfs/canary.wasm"), module()).map_err(files)?;
        // The shim appends to file:// stdio; each run starts empty.
        for name in ["stdout", "stderr"] {
            std::fs::write(self.dir.join(name), b"").map_err(files)?;
        }
        Ok(())
    }

    /// The container's runtime spec: just the process, its root and no
    /// grants (deny by default leaves it stdout and nothing else).
    fn spec(&self) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {
                "args": ["/canary.wasm"],
                "cwd": "/",
                "env": [],
                "user": {"uid": 0, "gid": 0},
            },
            "root": {"path": self.host_dir.join("rootfs"), "readonly": true},
            "linux": {},
        })
    }
}

/// containerd's task API in the canary's namespace.
struct Api {
    channel: Channel,
}

impl Api {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "containerd-namespace",
            MetadataValue::from_static(NAMESPACE),
        );
        request
    }

    async fn run(&self, canary: &Canary) -> Result<u32, CanaryError> {
        let rpc = |what| move |status| CanaryError::Rpc { what, status };
        let spec = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".to_owned(),
            value: canary.spec().to_string().into_bytes(),
        };
        ContainersClient::new(self.channel.clone())
            .create(self.request(CreateContainerRequest {
                container: Some(Container {
                    id: CONTAINER.to_owned(),
                    runtime: Some(Runtime {
                        name: canary.runtime.clone(),
                        options: None,
                    }),
                    spec: Some(spec),
                    ..Default::default()
                }),
            }))
            .await
            .map_err(rpc("create"))?;
        let file = |name: &str| format!("file://{}", canary.host_dir.join(name).display());
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(self.request(CreateTaskRequest {
                container_id: CONTAINER.to_owned(),
                stdout: file("stdout"),
                stderr: file("stderr"),
                ..Default::default()
            }))
            .await
            .map_err(rpc("start a shim for"))?;
        let wait = async {
            tasks
                .start(self.request(StartRequest {
                    container_id: CONTAINER.to_owned(),
                    exec_id: String::new(),
                }))
                .await
                .map_err(rpc("start"))?;
            tasks
                .wait(self.request(WaitRequest {
                    container_id: CONTAINER.to_owned(),
                    exec_id: String::new(),
                }))
                .await
                .map(|response| response.into_inner().exit_status)
                .map_err(rpc("wait for"))
        };
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .map_err(|_| CanaryError::Timeout)?
    }

    /// Kills and deletes the canary's task and container, if there are any.
    async fn remove(&self) {
        let mut tasks = TasksClient::new(self.channel.clone());
        let kill = tasks
            .kill(self.request(KillRequest {
                container_id: CONTAINER.to_owned(),
                signal: nix::sys::signal::Signal::SIGKILL as u32,
                all: true,
                ..Default::default()
            }))
            .await;
        let steps = [
            kill.map(drop),
            tasks
                .delete(self.request(DeleteTaskRequest {
                    container_id: CONTAINER.to_owned(),
                }))
                .await
                .map(drop),
            ContainersClient::new(self.channel.clone())
                .delete(self.request(DeleteContainerRequest {
                    id: CONTAINER.to_owned(),
                }))
                .await
                .map(drop),
        ];
        for status in steps.into_iter().filter_map(Result::err) {
            if !matches!(status.code(), Code::NotFound | Code::FailedPrecondition) {
                tracing::warn!(
                    container = CONTAINER,
                    error = status.message(),
                    "test container not cleaned up"
                );
            }
        }
    }

    async fn delete_namespace(&self) -> Result<(), Status> {
        NamespacesClient::new(self.channel.clone())
            .delete(Request::new(DeleteNamespaceRequest {
                name: NAMESPACE.to_owned(),
            }))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_is_wasm_holding_the_greeting() {
        let module = module();
        wasmparser::Validator::new()
            .validate_all(&module)
            .expect("a valid module");
        assert_eq!(
            &module[..8],
            b"\0asm\x01\0\0\0",
            "a core module, not a component"
        );
        assert!(
            module
                .windows(GREETING.len())
                .any(|bytes| bytes == GREETING.as_bytes()),
            "the data segment holds the greeting as is"
        );
    }

    #[test]
    fn the_spec_roots_the_guest_in_the_host_dir_read_only() {
        let canary = Canary {
            runtime: "/opt/wasmpod/bin/containerd-shim-wasmpod-v1".into(),
            host_dir: "/opt/wasmpod/canary".into(),
            dir: "/host/opt/wasmpod/canary".into(),
        };
        let spec = canary.spec();
        assert_eq!(spec["root"]["path"], "/opt/wasmpod/canary/rootfs");
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["process"]["args"][0], "/canary.wasm");
    }
}
