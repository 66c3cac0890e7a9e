//! The walls a guest's thread puts up around itself before guest code runs
//! on it, behind Wasm's own: what a runc container has, for one thread of a
//! shim that stays root for containerd's plumbing.
//!
//! Capabilities, `no_new_privs` and a Landlock domain all belong to a
//! thread in Linux, so the thread that applies them (and the threads it
//! starts) lose them while the shim's other threads keep theirs. Were the
//! Wasm sandbox ever broken, the guest's thread could still not mount,
//! trace or signal other processes, raise a capability, or open a file
//! outside the container's own directories; nor make a system call that
//! Wasmtime and its grants do not need (`syscalls`), such as a connect or a
//! send without a socket or HTTP grant. A wasi:http server may bind its own
//! port and no other.
//!
//! The guest's compiled code is mapped before the walls go up, so the
//! thread needs no access to the compiled-code cache at all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use caps::CapSet;
use caps::Capability;
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

use crate::capabilities::Grants;
use crate::syscalls::{Filter, SyscallError};

/// The newest Landlock ABI asked for; an older kernel enforces the part it
/// knows (and the log says so).
const LANDLOCK_ABI: ABI = ABI::V6;

/// Read by the C library to resolve a host name: a guest that may connect
/// anywhere may look names up.
const RESOLVER_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// A wall could not be put up; the guest does not run without it.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel refused to drop a capability set.
    #[error("cannot drop the guest thread's capabilities ({set})")]
    Capabilities {
        /// Which set.
        set: &'static str,
        /// What the caps crate said.
        #[source]
        source: caps::errors::CapsError,
    },
    /// The Landlock ruleset could not be made or applied.
    #[error("cannot confine the guest thread's file access with Landlock")]
    Landlock(#[source] landlock::RulesetError),
    /// The system call filter could not be put in force.
    #[error(transparent)]
    Syscalls(#[from] SyscallError),
}

/// What one guest's threads may reach: its preopened directories, the
/// network if a grant says so, and the port it serves on if it is a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walls {
    read_write: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    network: bool,
    serves_on: Option<u16>,
}

/// How far Landlock is enforced on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Every access right asked for.
    Full,
    /// The rights this kernel's Landlock knows; newer ones are not.
    Partial,
    /// None: Landlock is not built in or not enabled.
    None,
}

impl From<RulesetStatus> for Confinement {
    fn from(status: RulesetStatus) -> Self {
        match status {
            RulesetStatus::FullyEnforced => Self::Full,
            RulesetStatus::PartiallyEnforced => Self::Partial,
            RulesetStatus::NotEnforced => Self::None,
        }
    }
}

/// The walls in force on the thread that applied them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    /// `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
    /// Files (and, without grants, TCP) as far as Landlock goes.
    pub landlock: Confinement,
}

impl fmt::Display for InForce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no capabilities")?;
        if self.no_new_privs {
            f.write_str(", no_new_privs")?;
        }
        // Always: `apply` fails rather than run a thread without it.
        f.write_str(", seccomp allow-list")?;
        match self.landlock {
            Confinement::Full => f.write_str(", Landlock (fully enforced)"),
            Confinement::Partial => {
                f.write_str(", Landlock (partly: this kernel lacks newer access rights)")
            }
            Confinement::None => f.write_str(", no Landlock (not in this kernel)"),
        }
    }
}

impl Walls {
    /// The walls for a guest granted `grants`; a wasi:http server (`serves`)
    /// may also bind the port it is served on.
    pub fn for_grants(grants: &Grants, serves: bool) -> Self {
        let (read_only, read_write) = grants
            .preopens
            .iter()
            .partition::<Vec<_>, _>(|p| p.readonly);
        Self {
            read_write: read_write.into_iter().map(|p| p.host.clone()).collect(),
            read_only: read_only.into_iter().map(|p| p.host.clone()).collect(),
            network: !grants.sockets.is_empty() || !grants.http_connect.is_empty(),
            serves_on: serves.then_some(grants.http_port),
        }
    }

    /// Walls around `read_write` and `read_only` paths; `network` lets TCP
    /// through.
    pub fn new(read_write: Vec<PathBuf>, read_only: Vec<PathBuf>, network: bool) -> Self {
        Self {
            read_write,
            read_only,
            network,
            serves_on: None,
        }
    }

    /// Puts the walls up around the calling thread, for good. Threads it
    /// starts afterwards inherit them.
    pub fn apply(&self) -> Result<InForce, SandboxError> {
        let filter = Filter::for_guest(self.network || self.serves_on.is_some())?;
        crate::syscalls::install_handler()?;
        let landlock = self.confine().map_err(SandboxError::Landlock)?;
        drop_capabilities()?;
        // Last: the calls above are not on its list.
        filter.apply()?;
        let in_force = InForce {
            no_new_privs: landlock.no_new_privs,
            landlock: landlock.ruleset.into(),
        };
        static FIRST: Once = Once::new();
        FIRST.call_once(|| tracing::info!("guest threads run behind: {in_force}"));
        Ok(in_force)
    }

    /// Puts up the walls without the system call filter (a compile needs
    /// calls no guest makes) around the calling thread and the threads it
    /// starts later: for a process that has started none yet, the whole
    /// process.
    pub fn apply_to_process(&self) -> Result<Confinement, SandboxError> {
        let landlock = self.confine().map_err(SandboxError::Landlock)?;
        drop_capabilities()?;
        Ok(landlock.ruleset.into())
    }

    fn confine(&self) -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        let abi = LANDLOCK_ABI;
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))?
            .scope(Scope::Signal | Scope::AbstractUnixSocket)?;
        if !self.network {
            // Handled with no rule: no TCP bind or connect at all. A
            // listener bound before the walls went up keeps accepting.
            ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
        }
        let serves_on = match (self.network, self.serves_on) {
            (false, Some(port)) => Some(NetPort::new(port, AccessNet::BindTcp)),
            _ => None,
        };
        let resolver: Vec<&Path> = if self.network {
            RESOLVER_FILES
                .iter()
                .map(Path::new)
                .filter(|p| p.exists())
                .collect()
        } else {
            Vec::new()
        };
        ruleset
            .create()?
            .add_rules(path_beneath_rules(
                &self.read_write,
                AccessFs::from_all(abi),
            ))?
            .add_rules(path_beneath_rules(
                &self.read_only,
                AccessFs::from_read(abi),
            ))?
            .add_rules(path_beneath_rules(resolver, AccessFs::from_read(abi)))?
            .add_rules(serves_on.into_iter().map(Ok::<_, landlock::RulesetError>))?
            .restrict_self()
    }
}

/// Empties every capability set of the calling thread: bounding and ambient
/// first, while CAP_SETPCAP is still there to do it. A shim without
/// CAP_SETPCAP cannot shrink its bounding set, which then grants nothing
/// anyway: `no_new_privs` keeps an exec from gaining from it.
fn drop_capabilities() -> Result<(), SandboxError> {
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        caps::clear(None, CapSet::Bounding).map_err(|source| SandboxError::Capabilities {
            set: "bounding",
            source,
        })?;
    }
    for (set, name) in [
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
    ] {
        caps::clear(None, set)
            .map_err(|source| SandboxError::Capabilities { set: name, source })?;
    }
    Ok(())
}

/// What a broken-out guest would try first, tried from a thread the walled
/// thread starts (so that anything that does succeed changes only that
/// thread). Built into tests only: the test build's shim runs it for a
/// container whose environment has `WASMPOD_SANDBOX_PROBE=1`.
#[cfg(any(test, feature = "sandbox-probe"))]
pub mod probe {
    use std::io::Write;

    use nix::errno::Errno;

    /// The environment variable that asks the test build to probe.
    pub const ENV: &str = "WASMPOD_SANDBOX_PROBE";

    /// One attempt and how it ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Attempt {
        /// What was tried.
        pub what: &'static str,
        /// `Err` with the errno the kernel answered, `Ok` if it let it be.
        pub result: Result<(), Errno>,
    }

    /// Tries each escape on a new thread and says how each ended.
    pub fn run() -> Vec<Attempt> {
        std::thread::spawn(attempts)
            .join()
            .unwrap_or_else(|_| vec![])
    }

    /// Makes a call no guest thread may make (mount), on the calling thread:
    /// on a guest's thread, that stops the guest.
    pub fn violate() {
        let _ = nix::mount::mount(
            Some("none"),
            "/",
            Some("wasmpod-no-such-fs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }

    /// Writes one line per attempt: `probe <what>: denied (EPERM)` or
    /// `probe <what>: allowed`.
    pub fn report(out: &mut impl Write) -> std::io::Result<()> {
        for attempt in run() {
            match attempt.result {
                Ok(()) => writeln!(out, "probe {}: allowed", attempt.what)?,
                Err(errno) => writeln!(out, "probe {}: denied ({errno})", attempt.what)?,
            }
        }
        Ok(())
    }

    fn io<T>(result: std::io::Result<T>) -> Result<(), Errno> {
        result
            .map(drop)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    }

    #[allow(unsafe_code)] // raw syscalls, each for the calling thread alone
    fn attempts() -> Vec<Attempt> {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        vec![
            Attempt {
                what: "open /etc/passwd",
                result: io(std::fs::File::open("/etc/passwd")),
            },
            Attempt {
                // A file system no kernel has: with the capability this
                // fails with ENODEV, so nothing is ever mounted.
                what: "mount",
                result: nix::mount::mount(
                    Some("none"),
                    "/",
                    Some("wasmpod-no-such-fs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                ),
            },
            Attempt {
                // The access check of PTRACE_ATTACH, without its side
                // effects where it is allowed: page 0 is never mapped, so
                // an allowed read ends in EFAULT.
                what: "ptrace the parent process",
                result: {
                    let mut byte = [0u8; 1];
                    let local = libc::iovec {
                        iov_base: byte.as_mut_ptr().cast(),
                        iov_len: 1,
                    };
                    let remote = libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 1,
                    };
                    match Errno::result(unsafe {
                        libc::process_vm_readv(
                            nix::unistd::getppid().as_raw(),
                            &local,
                            1,
                            &remote,
                            1,
                            0,
                        )
                    }) {
                        Err(Errno::EFAULT) => Ok(()),
                        other => other.map(drop),
                    }
                },
            },
            Attempt {
                what: "raise CAP_SYS_ADMIN",
                result: caps::raise(
                    None,
                    caps::CapSet::Effective,
                    caps::Capability::CAP_SYS_ADMIN,
                )
                .map_err(|_| Errno::last()),
            },
            Attempt {
                // The walled thread is uid 0 without capabilities, and
                // another uid needs CAP_SETUID. Last of the attempts that
                // need root: on an unwalled thread a new uid clears them.
                // Not glibc's setuid(3), which changes every thread.
                what: "setuid 1234",
                result: Errno::result(unsafe {
                    libc::syscall(libc::SYS_setresuid, 1234, 1234, 1234)
                })
                .map(drop),
            },
            Attempt {
                // Nothing listens on port 1: allowed reads ECONNREFUSED.
                what: "tcp connect",
                result: match std::net::TcpStream::connect(loopback) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                    other => io(other),
                },
            },
            Attempt {
                what: "tcp bind",
                result: io(std::net::TcpListener::bind(("127.0.0.1", 0))),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use std::io::ErrorKind;

    /// Runs `probe` on a thread behind `walls`.
    fn behind<T: Send + 'static>(walls: Walls, probe: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            walls.apply().expect("walls");
            probe()
        })
        .join()
        .expect("probe thread")
    }

    #[test]
    fn a_walled_thread_reaches_its_directories_and_nothing_else() {
        let rw = tempfile::tempdir().expect("tempdir");
        let ro = tempfile::tempdir().expect("tempdir");
        std::fs::write(ro.path().join("config"), "x").expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "x").expect("write");
        let walls = Walls::new(vec![rw.path().into()], vec![ro.path().into()], false);
        let (rw_path, ro_path, out_path) = (
            rw.path().to_owned(),
            ro.path().to_owned(),
            outside.path().to_owned(),
        );
        let (wrote, read, ro_write, secret) = behind(walls, move || {
            (
                std::fs::write(rw_path.join("out"), "y"),
                std::fs::read_to_string(ro_path.join("config")),
                std::fs::write(ro_path.join("new"), "y").map_err(|e| e.kind()),
                std::fs::read(out_path.join("secret")).map_err(|e| e.kind()),
            )
        });
        wrote.expect("write in a read-write directory");
        assert_eq!(read.expect("read in a read-only directory"), "x");
        // Where the kernel has no Landlock these two cannot hold; the
        // build machine's kernel has it.
        if landlock_works() {
            assert_eq!(ro_write, Err(ErrorKind::PermissionDenied));
            assert_eq!(secret, Err(ErrorKind::PermissionDenied));
        }
        // The test's own thread was not walled in.
        std::fs::read(outside.path().join("secret")).expect("the test's own thread reads");
    }

    #[test]
    fn the_probe_finds_every_wall_in_place() {
        let landlock = landlock_works();
        let attempts = behind(Walls::default(), probe::run);
        assert_eq!(attempts.len(), 7, "{attempts:?}");
        for attempt in attempts {
            // Files and TCP binds are Landlock's; the rest the filter's
            // (without a grant, no socket connects) and the capabilities'.
            let expected = match attempt.what {
                "open /etc/passwd" | "tcp bind" if !landlock => continue,
                "open /etc/passwd" | "tcp bind" => Errno::EACCES,
                _ => Errno::EPERM,
            };
            assert_eq!(attempt.result, Err(expected), "{}", attempt.what);
        }
    }

    #[test]
    fn a_server_binds_its_own_port_and_no_other() {
        if !landlock_works() {
            return;
        }
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let (own, other) = (free(), free());
        let walls = Walls {
            serves_on: Some(own),
            ..Walls::default()
        };
        let (bound, refused) = behind(walls, move || {
            (
                std::net::TcpListener::bind(("127.0.0.1", own)).map(drop),
                std::net::TcpListener::bind(("127.0.0.1", other)).map_err(|e| e.kind()),
            )
        });
        bound.expect("the server's own port");
        assert_eq!(refused.err(), Some(ErrorKind::PermissionDenied));
    }

    #[test]
    fn the_unwalled_probe_is_allowed_what_root_may_do() {
        // The probe's checks can fail: on a thread with no walls, as root,
        // the capability checks pass (and nothing is changed but the
        // probe thread's own credentials).
        if !caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false) {
            return;
        }
        let attempts = probe::run();
        let result = |what| {
            attempts
                .iter()
                .find(|a| a.what == what)
                .map(|a| a.result)
                .expect(what)
        };
        assert_eq!(result("setuid 1234"), Ok(()));
        assert_eq!(result("raise CAP_SYS_ADMIN"), Ok(()));
        assert_eq!(result("mount"), Err(Errno::ENODEV));
        assert_eq!(result("open /etc/passwd"), Ok(()));
        assert_eq!(result("tcp connect"), Ok(()));
        assert_eq!(result("ptrace the parent process"), Ok(()));
    }

    /// Whether this kernel enforces Landlock at all.
    fn landlock_works() -> bool {
        std::thread::spawn(|| {
            Walls::default()
                .confine()
                .map(|s| s.ruleset != RulesetStatus::NotEnforced)
                .unwrap_or(false)
        })
        .join()
        .expect("thread")
    }
}
