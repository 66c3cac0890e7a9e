//! Signals from containerd's kill requests, checked once where they arrive.
//!
//! containerd sends a bare number. A Wasm guest has no signal handlers, so
//! only what would end a native process by default can be delivered:
//! everything else is refused with the reason, never cast and passed on.

use std::fmt;

/// A signal whose default action ends a process, the only kind a Wasm
/// guest can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(i32);

/// What a kill request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Signal 0: is the task alive?
    Probe,
    /// End the task as this signal would.
    Stop(Signal),
}

/// A kill request's signal that cannot reach a Wasm guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Ignoring, stopping or continuing has no meaning without a process.
    #[error(
        "signal {0} is not supported for Wasm containers (only signals that end a process are)"
    )]
    NotTerminating(String),
    /// Beyond SIGRTMAX.
    #[error("signal {0} does not exist on Linux")]
    Unknown(u32),
}

impl Signal {
    /// SIGKILL: ends a guest at once.
    pub const KILL: Self = Self(libc::SIGKILL);
    /// SIGTERM: lets a wasi:http server finish its requests.
    pub const TERM: Self = Self(libc::SIGTERM);

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The status a native process ended by this signal reports: 128 + n.
    pub fn exit_status(self) -> u32 {
        128 + self.0.unsigned_abs()
    }

    /// Whether this is a polite request to stop (SIGTERM or SIGINT), which
    /// a pod sandbox, like the pause process, answers with a clean exit.
    pub fn is_polite(self) -> bool {
        matches!(self.0, libc::SIGTERM | libc::SIGINT)
    }
}

impl Kill {
    /// Reads a kill request's signal number.
    pub fn from_request(number: u32) -> Result<Self, SignalError> {
        let Ok(n) = i32::try_from(number) else {
            return Err(SignalError::Unknown(number));
        };
        if n > libc::SIGRTMAX() {
            return Err(SignalError::Unknown(number));
        }
        match n {
            0 => Ok(Self::Probe),
            libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU => Err(SignalError::NotTerminating(Signal(n).to_string())),
            _ => Ok(Self::Stop(Signal(n))),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match nix::sys::signal::Signal::try_from(self.0) {
            Ok(known) => write!(f, "{} ({})", self.0, known.as_str()),
            Err(_) if self.0 >= libc::SIGRTMIN() => {
                write!(f, "{} (SIGRTMIN+{})", self.0, self.0 - libc::SIGRTMIN())
            }
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_that_end_a_process_are_delivered() {
        for n in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGKILL,
            libc::SIGUSR1,
        ] {
            let Ok(Kill::Stop(signal)) = Kill::from_request(n as u32) else {
                panic!("signal {n} refused");
            };
            assert_eq!(signal.number(), n);
            assert_eq!(signal.exit_status(), 128 + n as u32);
        }
        let rt = libc::SIGRTMIN() as u32 + 3;
        let Ok(Kill::Stop(signal)) = Kill::from_request(rt) else {
            panic!("a real-time signal refused");
        };
        assert_eq!(signal.to_string(), format!("{rt} (SIGRTMIN+3)"));
        assert_eq!(Kill::from_request(0), Ok(Kill::Probe));
    }

    #[test]
    fn others_are_refused_with_their_name() {
        assert_eq!(
            Kill::from_request(libc::SIGSTOP as u32)
                .expect_err("SIGSTOP")
                .to_string(),
            "signal 19 (SIGSTOP) is not supported for Wasm containers (only signals that end a process are)"
        );
        assert!(matches!(
            Kill::from_request(libc::SIGCHLD as u32),
            Err(SignalError::NotTerminating(_))
        ));
        assert_eq!(
            Kill::from_request(65),
            Err(SignalError::Unknown(65)),
            "beyond SIGRTMAX"
        );
        assert_eq!(
            Kill::from_request(u32::MAX),
            Err(SignalError::Unknown(u32::MAX))
        );
    }

    #[test]
    fn a_sandbox_stops_cleanly_only_when_asked_politely() {
        assert!(Signal::TERM.is_polite());
        assert!(!Signal::KILL.is_polite());
        assert_eq!(Signal::KILL.exit_status(), 137);
    }
}
