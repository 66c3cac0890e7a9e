//! Host side effects: mounting and unmounting a container's root filesystem,
//! and moving a guest thread into its network namespace.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;

/// A mount operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Mounting the rootfs failed.
    #[error("cannot mount the container rootfs at {}", target.display())]
    Mount {
        /// Mount point.
        target: PathBuf,
        /// What containerd-shim reported.
        #[source]
        source: containerd_shim::Error,
    },
    /// Unmounting the rootfs failed.
    #[error("cannot unmount the container rootfs at {}", target.display())]
    Unmount {
        /// Mount point.
        target: PathBuf,
        /// What the OS said.
        #[source]
        source: nix::Error,
    },
}

/// Mounts containerd's snapshot `mounts` (one overlay, usually) at `target`.
pub async fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    let err = |source| MountError::Mount {
        target: target.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(target).await.map_err(|e| {
        err(containerd_shim::Error::IoError {
            context: "create rootfs directory".into(),
            err: e,
        })
    })?;
    for m in mounts {
        containerd_shim::util::mount_rootfs(m, target)
            .await
            .map_err(err)?;
    }
    Ok(())
}

/// Unmounts whatever is mounted at `target`; nothing mounted is success.
pub fn unmount_rootfs(target: &Path) -> Result<(), MountError> {
    loop {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL | nix::Error::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(MountError::Unmount {
                    target: target.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Mounting a task's rootfs, as the task service needs it; a seam so that
/// what the service does when the node refuses can be tested without root.
#[async_trait::async_trait]
pub trait RootfsMounts: Send + Sync + 'static {
    /// Mounts containerd's snapshot `mounts` at `target`.
    async fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError>;
    /// Unmounts whatever is mounted at `target`.
    fn unmount(&self, target: &Path) -> Result<(), MountError>;
}

/// The node's own mount table: [`mount_rootfs`] and [`unmount_rootfs`].
pub struct HostMounts;

#[async_trait::async_trait]
impl RootfsMounts for HostMounts {
    async fn mount(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        mount_rootfs(mounts, target).await
    }

    fn unmount(&self, target: &Path) -> Result<(), MountError> {
        unmount_rootfs(target)
    }
}

/// A guest thread could not be moved into its network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The namespace file could not be opened.
    #[error("cannot open the network namespace {}", path.display())]
    Open {
        /// The namespace file (e.g. `/var/run/netns/cni-...`).
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `setns` or `unshare` refused.
    #[error("cannot enter the network namespace {what}")]
    Enter {
        /// The namespace file, or "of its own".
        what: String,
        /// What the OS said.
        #[source]
        source: nix::Error,
    },
}

/// Moves the calling thread (only it: network namespaces are per thread)
/// into `network`, so that every socket the guest makes there belongs to
/// its pod.
pub fn enter_network(network: &crate::spec::Network) -> Result<(), NetworkError> {
    use nix::sched::{CloneFlags, setns, unshare};

    use crate::spec::Network;
    match network {
        Network::Host => Ok(()),
        Network::Join(path) => {
            let file = std::fs::File::open(path).map_err(|source| NetworkError::Open {
                path: path.clone(),
                source,
            })?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetworkError::Enter {
                what: path.display().to_string(),
                source,
            })
        }
        Network::New => unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetworkError::Enter {
            what: "of its own".to_owned(),
            source,
        }),
    }
}
