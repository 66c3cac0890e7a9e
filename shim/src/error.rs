//! Task errors, and the one place they become ttrpc status codes.

use containerd_shim::protos::ttrpc;

use crate::capabilities::CapabilityError;
use crate::engine::EngineError;
use crate::guest::SpawnError;
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
    #[error(
        "signal {0} is not supported for Wasm containers (only signals that end a process are)"
    )]
    Signal(i32),
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
    /// A bug: the shim panicked while doing this; its log has the panic.
    #[error("wasmpod crashed while {0}; the containerd log has the details")]
    Crashed(&'static str),
}

impl TaskError {
    fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Self::Unsupported(_) => Code::UNIMPLEMENTED,
            Self::Signal(_)
            | Self::Spec(_)
            | Self::Source(_)
            | Self::Content(_)
            | Self::Engine(_) => Code::INVALID_ARGUMENT,
            Self::State { .. } => Code::FAILED_PRECONDITION,
            Self::Capability(_)
            | Self::Spawn(_)
            | Self::Mount(_)
            | Self::Stdio(_)
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

    #[test]
    fn each_kind_has_its_code() {
        use ttrpc::Code;
        let cases = [
            (TaskError::NotFound("c1".into()), Code::NOT_FOUND),
            (TaskError::AlreadyExists("c1".into()), Code::ALREADY_EXISTS),
            (TaskError::Unsupported("exec"), Code::UNIMPLEMENTED),
            (TaskError::Signal(libc::SIGSTOP), Code::INVALID_ARGUMENT),
            (
                TaskError::Spec(SpecError::NoProcess),
                Code::INVALID_ARGUMENT,
            ),
            (
                TaskError::Source(wasmpod_oci::SourceError::NoEntrypoint),
                Code::INVALID_ARGUMENT,
            ),
            (
                TaskError::State {
                    id: "c1".into(),
                    state: "still running",
                },
                Code::FAILED_PRECONDITION,
            ),
            (
                TaskError::Stdio(StdioError::Scheme("binary://x".into())),
                Code::INTERNAL,
            ),
            (
                TaskError::Crashed("preparing the container"),
                Code::INTERNAL,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(status(error).0, code);
        }
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
