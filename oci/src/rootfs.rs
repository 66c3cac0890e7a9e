use std::io::Read;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};

use crate::{Preamble, WasmKind, WasmSource};

/// Largest Wasm file the shim reads (1 GiB). Bigger files are refused before
/// they are read so a bad image cannot exhaust the node's memory.
pub const MAX_WASM_SIZE: u64 = 1 << 30;

/// Why the Wasm program could not be taken from the container's rootfs.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The OCI spec has no `process.args`, so there is no entrypoint to run.
    #[error(
        "the container has no command: set the image CMD/ENTRYPOINT or the pod's command to the .wasm file to run"
    )]
    NoEntrypoint,
    /// The root filesystem directory itself could not be opened.
    #[error("cannot open the container root filesystem {}", path.display())]
    Rootfs {
        /// The rootfs directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The entrypoint does not exist in the image (or escapes its rootfs).
    #[error("entrypoint {entrypoint} was not found in the container image")]
    NotFound {
        /// `process.args[0]` as given.
        entrypoint: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The entrypoint exists but is a directory or special file.
    #[error("entrypoint {entrypoint} is not a regular file")]
    NotAFile {
        /// `process.args[0]` as given.
        entrypoint: String,
    },
    /// The entrypoint is larger than [`MAX_WASM_SIZE`].
    #[error(
        "entrypoint {entrypoint} is {size} bytes, more than the {MAX_WASM_SIZE} bytes wasmpod accepts"
    )]
    TooLarge {
        /// `process.args[0]` as given.
        entrypoint: String,
        /// Its size on disk.
        size: u64,
    },
    /// Reading the file failed part way.
    #[error("cannot read entrypoint {entrypoint}")]
    Read {
        /// `process.args[0]` as given.
        entrypoint: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is there but is not a Wasm module or component.
    #[error(
        "entrypoint {entrypoint} is neither a WebAssembly module or component nor a Linux binary or script (it starts with {preamble})"
    )]
    NotWasm {
        /// `process.args[0]` as given.
        entrypoint: String,
        /// What the file starts with.
        preamble: Preamble,
    },
}

/// The Wasm program a rootfs holds, identified without copying its bytes:
/// on a compiled-code cache hit the digest is all the shim needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsWasm {
    /// `sha256:<hex>` of the file's bytes.
    pub digest: String,
    /// Whether the file is a core module or a component.
    pub kind: WasmKind,
    /// `rootfs:<entrypoint>`, for messages.
    pub origin: String,
}

/// Remembers the digests of files that cannot change, so that a container
/// started again from the same image is not hashed again: an 18 MB
/// component costs a pod start about 12 ms of sha256.
pub trait DigestMemo {
    /// The digest recorded for `entrypoint`, whose file as opened has `meta`.
    fn recall(&self, entrypoint: &str, meta: &std::fs::Metadata) -> Option<String>;
    /// Records `digest`, just computed from that file's bytes.
    fn record(&self, entrypoint: &str, meta: &std::fs::Metadata, digest: &str);
}

/// Identifies the Wasm program named by `entrypoint` (the container's
/// `process.args[0]`) in the root filesystem at `rootfs`: its digest comes
/// from `memo` or else from hashing the file through a read-only mapping of
/// the page cache.
///
/// The path is resolved as by [`read_from_rootfs`]. Compile from the bytes
/// that function returns, never from this digest: the file may change in
/// between, and a cache entry must match the bytes it was compiled from.
pub fn identify_in_rootfs(
    rootfs: &Path,
    entrypoint: &str,
    memo: Option<&dyn DigestMemo>,
) -> Result<RootfsWasm, SourceError> {
    let (file, meta) = open_entrypoint(rootfs, entrypoint)?;
    let read_error = |source| SourceError::Read {
        entrypoint: entrypoint.to_owned(),
        source,
    };
    if let Some(digest) = memo.and_then(|m| m.recall(entrypoint, &meta)) {
        let mut preamble = Vec::with_capacity(8);
        (&file)
            .take(8)
            .read_to_end(&mut preamble)
            .map_err(read_error)?;
        return Ok(RootfsWasm {
            digest,
            kind: identify(&preamble, entrypoint)?,
            origin: origin(entrypoint),
        });
    }
    let mapped = map(&file).map_err(read_error)?;
    let kind = identify(&mapped, entrypoint)?;
    let digest = format!("sha256:{:x}", Sha256::digest(&mapped[..]));
    if let Some(memo) = memo {
        memo.record(entrypoint, &meta, &digest);
    }
    Ok(RootfsWasm {
        digest,
        kind,
        origin: origin(entrypoint),
    })
}

/// Reads the Wasm program named by `entrypoint` (the container's
/// `process.args[0]`) from the root filesystem at `rootfs`.
///
/// The path is resolved inside `rootfs` as if it were `/`: `..` and symlinks
/// cannot reach the host's files, because the shim reads as root.
pub fn read_from_rootfs(rootfs: &Path, entrypoint: &str) -> Result<WasmSource, SourceError> {
    let (file, meta) = open_entrypoint(rootfs, entrypoint)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_WASM_SIZE)
        .read_to_end(&mut bytes)
        .map_err(|source| SourceError::Read {
            entrypoint: entrypoint.to_owned(),
            source,
        })?;
    let kind = identify(&bytes, entrypoint)?;
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    Ok(WasmSource {
        bytes,
        digest,
        kind,
        origin: origin(entrypoint),
    })
}

/// The PATH a container's `execve` searches when its spec sets none (as
/// runc and the CRI assume).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds the Linux program `entrypoint` names in the root filesystem at
/// `rootfs`, if it is one: an ELF binary or a script with a `#!` line. A
/// name without a `/` is looked up along `search_path` (the container's
/// PATH), a relative path from `cwd`, as the container's own `execve`
/// would. Returns where it was found, as the container sees it; paths are
/// resolved inside `rootfs` as by [`read_from_rootfs`].
pub fn native_program(
    rootfs: &Path,
    entrypoint: &str,
    cwd: &str,
    search_path: &str,
) -> Option<String> {
    if entrypoint.is_empty() {
        return None;
    }
    let root = Dir::open_ambient_dir(rootfs, ambient_authority()).ok()?;
    let candidates: Vec<String> = if entrypoint.starts_with('/') {
        vec![entrypoint.to_owned()]
    } else if entrypoint.contains('/') {
        vec![format!("{}/{entrypoint}", cwd.trim_end_matches('/'))]
    } else {
        search_path
            .split(':')
            .filter(|dir| dir.starts_with('/'))
            .map(|dir| format!("{}/{entrypoint}", dir.trim_end_matches('/')))
            .collect()
    };
    candidates.into_iter().find(|path| {
        let Ok(file) = root.open(path.trim_start_matches('/')) else {
            return false;
        };
        let mut preamble = [0u8; 4];
        file.into_std().read_exact(&mut preamble).is_ok()
            && (preamble == *b"\x7fELF" || preamble.starts_with(b"#!"))
    })
}

/// Opens `entrypoint` inside `rootfs`: a regular file of at most
/// [`MAX_WASM_SIZE`] bytes, returned with its metadata.
fn open_entrypoint(
    rootfs: &Path,
    entrypoint: &str,
) -> Result<(std::fs::File, std::fs::Metadata), SourceError> {
    if entrypoint.is_empty() {
        return Err(SourceError::NoEntrypoint);
    }
    let root = Dir::open_ambient_dir(rootfs, ambient_authority()).map_err(|source| {
        SourceError::Rootfs {
            path: rootfs.to_path_buf(),
            source,
        }
    })?;
    let relative = entrypoint.trim_start_matches('/');
    if relative.is_empty() {
        // `/` itself: the root directory.
        return Err(SourceError::NotAFile {
            entrypoint: entrypoint.to_owned(),
        });
    }
    let not_found = |source| SourceError::NotFound {
        entrypoint: entrypoint.to_owned(),
        source,
    };
    let file = root.open(relative).map_err(not_found)?.into_std();
    let meta = file.metadata().map_err(not_found)?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile {
            entrypoint: entrypoint.to_owned(),
        });
    }
    if meta.len() > MAX_WASM_SIZE {
        return Err(SourceError::TooLarge {
            entrypoint: entrypoint.to_owned(),
            size: meta.len(),
        });
    }
    Ok((file, meta))
}

fn identify(bytes: &[u8], entrypoint: &str) -> Result<WasmKind, SourceError> {
    WasmKind::identify(bytes).map_err(|preamble| SourceError::NotWasm {
        entrypoint: entrypoint.to_owned(),
        preamble,
    })
}

fn origin(entrypoint: &str) -> String {
    format!("rootfs:{entrypoint}")
}

/// Maps `file` read-only. Hashing a mapping reads the page cache in place;
/// a `read` into a fresh buffer costs the shim several times as much.
#[allow(unsafe_code)]
fn map(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is private and read-only, and is only hashed and
    // dropped. A file changed meanwhile yields a digest of mixed content,
    // which names no cache entry or a program that was in the file; one
    // truncated meanwhile would fault the shim, but only root can touch a
    // container's rootfs before it starts.
    unsafe { memmap2::Mmap::map(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.wasm"), MODULE).expect("write");
        std::fs::write(dir.path().join("app.sh"), b"#!/bin/sh\n").expect("write");
        std::fs::create_dir(dir.path().join("bin")).expect("mkdir");
        dir
    }

    #[test]
    fn reads_wasm_and_digests_it() {
        let dir = rootfs();
        let src = read_from_rootfs(dir.path(), "/app.wasm").expect("read");
        assert_eq!(src.kind, WasmKind::Module);
        assert_eq!(src.bytes, MODULE);
        assert_eq!(src.digest, format!("sha256:{:x}", Sha256::digest(MODULE)),);
        assert_eq!(src.origin, "rootfs:/app.wasm");
        let found = identify_in_rootfs(dir.path(), "/app.wasm", None).expect("identify");
        let expected = RootfsWasm {
            digest: src.digest,
            kind: src.kind,
            origin: src.origin,
        };
        assert_eq!(found, expected);
    }

    #[test]
    fn explains_each_refusal() {
        let dir = rootfs();
        std::fs::write(dir.path().join("empty"), b"").expect("write");
        let err = |e: &str| {
            let mapped = identify_in_rootfs(dir.path(), e, None).expect_err(e);
            let read = read_from_rootfs(dir.path(), e).expect_err(e);
            assert_eq!(
                mapped.to_string(),
                read.to_string(),
                "both refuse {e} alike"
            );
            read
        };
        assert!(matches!(err(""), SourceError::NoEntrypoint));
        assert!(matches!(err("/empty"), SourceError::NotWasm { .. }));
        assert!(matches!(err("/missing.wasm"), SourceError::NotFound { .. }));
        assert!(matches!(err("/bin"), SourceError::NotAFile { .. }));
        assert!(matches!(err("/"), SourceError::NotAFile { .. }));
        let not_wasm = err("/app.sh");
        assert!(matches!(not_wasm, SourceError::NotWasm { .. }));
        assert!(not_wasm.to_string().contains("2321"), "{not_wasm}");
    }

    #[test]
    fn finds_linux_programs_as_execve_would() {
        let dir = rootfs();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        std::fs::write(root.join("usr/bin/proxy"), b"\x7fELF\x02\x01\x01\0").expect("write");
        std::os::unix::fs::symlink("usr/bin", root.join("sbin")).expect("symlink");
        let found = |e: &str| native_program(root, e, "/srv", DEFAULT_PATH);
        assert_eq!(
            found("proxy").as_deref(),
            Some("/usr/bin/proxy"),
            "along PATH"
        );
        assert_eq!(
            found("/sbin/proxy").as_deref(),
            Some("/sbin/proxy"),
            "through a link inside"
        );
        assert_eq!(found("/app.sh").as_deref(), Some("/app.sh"), "a script");
        assert_eq!(
            native_program(root, "bin/../app.sh", "/", DEFAULT_PATH).as_deref(),
            Some("/bin/../app.sh"),
            "relative to the working directory"
        );
        assert_eq!(found("/app.wasm"), None, "Wasm is not a Linux program");
        assert_eq!(found("app.sh"), None, "not on PATH");
        assert_eq!(found("/usr/bin"), None, "a directory");
        assert_eq!(found(""), None);
        assert_eq!(native_program(root, "proxy", "/", "relative:dirs"), None);
    }

    #[test]
    fn cannot_leave_the_rootfs() {
        let outer = tempfile::tempdir().expect("tempdir");
        std::fs::write(outer.path().join("secret.wasm"), MODULE).expect("write");
        let root = outer.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(outer.path().join("secret.wasm"), root.join("abs.wasm"))
            .expect("symlink");
        std::os::unix::fs::symlink("../secret.wasm", root.join("rel.wasm")).expect("symlink");
        for entry in ["/../secret.wasm", "/abs.wasm", "/rel.wasm"] {
            let err = read_from_rootfs(&root, entry).expect_err(entry);
            assert!(
                matches!(err, SourceError::NotFound { .. }),
                "{entry}: {err}"
            );
            let err = identify_in_rootfs(&root, entry, None).expect_err(entry);
            assert!(
                matches!(err, SourceError::NotFound { .. }),
                "{entry}: {err}"
            );
        }
    }

    /// Hands out one digest and keeps what it is told.
    struct Memo {
        known: Option<String>,
        recorded: std::cell::RefCell<Vec<(String, u64, String)>>,
    }

    impl DigestMemo for Memo {
        fn recall(&self, _: &str, _: &std::fs::Metadata) -> Option<String> {
            self.known.clone()
        }
        fn record(&self, entrypoint: &str, meta: &std::fs::Metadata, digest: &str) {
            self.recorded
                .borrow_mut()
                .push((entrypoint.to_owned(), meta.len(), digest.to_owned()));
        }
    }

    #[test]
    fn a_remembered_digest_spares_the_hash_and_a_new_one_is_recorded() {
        let dir = rootfs();
        let fresh = Memo {
            known: None,
            recorded: Default::default(),
        };
        let found = identify_in_rootfs(dir.path(), "/app.wasm", Some(&fresh)).expect("identify");
        let digest = format!("sha256:{:x}", Sha256::digest(MODULE));
        assert_eq!(found.digest, digest);
        assert_eq!(
            *fresh.recorded.borrow(),
            [("/app.wasm".to_owned(), MODULE.len() as u64, digest)]
        );

        let remembered = Memo {
            known: Some("sha256:remembered".into()),
            recorded: Default::default(),
        };
        let found =
            identify_in_rootfs(dir.path(), "/app.wasm", Some(&remembered)).expect("identify");
        assert_eq!(found.digest, "sha256:remembered");
        assert_eq!(found.kind, WasmKind::Module);
        assert!(remembered.recorded.borrow().is_empty());
        // The preamble is still read: a memo never turns a script into Wasm.
        let err = identify_in_rootfs(dir.path(), "/app.sh", Some(&remembered)).expect_err("sh");
        assert!(matches!(err, SourceError::NotWasm { .. }), "{err}");
    }
}
