//! One running Wasm guest: its thread, its store, how it ends.
//!
//! Each guest runs on its own OS thread with a single-threaded tokio runtime,
//! so a guest blocked in a host call (a write to a full pipe, a sleep) never
//! holds up the shim's ttrpc server or the other guests of the pod. A kill
//! ends it two ways at once: the epoch is advanced so Wasm code in a loop
//! traps at its next loop header, and the future the guest runs in is
//! dropped so a guest parked in a host call stops there.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::sync::watch;
use wasmtime::Val;
use wasmtime::component;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{InputFile, OutputFile};

use crate::capabilities::{CapabilityError, Grants};
use crate::engine::{ComponentState, ModuleState, Program, Proxy, guest_store};
use crate::epochs::Epochs;
use crate::http_grants::OutgoingHttp;
use crate::limits::MemoryLimit;
use crate::sandbox::Walls;
use crate::signal::Signal;
use crate::sockets::Denials;
use crate::stdio::Stdio;
use crate::syscalls::{VIOLATION_STATUS, Violation};
use crate::usage::Usage;

/// Exit status of a guest ended by a trap (128 + SIGABRT, as a native
/// process that aborts).
pub const TRAP_STATUS: u32 = 134;

/// Asks a running guest to stop.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    epochs: Epochs,
    signal: watch::Sender<i32>,
}

impl KillSwitch {
    /// Stops the guest as if by `signal`.
    pub fn kill(&self, signal: Signal) {
        let signal = signal.number();
        // Keep the first signal, which decides the exit status, unless a
        // SIGKILL follows: it ends a server that is draining after SIGTERM.
        self.signal.send_if_modified(|s| {
            let update = *s == 0 || (signal == libc::SIGKILL && *s != libc::SIGKILL);
            if update {
                *s = signal;
            }
            update
        });
        self.epochs.tick();
    }
}

/// Exit status of a guest that failed after its memory limit refused it
/// memory (128 + SIGKILL, as a process the kernel's OOM killer ends).
pub const OOM_STATUS: u32 = 137;

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The status containerd reports (`exit(n)` gives n, signals 128+n).
    pub status: u32,
    /// The guest failed after its memory limit refused a grow.
    pub out_of_memory: bool,
}

impl Exit {
    fn status(status: u32) -> Self {
        Self {
            status,
            out_of_memory: false,
        }
    }
}

/// Starts `program` on a new thread; `on_exit` runs on that thread once the
/// guest has ended, whichever way. A kill ticks `epochs`, which holds the
/// engines of the program's code.
pub fn spawn(
    epochs: Epochs,
    program: Program,
    grants: &Grants,
    stdio: Stdio,
    name: &str,
    usage: Usage,
    on_exit: impl FnOnce(Exit) + Send + 'static,
) -> Result<KillSwitch, SpawnError> {
    let mut builder = WasiCtxBuilder::new();
    let stderr_copy = || stdio.stderr.as_ref().and_then(|f| f.try_clone().ok());
    grants.apply(&mut builder, stderr_copy())?;
    let stderr_copy = stderr_copy();
    // A guest without socket grants makes no socket that could reach
    // anything, so it stays where it is and skips the setns; a server
    // listens in its pod.
    let serves = matches!(program, Program::Http(_));
    let network = (serves || !grants.sockets.is_empty()).then(|| grants.network.clone());
    let http = serves.then(|| {
        (
            grants.clone(),
            stdio.stdout.as_ref().and_then(|f| f.try_clone().ok()),
        )
    });
    let outgoing = OutgoingHttp::new(
        Arc::new(grants.http_connect.clone()),
        Denials::new(stdio.stderr.as_ref().and_then(|f| f.try_clone().ok())),
    );
    let violation = Violation::new(
        epochs.clone(),
        stdio
            .stderr
            .as_ref()
            .and_then(|f| f.try_clone().ok())
            .map(OwnedFd::from),
    )
    .map_err(SpawnError::Sandbox)?;
    if let Some(f) = stdio.stdin {
        builder.stdin(InputFile::new(f));
    }
    if let Some(f) = stdio.stdout {
        builder.stdout(OutputFile::new(f));
    }
    if let Some(f) = stdio.stderr {
        builder.stderr(OutputFile::new(f));
    }
    let limit = MemoryLimit::new(grants.memory_limit, usage.clone());
    let walls = Walls::for_grants(grants, serves);
    // "1" reports what the walled thread may do; "violate" then makes a
    // forbidden call on it.
    #[cfg(feature = "sandbox-probe")]
    let probe = grants
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == crate::sandbox::probe::ENV)
        .map(|(_, v)| v.clone());
    let (tx, rx) = watch::channel(0);
    let switch = KillSwitch { epochs, signal: tx };
    std::thread::Builder::new()
        .name(format!("guest-{name}"))
        .spawn(move || {
            usage.attach_current_thread();
            let _registered = violation.enter();
            let exit = match enter(network.as_ref(), &walls) {
                Err(message) => {
                    report(stderr_copy.as_ref(), &message);
                    Exit::status(1)
                }
                Ok(()) => {
                    #[cfg(feature = "sandbox-probe")]
                    if let Some(mode) = &probe
                        && let Some(mut stderr) = stderr_copy.as_ref()
                    {
                        let _ = crate::sandbox::probe::report(&mut stderr);
                        if mode == "violate" {
                            crate::sandbox::probe::violate();
                        }
                    }
                    match (program, http) {
                        (Program::Http(proxy), Some((grants, stdout))) => serve(
                            proxy,
                            grants,
                            stdout,
                            stderr_copy,
                            usage.clone(),
                            rx,
                            violation.clone(),
                        ),
                        (program, _) => run_to_exit(
                            program,
                            builder,
                            outgoing,
                            limit,
                            rx,
                            stderr_copy,
                            violation.clone(),
                        ),
                    }
                }
            };
            // The trap handler wrote the guest's stderr line; this is the
            // shim's.
            if let Some(syscall) = violation.syscall() {
                tracing::warn!(
                    syscall,
                    "guest stopped: it made a system call its sandbox does not allow"
                );
            }
            usage.detach_current_thread();
            on_exit(exit);
        })
        .map_err(SpawnError::Thread)?;
    Ok(switch)
}

/// Does on the guest's thread what needs root (joining the pod's network),
/// then walls the thread in for good, before any guest code runs on it.
fn enter(network: Option<&crate::spec::Network>, walls: &Walls) -> Result<(), String> {
    if let Some(network) = network {
        crate::sys::enter_network(network).map_err(|e| wasmpod_oci::error_chain(&e))?;
    }
    walls
        .apply()
        .map(|in_force| tracing::debug!(walls = %in_force, "guest thread walled in"))
        .map_err(|e| wasmpod_oci::error_chain(&e))
}

/// The guest could not be started at all.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Its capabilities could not be set up.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// The OS refused a thread.
    #[error("cannot start a thread for the guest")]
    Thread(#[source] std::io::Error),
    /// The guest's sandbox could not be prepared.
    #[error(transparent)]
    Sandbox(crate::syscalls::SyscallError),
}

/// Serves a wasi:http/proxy component on this thread until it is killed.
fn serve(
    proxy: Proxy,
    grants: Grants,
    stdout: Option<File>,
    stderr: Option<File>,
    usage: Usage,
    kill: watch::Receiver<i32>,
    violation: Arc<Violation>,
) -> Exit {
    match runtime(&violation) {
        Ok(runtime) => Exit::status(runtime.block_on(crate::http::serve(
            proxy, grants, stdout, stderr, usage, kill, violation,
        ))),
        Err(e) => {
            report(
                stderr.as_ref(),
                &format!("cannot start the guest's runtime: {e}"),
            );
            Exit::status(1)
        }
    }
}

/// The guest's single-threaded runtime; the threads of its blocking pool
/// (wasmtime-wasi's file I/O, name lookups) start behind the guest thread's
/// walls and report a forbidden call as it does.
fn runtime(violation: &Arc<Violation>) -> std::io::Result<tokio::runtime::Runtime> {
    let pool_thread = violation.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || pool_thread.enter_pool_thread())
        .on_thread_stop(Violation::leave_pool_thread)
        .build()
}

#[allow(clippy::too_many_arguments)]
fn run_to_exit(
    program: Program,
    builder: WasiCtxBuilder,
    outgoing: OutgoingHttp,
    limit: MemoryLimit,
    mut kill: watch::Receiver<i32>,
    stderr: Option<File>,
    violation: Arc<Violation>,
) -> Exit {
    let max = limit.max();
    let runtime = match runtime(&violation) {
        Ok(rt) => rt,
        Err(e) => {
            report(
                stderr.as_ref(),
                &format!("cannot start the guest's runtime: {e}"),
            );
            return Exit::status(1);
        }
    };
    let killed = kill.clone();
    let outcome = runtime.block_on(async {
        tokio::select! {
            biased;
            signal = kill.wait_for(|s| *s != 0) => Err(signal.map(|s| *s).unwrap_or(libc::SIGKILL)),
            () = violation.wait() => Err(libc::SIGSYS),
            result = run(program, builder, outgoing, limit, killed.clone(), violation.clone()) => Ok(result),
        }
    });
    drop(runtime);
    if violation.syscall().is_some() {
        return Exit::status(VIOLATION_STATUS);
    }
    let signal = *killed.borrow();
    let (result, denied) = match outcome {
        Err(signal) => return Exit::status(128 + signal as u32),
        // A trap raised by our own epoch callback is the kill, not a bug.
        Ok(_) if signal != 0 => return Exit::status(128 + signal as u32),
        Ok(ran) => ran,
    };
    let exit = match result {
        Ok(status) => Exit::status(status),
        Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            // As for a native process, only the low 8 bits reach the parent.
            Some(exit) => Exit::status(exit.0 as u32 & 0xff),
            None => {
                report(stderr.as_ref(), &format!("the guest trapped: {error:?}"));
                Exit::status(TRAP_STATUS)
            }
        },
    };
    match (denied, max) {
        // A guest that failed after being refused memory is reported as the
        // kernel would report it: OOM-killed, so that Kubernetes shows
        // `OOMKilled` and not an unexplained crash.
        (Some(asked), Some(max)) if exit.status != 0 => {
            report(
                stderr.as_ref(),
                &format!(
                    "out of memory: the guest asked for {asked} bytes of linear memory, over the container's limit of {max} bytes (resources.limits.memory); it ended with status {}, reported as {OOM_STATUS} (OOMKilled)",
                    exit.status
                ),
            );
            Exit {
                status: OOM_STATUS,
                out_of_memory: true,
            }
        }
        _ => exit,
    }
}

fn report(stderr: Option<&File>, message: &str) {
    tracing::info!("{message}");
    if let Some(mut f) = stderr {
        // The stream may be gone with its reader; the log line above stays.
        let _ = writeln!(f, "wasmpod: {message}");
    }
}

/// Runs the guest to completion; `Ok` carries its exit status. Also gives
/// the memory the limit refused, if it refused any.
async fn run(
    program: Program,
    mut builder: WasiCtxBuilder,
    outgoing: OutgoingHttp,
    limit: MemoryLimit,
    kill: watch::Receiver<i32>,
    violation: Arc<Violation>,
) -> (wasmtime::Result<u32>, Option<u64>) {
    match program {
        Program::Module { pre, calls } => {
            let state = ModuleState::new(builder.build_p1(), limit);
            let mut store = guest_store(pre.module().engine(), state, kill, violation, |s| s != 0);
            let result = async {
                let instance = pre.instantiate_async(&mut store).await?;
                for name in &calls {
                    let func = instance.get_func(&mut store, name).ok_or_else(|| {
                        wasmtime::format_err!("the module has no function `{name}`")
                    })?;
                    // Results, if the export has any, are not shown (nor
                    // does `wasmtime run` show a default export's).
                    let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
                    func.call_async(&mut store, &[], &mut results).await?;
                }
                Ok(0)
            }
            .await;
            (result, store.data().limit.denied())
        }
        Program::Component(pre) => {
            let state = ComponentState::new(builder.build(), outgoing, limit);
            let mut store = guest_store(pre.engine(), state, kill, violation, |s| s != 0);
            let result = async {
                let command = pre.instantiate_async(&mut store).await?;
                let result = command.wasi_cli_run().call_run(&mut store).await?;
                Ok(if result.is_ok() { 0 } else { 1 })
            }
            .await;
            (result, store.data().limit.denied())
        }
        Program::ComponentFunc { pre, name } => {
            let state = ComponentState::new(builder.build(), outgoing, limit);
            let mut store = guest_store(pre.engine(), state, kill, violation, |s| s != 0);
            let result = async {
                let instance = pre.instantiate_async(&mut store).await?;
                let func = instance.get_func(&mut store, &name).ok_or_else(|| {
                    wasmtime::format_err!("the component has no function `{name}`")
                })?;
                let mut results =
                    vec![component::Val::Bool(false); func.ty(&store).results().len()];
                func.call_async(&mut store, &[], &mut results).await?;
                // As for wasi:cli/run: a `result` that is an error fails.
                Ok(match results.first() {
                    Some(component::Val::Result(Err(_))) => 1,
                    _ => 0,
                })
            }
            .await;
            (result, store.data().limit.denied())
        }
        // Served by `serve`, never run to completion.
        Program::Http(_) => (
            Err(wasmtime::format_err!(
                "a wasi:http/proxy component has no entry point to run"
            )),
            None,
        ),
    }
}
