//! What the installer did on this node, kept on the host beside the shim so
//! that a restarted installer (its own pod restarted by containerd's
//! restart) picks up where it was, and an uninstall undoes only that.

use std::path::PathBuf;

use crate::layout::{Flavour, HostRoot};
use crate::plan::{FileChange, PlanError, read_host};

/// The record, as JSON in `<install dir>/state.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The layout the config change went into.
    pub flavour: Flavour,
    /// The host file changed.
    pub target: PathBuf,
    /// Whether the installer created that file (an uninstall may remove it).
    pub created: bool,
    /// The config before the last change, for a rollback (`None`: no file).
    pub previous: Option<String>,
    /// The versioned shim file the link points at.
    pub shim: String,
    /// Whether containerd has been seen healthy with the change.
    pub verified: bool,
}

impl State {
    /// The state file's host path.
    pub fn path(install_dir: &std::path::Path) -> PathBuf {
        install_dir.join("state.json")
    }

    /// Reads the record, `None` if this node has none (never installed).
    pub fn load(host: &HostRoot, install_dir: &std::path::Path) -> Result<Option<Self>, PlanError> {
        let path = Self::path(install_dir);
        let Some(text) = read_host(host, &path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| PlanError::Read {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
            })
    }

    /// The file change that writes this record (or, with `None`, removes it).
    pub fn change(
        host: &HostRoot,
        install_dir: &std::path::Path,
        state: Option<&Self>,
    ) -> Result<FileChange, PlanError> {
        let path = Self::path(install_dir);
        let after = state.map(|state| {
            let mut text = serde_json::to_string_pretty(state).unwrap_or_default();
            text.push('\n');
            text
        });
        Ok(FileChange {
            before: read_host(host, &path)?,
            path,
            after,
        })
    }
}
