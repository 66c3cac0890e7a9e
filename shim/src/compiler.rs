//! The optimised compile of a server that started on baseline code, in a
//! process of its own (`containerd-shim-wasmpod-v1 compile DIGEST ORIGIN`,
//! the Wasm on stdin). A first pod that ends before the compile is done
//! does not take the compile with it, so the next pod loads optimised code;
//! and the compile's memory (about 280 MB for the 18 MB Python component)
//! is charged to the cgroup the shim started in, not to the pod's limit.
//! The process runs at a lower CPU priority than the guests it compiles
//! for, since they already answer on baseline code, and behind walls: no
//! capabilities, no new privileges, and with Landlock no file but the
//! cache's and no network.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use wasmpod_oci::{WasmKind, WasmSource};

use crate::cgroup::Cgroup;
use crate::engine::{BackgroundCompile, EngineError, WasmEngine};
use crate::sandbox::Walls;

/// The shim binary's first argument that makes it a compile process.
pub const ACTION: &str = "compile";

/// Nice value of a compile process: below the guests, which already serve.
const NICE: libc::c_int = 10;

/// A compile process ends after this long, done or not (Cranelift takes
/// about 10 s for the 18 MB Python component on two cores).
const TIME_LIMIT_SECS: libc::c_uint = 600;

/// Why a compile process did not fill the cache.
#[derive(Debug, thiserror::Error)]
pub enum CompilerError {
    /// The process could not be started.
    #[error("cannot start the compile process {}: {source}", exe.display())]
    Spawn {
        /// The binary run.
        exe: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Waiting for it failed.
    #[error("lost the compile process: {0}")]
    Wait(#[source] io::Error),
    /// It ended without success; its own log line says why.
    #[error("the compile process ended with {0}")]
    Failed(ExitStatus),
    /// It was started without its two arguments.
    #[error("usage: containerd-shim-wasmpod-v1 compile DIGEST ORIGIN, the Wasm on stdin")]
    Usage,
    /// Stdin could not be read.
    #[error("cannot read the Wasm from stdin: {0}")]
    Read(#[source] io::Error),
    /// The bytes are not what the digest names: nothing is stored.
    #[error("the Wasm on stdin is {actual}, not {expected}: not compiled")]
    Digest {
        /// The digest asked for.
        expected: String,
        /// The digest of the bytes given.
        actual: String,
    },
    /// Not Wasm at all.
    #[error("{0} is not WebAssembly")]
    NotWasm(String),
    /// The engine refused it.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Starts compile processes from the shim.
#[derive(Debug, Clone)]
pub struct Compiler {
    exe: PathBuf,
    cache_dir: PathBuf,
    home: Option<Cgroup>,
}

impl Compiler {
    /// Compiles into `cache_dir` with this very binary (even if the node
    /// installer has replaced the file since), its processes moved into
    /// `home`, the cgroup the shim started in.
    pub fn new(cache_dir: impl Into<PathBuf>, home: Option<Cgroup>) -> Self {
        Self {
            exe: PathBuf::from("/proc/self/exe"),
            cache_dir: cache_dir.into(),
            home,
        }
    }

    fn run(&self, source: &WasmSource) -> Result<(), CompilerError> {
        // Named as the shim, so that `ps` shows what it is.
        let name = std::env::args_os()
            .next()
            .unwrap_or_else(|| "containerd-shim-wasmpod-v1".into());
        let mut child = Command::new(&self.exe)
            .arg0(name)
            .arg(ACTION)
            .arg(&source.digest)
            .arg(&source.origin)
            .env(crate::cache::DIR_ENV, &self.cache_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a signal meant for the shim's is not its.
            .process_group(0)
            .spawn()
            .map_err(|source| CompilerError::Spawn {
                exe: self.exe.clone(),
                source,
            })?;
        if let Some(home) = &self.home
            && let Err(e) = home.add_process(child.id())
        {
            tracing::warn!(error = %e, "the compile process stays in the pod's cgroup");
        }
        // A write error means the process is gone; its status says why.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&source.bytes);
        }
        let status = child.wait().map_err(CompilerError::Wait)?;
        if status.success() {
            Ok(())
        } else {
            Err(CompilerError::Failed(status))
        }
    }
}

impl BackgroundCompile for Compiler {
    fn compile(&self, source: &WasmSource) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.run(source)?)
    }
}

/// The compile process's entry, `args` what follows [`ACTION`]: at a lower
/// priority and for a bounded time, compiles the Wasm on stdin into the
/// cache.
pub fn process(args: &[OsString]) -> Result<bool, CompilerError> {
    // SAFETY: setpriority only changes this process's scheduling, and
    // alarm arms a timer whose default action ends the process: a compile
    // that hangs (a compiler bug) does not stay on the node for good.
    unsafe {
        if libc::setpriority(libc::PRIO_PROCESS, 0, NICE) != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "compiling at the shim's priority");
        }
        libc::alarm(TIME_LIMIT_SECS);
    }
    let cache_dir = crate::cache::dir_from_env();
    confine(&cache_dir);
    run(args, io::stdin().lock(), cache_dir)
}

/// Walls the compile of untrusted Wasm in: no capabilities, no new
/// privileges, and (where the kernel has Landlock) no file but the cache's
/// and no network. The cache directory is root's own, so writing it needs
/// no capability. A wall that cannot go up is logged; the compile goes on,
/// as it would have in the shim.
fn confine(cache_dir: &std::path::Path) {
    // Landlock rules name existing directories.
    if let Err(e) = crate::cache::create_private_dir(cache_dir) {
        tracing::warn!(cache = %cache_dir.display(), error = %e, "cannot create the cache directory");
    }
    let walls = Walls::new(vec![cache_dir.to_owned()], Vec::new(), false);
    match walls.apply_to_process() {
        Ok(landlock) => {
            tracing::debug!(
                ?landlock,
                "compile process: no capabilities, no_new_privs, files of the cache only"
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "the compile process runs without its walls")
        }
    }
}

/// Compiles: `args` are what follows [`ACTION`], `input` the
/// Wasm (stdin), `cache_dir` the cache. `Ok(true)` if it compiled,
/// `Ok(false)` if the cache had the code already.
pub fn run(
    args: &[OsString],
    mut input: impl Read,
    cache_dir: PathBuf,
) -> Result<bool, CompilerError> {
    let [digest, origin] = args else {
        return Err(CompilerError::Usage);
    };
    let (digest, origin) = (digest.to_string_lossy(), origin.to_string_lossy());
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(CompilerError::Read)?;
    let actual = wasmpod_oci::verify::sha256_digest(&bytes);
    if actual != digest {
        return Err(CompilerError::Digest {
            expected: digest.into_owned(),
            actual,
        });
    }
    let kind =
        WasmKind::detect(&bytes).ok_or_else(|| CompilerError::NotWasm(origin.to_string()))?;
    let source = WasmSource {
        bytes,
        digest: digest.into_owned(),
        kind,
        origin: origin.into_owned(),
    };
    let started = Instant::now();
    let compiled = WasmEngine::new(cache_dir)?.compile_to_cache(&source)?;
    tracing::info!(
        digest = %source.digest,
        compiled,
        ms = started.elapsed().as_millis() as u64,
        "compile process done"
    );
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component exporting nothing: enough to compile.
    fn component() -> Vec<u8> {
        wasm_encoder::Component::new().finish()
    }

    fn args(digest: &str) -> Vec<OsString> {
        vec![digest.into(), "rootfs:/app.wasm".into()]
    }

    fn entries(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            })
            .count()
        })
    }

    #[test]
    fn compiles_into_the_cache_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = || dir.path().to_owned();
        let wasm = component();
        let digest = wasmpod_oci::verify::sha256_digest(&wasm);
        assert!(run(&args(&digest), &wasm[..], cache()).expect("first compile"));
        assert_eq!(entries(dir.path()), 1);
        assert!(!run(&args(&digest), &wasm[..], cache()).expect("second run"));
        assert_eq!(entries(dir.path()), 1);

        // Bytes that are not what the digest names are never stored.
        let other = wasmpod_oci::verify::sha256_digest(b"other");
        let refused = run(&args(&other), &wasm[..], cache());
        assert!(
            matches!(refused, Err(CompilerError::Digest { .. })),
            "{refused:?}"
        );
        assert!(matches!(
            run(&[], &wasm[..], cache()),
            Err(CompilerError::Usage)
        ));
        assert_eq!(entries(dir.path()), 1);
    }
}
