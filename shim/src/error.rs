//! Task errors, and the one place they become ttrpc status codes.

use containerd_shim::protos::ttrpc;

use crate::capabilities::CapabilityError;
use crate::engine::EngineError;
use crate::guest::SpawnError;
use crate::linux::LinuxError;
use crate::signal::SignalError;
use crate::spec::SpecError;
use crate::stdio::StdioError;
use crate::sys::MountError;

/// Why a task request failed. Each message is meant for the person who ran
/// `ctr` or reads `kubectl describe`.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No task has this id in this shim.
    #[error("container {0} not found")]
    NotFound(String),
    /// A task with this id exists already.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The request asks for something Wasm containers do not have.
    #[error("{0} is not supported for Wasm containers")]
    Unsupported(&'static str),
    /// The signal has no meaning for a Wasm guest.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The task is not in a state that allows the request.
    #[error("container {id} is {state}")]
    State {
        /// Task id.
        id: String,
        /// Its state, as a participle ("not started", "still running").
        state: &'static str,
    },
    /// The bundle's spec is unusable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The Wasm could not be found or read.
    #[error(transparent)]
    Source(#[from] wasmpod_oci::SourceError),
    /// The image's Wasm layer could not be found or read.
    #[error(transparent)]
    Content(#[from] wasmpod_oci::ContentError),
    /// The Wasm could not be compiled or linked.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A capability could not be set up.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// The guest thread could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The rootfs could not be mounted or unmounted.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// A standard stream could not be opened.
    #[error(transparent)]
    Stdio(#[from] StdioError),
    /// runc could not run or manage a Linux container of the pod.
    #[error(transparent)]
    Linux(#[from] LinuxError),
    /// A bug: the shim panicked while doing this; its log has the panic.
    #[error("wasmpod crashed while {0}; the containerd log has the details")]
    Crashed(&'static str),
}

impl TaskError {
    /// The one mapping from a failure to its ttrpc code, by cause: what the
    /// pod asks for wrongly is INVALID_ARGUMENT, a containerd that does not
    /// answer UNAVAILABLE, what goes wrong on the node INTERNAL.
    fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        use wasmpod_oci::{ContentError, SourceError};
        match self {
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Self::Unsupported(_) | Self::Stdio(StdioError::Scheme(_)) => Code::UNIMPLEMENTED,
            Self::State { .. } => Code::FAILED_PRECONDITION,
            Self::Signal(_) | Self::Spec(_) => Code::INVALID_ARGUMENT,
            Self::Source(SourceError::Rootfs { .. } | SourceError::Read { .. }) => Code::INTERNAL,
            Self::Source(_) => Code::INVALID_ARGUMENT,
            Self::Content(e) if e.is_unreachable() => Code::UNAVAILABLE,
            Self::Content(e) => match e {
                ContentError::Connect { .. } | ContentError::Rpc { .. } => Code::INTERNAL,
                ContentError::ImageNotFound { .. } => Code::FAILED_PRECONDITION,
                ContentError::Mismatch { .. } => Code::DATA_LOSS,
                _ => Code::INVALID_ARGUMENT,
            },
            Self::Engine(EngineError::Config(_)) => Code::INTERNAL,
            Self::Engine(_) => Code::INVALID_ARGUMENT,
            Self::Capability(e) | Self::Spawn(SpawnError::Capability(e)) => match e {
                CapabilityError::Sockets(_) | CapabilityError::Http(_) => Code::INVALID_ARGUMENT,
                CapabilityError::Preopen { .. } => Code::INTERNAL,
            },
            Self::Spawn(SpawnError::Thread(_)) => Code::RESOURCE_EXHAUSTED,
            Self::Linux(LinuxError::SharedNamespace(_)) => Code::INVALID_ARGUMENT,
            Self::Linux(LinuxError::Thread { .. }) => Code::RESOURCE_EXHAUSTED,
            Self::Linux(_) => Code::INTERNAL,
            Self::Spawn(SpawnError::Sandbox(_))
            | Self::Mount(_)
            | Self::Stdio(StdioError::Open { .. })
            | Self::Crashed(_) => Code::INTERNAL,
        }
    }
}

/// Errors reach containerd over ttrpc as one line, causes included.
pub use wasmpod_oci::error_chain as chain;

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: TaskError) -> (ttrpc::Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_owned()),
            other => panic!("not a status: {other:?}"),
        }
    }

    fn code(e: TaskError) -> ttrpc::Code {
        status(e).0
    }

    fn bad_annotation() -> CapabilityError {
        let annotations = [(
            crate::sockets::TCP_CONNECT.to_owned(),
            "not an address".to_owned(),
        )];
        let refused = crate::sockets::SocketGrants::from_annotations(&annotations.into())
            .expect_err("a malformed grant");
        CapabilityError::Sockets(refused)
    }

    #[test]
    fn what_the_pod_asks_wrongly_is_an_invalid_argument() {
        use ttrpc::Code;
        assert_eq!(code(bad_annotation().into()), Code::INVALID_ARGUMENT);
        let spawn = SpawnError::Capability(bad_annotation());
        assert_eq!(code(spawn.into()), Code::INVALID_ARGUMENT);
        assert_eq!(code(SpecError::NoProcess.into()), Code::INVALID_ARGUMENT);
        assert_eq!(
            code(wasmpod_oci::SourceError::NoEntrypoint.into()),
            Code::INVALID_ARGUMENT
        );
        let compile = EngineError::Compile {
            origin: "rootfs:/app.wasm".into(),
            kind: wasmpod_oci::WasmKind::Module,
            source: wasmtime::format_err!("unexpected end"),
        };
        assert_eq!(code(compile.into()), Code::INVALID_ARGUMENT);
        let stop = crate::signal::Kill::from_request(libc::SIGSTOP as u32).expect_err("SIGSTOP");
        assert_eq!(code(stop.into()), Code::INVALID_ARGUMENT);
    }

    #[tokio::test]
    async fn a_containerd_that_does_not_answer_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("no-containerd.sock");
        let Err(refused) =
            wasmpod_oci::ContentStore::connect(&socket.to_string_lossy(), "k8s.io").await
        else {
            panic!("connected to a socket that does not exist");
        };
        assert_eq!(code(refused.into()), ttrpc::Code::UNAVAILABLE);
    }

    #[test]
    fn what_fails_on_the_node_is_internal() {
        use ttrpc::Code;
        let config = EngineError::Config(wasmtime::format_err!("unsupported CPU"));
        assert_eq!(code(config.into()), Code::INTERNAL);
        let open = StdioError::Open {
            name: "stdout",
            path: "/run/fifo".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(code(open.into()), Code::INTERNAL);
        let rootfs = wasmpod_oci::SourceError::Rootfs {
            path: "/run/rootfs".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(code(rootfs.into()), Code::INTERNAL);
        assert_eq!(
            code(TaskError::Crashed("preparing the container")),
            Code::INTERNAL
        );
        let thread = SpawnError::Thread(std::io::Error::from(std::io::ErrorKind::WouldBlock));
        assert_eq!(code(thread.into()), Code::RESOURCE_EXHAUSTED);
    }

    #[test]
    fn task_states_have_their_own_codes() {
        use ttrpc::Code;
        assert_eq!(code(TaskError::NotFound("c1".into())), Code::NOT_FOUND);
        assert_eq!(
            code(TaskError::AlreadyExists("c1".into())),
            Code::ALREADY_EXISTS
        );
        assert_eq!(code(TaskError::Unsupported("exec")), Code::UNIMPLEMENTED);
        assert_eq!(
            code(StdioError::Scheme("binary:///usr/bin/logger".into()).into()),
            Code::UNIMPLEMENTED
        );
        let running = TaskError::State {
            id: "c1".into(),
            state: "still running",
        };
        assert_eq!(code(running), Code::FAILED_PRECONDITION);
        let gone = wasmpod_oci::ContentError::ImageNotFound {
            image: "registry.local/app:1".into(),
            namespace: "k8s.io".into(),
        };
        assert_eq!(code(gone.into()), Code::FAILED_PRECONDITION);
        let corrupt = wasmpod_oci::ContentError::Mismatch {
            image: "registry.local/app:1".into(),
            digest: "sha256:00".into(),
            mismatch: wasmpod_oci::verify::Mismatch::Longer { expected: 1 },
        };
        assert_eq!(code(corrupt.into()), Code::DATA_LOSS);
    }

    #[test]
    fn messages_carry_their_causes() {
        let source = wasmpod_oci::SourceError::NotFound {
            entrypoint: "/app.wasm".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let (_, message) = status(TaskError::Source(source));
        assert_eq!(
            message,
            "entrypoint /app.wasm was not found in the container image: entity not found"
        );
        let (_, message) = status(TaskError::Unsupported("exec"));
        assert_eq!(message, "exec is not supported for Wasm containers");
    }
}
