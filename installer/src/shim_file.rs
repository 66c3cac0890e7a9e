//! The shim binary on the host: a versioned file per build, and a symlink
//! that containerd's `runtime_path` names, switched by a rename. A running
//! shim keeps its own file, so an upgrade never writes to a busy binary.

use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The name containerd's `runtime_path` points at, inside the bin dir.
pub const LINK: &str = "containerd-shim-wasmpod-v1";

/// What can go wrong installing the shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The shim in the installer image could not be read.
    #[error("cannot read the shim to install at {path}")]
    Read {
        /// Where it was looked for.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shim is built for another machine than the node's.
    #[error(
        "the shim in this image is built for {shim}, but this node is {node}: use the image for the node's architecture"
    )]
    Architecture {
        /// The ELF machine of the shim.
        shim: String,
        /// The node's `uname -m`.
        node: String,
    },
    /// Writing on the host failed.
    #[error("cannot write {path} on the host")]
    Write {
        /// The path seen from the installer.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The shim to install, read once.
#[derive(Debug)]
pub struct Shim {
    bytes: Vec<u8>,
    /// `containerd-shim-wasmpod-v1-<version>-<first 12 hex of sha256>`.
    pub file_name: String,
}

impl Shim {
    /// Reads the shim at `path` and checks it is an ELF for `node_machine`
    /// (`uname -m`).
    pub fn read(path: &Path, version: &str, node_machine: &str) -> Result<Self, ShimError> {
        let bytes = std::fs::read(path).map_err(|source| ShimError::Read {
            path: path.to_owned(),
            source,
        })?;
        let shim = elf_machine(&bytes).unwrap_or("not an ELF executable");
        if machine_name(node_machine) != Some(shim) {
            return Err(ShimError::Architecture {
                shim: shim.to_owned(),
                node: node_machine.to_owned(),
            });
        }
        let digest = Sha256::digest(&bytes);
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            bytes,
            file_name: format!("{LINK}-{version}-{hex}"),
        })
    }

    /// Puts the shim into `dir` (seen from here) and points the link at it.
    /// Returns whether anything changed. Older versions stay until
    /// [`prune`]: shims still running from them are unaffected either way.
    pub fn install(&self, dir: &Path) -> Result<bool, ShimError> {
        std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        let file = dir.join(&self.file_name);
        let mut changed = false;
        if std::fs::read(&file).ok().as_deref() != Some(&self.bytes[..]) {
            let tmp = dir.join(format!(".{}.tmp", self.file_name));
            let mut out = std::fs::File::create(&tmp).map_err(write_error(&tmp))?;
            out.write_all(&self.bytes).map_err(write_error(&tmp))?;
            out.set_permissions(std::fs::Permissions::from_mode(0o755))
                .map_err(write_error(&tmp))?;
            out.sync_all().map_err(write_error(&tmp))?;
            std::fs::rename(&tmp, &file).map_err(write_error(&file))?;
            changed = true;
        }
        Ok(point_link(dir, &self.file_name)? || changed)
    }
}

/// Points the link in `dir` at versioned shim `file_name` (in `dir` too),
/// by a rename, so a pod started meanwhile runs one or the other. Returns
/// whether it pointed elsewhere before.
pub fn point_link(dir: &Path, file_name: &str) -> Result<bool, ShimError> {
    let link = dir.join(LINK);
    if std::fs::read_link(&link).ok().as_deref() == Some(Path::new(file_name)) {
        return Ok(false);
    }
    // Relative, so it resolves on the host and under the host mount.
    let tmp = dir.join(format!(".{LINK}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    symlink(file_name, &tmp).map_err(write_error(&tmp))?;
    std::fs::rename(&tmp, &link).map_err(write_error(&link))?;
    Ok(true)
}

/// The error for a failed write of `path`, for `map_err`.
fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> ShimError + use<> {
    let path = path.to_owned();
    move |source| ShimError::Write { path, source }
}

/// Removes the versioned shims in `dir` other than `keep` (the link's
/// target and the one it replaced); with `keep` empty, the link too.
pub fn prune(dir: &Path, keep: &[&str]) -> Result<Vec<String>, ShimError> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(source) => {
            return Err(ShimError::Write {
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(&format!("{LINK}-")) || (keep.is_empty() && name == LINK);
        if ours && !keep.contains(&name.as_str()) {
            std::fs::remove_file(entry.path()).map_err(|source| ShimError::Write {
                path: entry.path(),
                source,
            })?;
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

/// What [`link_on_path`] found in the bin directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathLink {
    /// The link was made or pointed anew.
    Made,
    /// It was already there and right.
    Unchanged,
    /// A file of someone else's has the shim's name; it was left alone.
    Foreign,
}

/// Puts a symlink named [`LINK`] into `bin_dir` (seen from here), pointing
/// at host path `target` (the install dir's link). containerd 1.6's CRI
/// looks shims up on its PATH and ignores `runtime_path`; 1.7 and 2.x use
/// `runtime_path`. A file of that name that is not such a link stays.
pub fn link_on_path(bin_dir: &Path, target: &Path) -> Result<PathLink, ShimError> {
    let link = bin_dir.join(LINK);
    match std::fs::read_link(&link) {
        Ok(found) if found == target => return Ok(PathLink::Unchanged),
        Ok(found) if !found.ends_with(Path::new("bin").join(LINK)) => return Ok(PathLink::Foreign),
        Ok(_) => {}
        Err(_) if link.symlink_metadata().is_ok() => return Ok(PathLink::Foreign),
        Err(_) => {}
    }
    let write_error = |path: PathBuf| move |source| ShimError::Write { path, source };
    std::fs::create_dir_all(bin_dir).map_err(write_error(bin_dir.to_owned()))?;
    let tmp = bin_dir.join(format!(".{LINK}.wasmpod-tmp"));
    let _ = std::fs::remove_file(&tmp);
    symlink(target, &tmp).map_err(write_error(tmp.clone()))?;
    std::fs::rename(&tmp, &link).map_err(write_error(link))?;
    Ok(PathLink::Made)
}

/// Removes the [`link_on_path`] symlink if it points at host path `target`.
pub fn unlink_from_path(bin_dir: &Path, target: &Path) -> Result<bool, ShimError> {
    let link = bin_dir.join(LINK);
    if std::fs::read_link(&link).ok().as_deref() != Some(target) {
        return Ok(false);
    }
    std::fs::remove_file(&link).map_err(|source| ShimError::Write { path: link, source })?;
    Ok(true)
}

/// The file the link in `dir` points at, if there is one.
pub fn current(dir: &Path) -> Option<String> {
    Some(
        std::fs::read_link(dir.join(LINK))
            .ok()?
            .to_string_lossy()
            .into_owned(),
    )
}

/// The machine an ELF file is built for, in `uname -m` words.
fn elf_machine(bytes: &[u8]) -> Option<&'static str> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let little = *bytes.get(5)? == 1;
    let raw = [*bytes.get(18)?, *bytes.get(19)?];
    let machine = if little {
        u16::from_le_bytes(raw)
    } else {
        u16::from_be_bytes(raw)
    };
    Some(match machine {
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        22 => "s390x",
        21 => "ppc64le",
        _ => "an unknown machine",
    })
}

/// `uname -m` in the words of [`elf_machine`] (`arm64` is `aarch64`).
fn machine_name(uname: &str) -> Option<&'static str> {
    Some(match uname {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" => "aarch64",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "ppc64le" => "ppc64le",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[5] = 1;
        bytes[18..20].copy_from_slice(&machine.to_le_bytes());
        bytes
    }

    #[test]
    fn an_upgrade_adds_a_file_and_switches_the_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let bin = dir.path().join("bin");
        std::fs::write(&src, elf(62)).expect("write");
        let old = Shim::read(&src, "0.1.0", "x86_64").expect("reads");
        assert!(old.install(&bin).expect("installs"));
        assert!(
            !old.install(&bin).expect("installs"),
            "a second run changes nothing"
        );
        let mut bytes = elf(62);
        bytes.push(1);
        std::fs::write(&src, bytes).expect("write");
        let new = Shim::read(&src, "0.2.0", "x86_64").expect("reads");
        assert!(new.install(&bin).expect("installs"));
        assert_eq!(current(&bin).as_deref(), Some(new.file_name.as_str()));
        // The old file is still there for shims running from it, until pruned.
        assert!(bin.join(&old.file_name).exists());
        let removed = prune(&bin, &[&new.file_name]).expect("prunes");
        assert_eq!(removed, vec![old.file_name.clone()]);
        assert!(bin.join(LINK).exists());
        let removed = prune(&bin, &[]).expect("prunes");
        assert_eq!(removed, vec![LINK.to_owned(), new.file_name]);
    }

    #[test]
    fn the_path_link_is_made_once_and_a_foreign_file_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("usr/local/bin");
        let target = Path::new("/opt/wasmpod/bin").join(LINK);
        assert_eq!(link_on_path(&bin, &target).expect("links"), PathLink::Made);
        assert_eq!(
            link_on_path(&bin, &target).expect("links"),
            PathLink::Unchanged
        );
        assert_eq!(std::fs::read_link(bin.join(LINK)).expect("link"), target);
        // Another install dir of ours: repointed.
        let moved = Path::new("/srv/wasmpod/bin").join(LINK);
        assert_eq!(link_on_path(&bin, &moved).expect("links"), PathLink::Made);
        assert!(
            !unlink_from_path(&bin, &target).expect("unlinks"),
            "not ours any more"
        );
        assert!(unlink_from_path(&bin, &moved).expect("unlinks"));
        std::fs::write(bin.join(LINK), b"an admin's own shim").expect("write");
        assert_eq!(
            link_on_path(&bin, &target).expect("links"),
            PathLink::Foreign
        );
        assert!(!unlink_from_path(&bin, &target).expect("unlinks"));
        assert_eq!(
            std::fs::read(bin.join(LINK)).expect("read"),
            b"an admin's own shim"
        );
    }

    #[test]
    fn a_shim_for_another_machine_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::write(&src, elf(183)).expect("write");
        let error = Shim::read(&src, "0.1.0", "x86_64").expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("built for aarch64, but this node is x86_64"),
            "{error}"
        );
        std::fs::write(&src, b"#!/bin/sh\n").expect("write");
        let error = Shim::read(&src, "0.1.0", "x86_64").expect_err("refused");
        assert!(error.to_string().contains("not an ELF"), "{error}");
    }
}
