//! The system calls a guest's thread may make, put in force with seccomp as
//! the last of its walls (see `sandbox`): what Wasmtime, wasmtime-wasi,
//! tokio and the C library need to run a guest and serve its grants, and
//! nothing else. The calls that use a socket (listen, accept, connect,
//! send, receive) are on the list only for a guest with a socket
//! or HTTP grant, or a wasi:http server.
//!
//! A call outside the list is trapped (SIGSYS, on the thread that made it):
//! it fails with EPERM, the guest's stderr says which call it was, and the
//! guest is stopped with status 159 (128 + SIGSYS, as a process a seccomp
//! filter kills). The shim and the pod's other containers carry on. A
//! broken-out guest cannot be trusted to stop by itself, but its thread can
//! make no call that reaches beyond its walls, and the epoch tick the trap
//! sends ends it at the next loop header or host call.

// A signal handler reads the kernel's siginfo and context and writes with
// write(2); the eventfd is made with libc. Each block says why it is sound.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::epochs::Epochs;

/// Exit status of a guest stopped for a forbidden system call.
pub const VIOLATION_STATUS: u32 = 128 + libc::SIGSYS as u32;

/// The filter could not be built or put in force.
#[derive(Debug, thiserror::Error)]
pub enum SyscallError {
    /// The allow-list does not compile to BPF on this architecture.
    #[error("cannot build the guest thread's system call filter")]
    Build(#[source] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot put the guest thread's system call filter in force")]
    Apply(#[source] seccompiler::Error),
    /// No eventfd for the trap to wake the guest's runtime with.
    #[error("cannot make the eventfd that reports a forbidden system call")]
    Wake(#[source] std::io::Error),
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the handler for forbidden system calls")]
    Handler(#[source] nix::Error),
}

/// The calls every guest thread makes: memory, threads, time, files
/// beneath its preopens (Landlock decides which), polling, randomness.
const ALWAYS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_close,
    libc::SYS_openat,
    // cap-std's walk beneath a preopen (RESOLVE_BENEATH).
    libc::SYS_openat2,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_fcntl,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlinkat,
    libc::SYS_mkdirat,
    libc::SYS_symlinkat,
    libc::SYS_linkat,
    libc::SYS_readlinkat,
    libc::SYS_utimensat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_flock,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_msync,
    libc::SYS_brk,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    // Wasmtime's handler puts the default action back for a fault that is
    // no Wasm trap (code cut from under a guest: SIGBUS), so that the fault
    // ends the process as it would without Wasmtime; trapped, the fault
    // recurs forever. Handlers belong to the whole shim, which a guest that
    // broke out could crash anyway; none lets a call past the filter.
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_uname,
    // wasmtime-wasi makes a guest's socket before it asks whether a bind
    // or connect is granted, and lets any guest bind a UDP socket to an
    // ephemeral port (which exposes nothing); without a grant, no call that
    // sends, receives or connects is on the list, and Landlock refuses a
    // TCP bind.
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_shutdown,
    // Answered with ENOSYS by the second filter, so that the C library
    // starts threads with clone(2), whose flags a filter can read.
    libc::SYS_clone3,
];

/// The x86_64 calls that newer architectures replaced with the `*at` and
/// `p*` forms above; the C library and Rust's std still make some of them.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_readlink,
    libc::SYS_rename,
    libc::SYS_unlink,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[libc::c_long] = &[];

/// What a guest with a socket or HTTP grant, or a server, also calls: the
/// calls that reach anything through a socket.
const SOCKETS: &[libc::c_long] = &[
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
];

/// `ioctl` requests the guest's threads make: non-blocking and close-on-exec
/// flags, bytes ready, and whether a stream is a terminal.
#[allow(
    clippy::unnecessary_cast,
    reason = "c_ulong here, c_int on other C libraries"
)]
const IOCTLS: &[u64] = &[
    libc::FIONBIO as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
    libc::FIONREAD as u64,
    libc::TCGETS as u64,
    libc::TIOCGWINSZ as u64,
];

/// `prctl` operations: a thread's name, which std and tokio set.
const PRCTLS: &[u64] = &[libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64];

/// The two BPF programs one guest's threads run behind.
#[derive(Debug)]
pub struct Filter {
    allowed: BpfProgram,
    no_clone3: BpfProgram,
}

impl Filter {
    /// The filter for a guest; `sockets` puts the socket calls on the list.
    /// Built once per shim for each of the two.
    pub fn for_guest(sockets: bool) -> Result<&'static Self, SyscallError> {
        static WITH: OnceLock<Filter> = OnceLock::new();
        static WITHOUT: OnceLock<Filter> = OnceLock::new();
        let cell = if sockets { &WITH } else { &WITHOUT };
        if let Some(filter) = cell.get() {
            return Ok(filter);
        }
        let filter = Self::build(sockets)?;
        Ok(cell.get_or_init(|| filter))
    }

    fn build(sockets: bool) -> Result<Self, SyscallError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(SyscallError::Build)?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALWAYS
            .iter()
            .chain(LEGACY)
            .chain(if sockets { SOCKETS } else { &[] })
            .map(|&nr| (nr, Vec::new()))
            .collect();
        rules.insert(libc::SYS_ioctl, one_of(1, IOCTLS)?);
        rules.insert(libc::SYS_prctl, one_of(0, PRCTLS)?);
        // Threads only: a new process would start outside the filter's
        // bookkeeping (and with a copy of the shim's memory).
        let thread = libc::CLONE_THREAD as u64;
        rules.insert(
            libc::SYS_clone,
            vec![rule(vec![condition(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(thread),
                thread,
            )?])?],
        );
        // Sent by the kernel to the thread itself, as abort(3) does: a
        // process-directed signal would reach the shim's other threads.
        rules.insert(
            libc::SYS_tgkill,
            vec![rule(vec![condition(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                std::process::id().into(),
            )?])?],
        );
        let allowed = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
            .and_then(BpfProgram::try_from)
            .map_err(SyscallError::Build)?;
        let no_clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .and_then(BpfProgram::try_from)
        .map_err(SyscallError::Build)?;
        Ok(Self { allowed, no_clone3 })
    }

    /// Puts the filter in force on the calling thread, for good; threads it
    /// starts afterwards inherit it.
    pub fn apply(&self) -> Result<(), SyscallError> {
        // The kernel runs every filter and the strictest answer wins: a
        // trap of the first over the second's ENOSYS, ENOSYS over allow.
        seccompiler::apply_filter(&self.no_clone3).map_err(SyscallError::Apply)?;
        seccompiler::apply_filter(&self.allowed).map_err(SyscallError::Apply)
    }
}

fn one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SyscallError> {
    values
        .iter()
        .map(|&v| {
            rule(vec![condition(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::Eq,
                v,
            )?])
        })
        .collect()
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SyscallError> {
    SeccompRule::new(conditions).map_err(SyscallError::Build)
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SyscallError> {
    SeccompCondition::new(arg, len, op, value).map_err(SyscallError::Build)
}

/// One guest's record of a forbidden call: written by the SIGSYS handler on
/// whichever of its threads made it, read by the guest's runtime.
#[derive(Debug)]
pub struct Violation {
    syscall: AtomicI64,
    wake: OwnedFd,
    stderr: Option<OwnedFd>,
    epochs: Epochs,
}

impl Violation {
    /// A record for a guest whose stores are of `epochs`' engines and whose
    /// stderr is `stderr`.
    pub fn new(epochs: Epochs, stderr: Option<OwnedFd>) -> Result<Arc<Self>, SyscallError> {
        // SAFETY: eventfd(2) returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(SyscallError::Wake(std::io::Error::last_os_error()));
        }
        // SAFETY: the fd was just made and nothing else owns it.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Self {
            syscall: AtomicI64::new(-1),
            wake,
            stderr,
            epochs,
        }))
    }

    /// The forbidden call's number, once one was made.
    pub fn syscall(&self) -> Option<i64> {
        let nr = self.syscall.load(Ordering::Acquire);
        (nr >= 0).then_some(nr)
    }

    /// Resolves once a thread of the guest made a forbidden call; on the
    /// guest's runtime.
    pub async fn wait(&self) {
        use tokio::io::Interest;
        use tokio::io::unix::AsyncFd;
        let registered = self.wake.try_clone().and_then(|fd| {
            // SAFETY: the AsyncFd owns this duplicate, which stays open
            // and the same for its whole life.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(std::io::Error::from)
        });
        match registered {
            Ok(fd) => {
                while self.syscall().is_none() {
                    match fd.readable().await {
                        Ok(mut ready) => ready.clear_ready(),
                        Err(_) => break,
                    }
                }
            }
            // Without it, the epoch callback still stops the guest.
            Err(_) => std::future::pending().await,
        }
    }

    /// Registers the calling thread as one of this guest's until the guard
    /// drops.
    pub fn enter(self: &Arc<Self>) -> Registered {
        CURRENT.with(|c| c.set(Arc::as_ptr(self)));
        Registered(self.clone())
    }

    /// Registers a thread of the guest's runtime's blocking pool; the
    /// runtime holds `self` (in this hook) for longer than its threads run.
    pub fn enter_pool_thread(self: &Arc<Self>) {
        CURRENT.with(|c| c.set(Arc::as_ptr(self)));
    }

    /// Unregisters a pool thread as it stops.
    pub fn leave_pool_thread() {
        CURRENT.with(|c| c.set(std::ptr::null()));
    }

    /// Called by the handler: async-signal-safe, no allocation.
    fn trip(&self, nr: i64) {
        if self
            .syscall
            .compare_exchange(-1, nr, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        if let Some(stderr) = &self.stderr {
            let mut line = [0u8; 160];
            let len = message(nr, &mut line);
            // SAFETY: a write of a stack buffer to an fd this record owns.
            unsafe { libc::write(stderr.as_raw_fd(), line.as_ptr().cast(), len) };
        }
        let one = 1u64.to_ne_bytes();
        // SAFETY: as above; an eventfd takes 8 bytes.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        // Every store checks its deadline; the guest's see the record and
        // trap.
        self.epochs.tick();
    }
}

/// Keeps a thread registered with its guest's [`Violation`].
#[derive(Debug)]
pub struct Registered(Arc<Violation>);

impl Drop for Registered {
    fn drop(&mut self) {
        CURRENT.with(|c| {
            if c.get() == Arc::as_ptr(&self.0) {
                c.set(std::ptr::null());
            }
        });
    }
}

thread_local! {
    // Const-initialised and without a destructor: reading it in a signal
    // handler allocates nothing.
    static CURRENT: Cell<*const Violation> = const { Cell::new(std::ptr::null()) };
}

/// `wasmpod: ...` with the call's number, into `buf`; the length written.
fn message(nr: i64, buf: &mut [u8]) -> usize {
    const HEAD: &[u8] = b"wasmpod: the guest made system call ";
    const TAIL: &[u8] =
        b", which its sandbox does not allow; it is stopped with status 159 (SIGSYS)\n";
    let mut digits = [0u8; 20];
    let mut n = nr.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    for part in [HEAD, &digits[i..], TAIL] {
        let end = (len + part.len()).min(buf.len());
        buf[len..end].copy_from_slice(&part[..end - len]);
        len = end;
    }
    len
}

/// The `_sigsys` member of `siginfo_t` (asm-generic/siginfo.h), after the
/// common header; the `libc` crate has no accessor for it.
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// Installs the SIGSYS handler for the whole shim, once: before the first
/// filter, whose trap would otherwise end the shim.
pub fn install_handler() -> Result<(), SyscallError> {
    static INSTALLED: OnceLock<Result<(), nix::Error>> = OnceLock::new();
    (*INSTALLED.get_or_init(install)).map_err(SyscallError::Handler)
}

fn install() -> Result<(), nix::Error> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::SigAction(on_sigsys),
        SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe: it reads a thread-local
    // pointer, writes registers of the interrupted context and makes
    // write(2) calls.
    unsafe { sigaction(Signal::SIGSYS, &action) }.map(drop)
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel hands a SIGSYS handler its siginfo and context.
    let nr = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    // The trapped call was not made; it returns EPERM.
    let context = context.cast::<libc::ucontext_t>();
    let eperm = -i64::from(libc::EPERM);
    // SAFETY: as above; the registers are restored from it on return.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            (*context).uc_mcontext.gregs[libc::REG_RAX as usize] = eperm;
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*context).uc_mcontext.regs[0] = eperm as u64;
        }
    }
    let guest = CURRENT.with(Cell::get);
    // SAFETY: the pointer is set only while its Arc is held (Registered).
    if let Some(guest) = unsafe { guest.as_ref() } {
        guest.trip(i64::from(nr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    /// listen(2) on no socket: EBADF where the filter lets it through.
    fn listen_errno() -> Option<Errno> {
        // SAFETY: a listen(2) on an fd that does not exist changes nothing.
        Errno::result(unsafe { libc::listen(-1, 0) }).err()
    }

    #[test]
    fn a_forbidden_call_fails_is_reported_and_wakes_the_guest() {
        let engine = wasmtime::Engine::default();
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let violation =
            Violation::new(Epochs::from(&engine), Some(write)).expect("violation record");
        let guest = violation.clone();
        let (unregistered, recorded_before, registered, allowed) = std::thread::spawn(move || {
            let _registered = guest.enter();
            install_handler().expect("handler");
            Filter::for_guest(false)
                .expect("filter")
                .apply()
                .expect("filter in force");
            // A thread it starts (clone3 answered ENOSYS, then clone) is
            // behind the filter too, but reports nothing: it is no guest's.
            let unregistered = std::thread::spawn(listen_errno).join().expect("thread");
            let recorded_before = guest.syscall();
            let registered = listen_errno();
            let allowed = std::fs::read_to_string("/proc/self/comm").is_ok();
            (unregistered, recorded_before, registered, allowed)
        })
        .join()
        .expect("filtered thread");
        assert_eq!(unregistered, Some(Errno::EPERM));
        assert_eq!(recorded_before, None);
        assert_eq!(registered, Some(Errno::EPERM));
        assert!(allowed, "a file read was trapped");
        assert_eq!(violation.syscall(), Some(libc::SYS_listen));
        let mut count = [0u8; 8];
        assert_eq!(nix::unistd::read(&violation.wake, &mut count), Ok(8));
        assert_eq!(u64::from_ne_bytes(count), 1);
        let mut line = [0u8; 200];
        let n = nix::unistd::read(&read, &mut line).expect("the guest's stderr");
        assert_eq!(
            String::from_utf8_lossy(&line[..n]),
            format!(
                "wasmpod: the guest made system call {}, which its sandbox does not allow; it is stopped with status 159 (SIGSYS)\n",
                libc::SYS_listen
            )
        );
        // The test's own thread was never filtered.
        assert_eq!(listen_errno(), Some(Errno::EBADF));
    }

    #[test]
    fn the_socket_calls_are_allowed_only_with_a_grant() {
        let allowed = std::thread::spawn(|| {
            install_handler().expect("handler");
            Filter::for_guest(true)
                .expect("filter")
                .apply()
                .expect("filter in force");
            listen_errno()
        })
        .join()
        .expect("filtered thread");
        assert_eq!(allowed, Some(Errno::EBADF));
    }
}
