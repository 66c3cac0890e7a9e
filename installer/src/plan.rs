//! What an install or an uninstall changes in a node's containerd config,
//! worked out before anything is written: shown as a diff (`--dry-run`), or
//! applied by a rename, with the file it replaced kept for a rollback.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::layout::{Edit, HostRoot, Layout, declared_version};
use crate::template;

/// What can keep a plan from being made or applied.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The config (or the config a template renders) is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A host file could not be read.
    #[error("cannot read {path} on the host")]
    Read {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A host file could not be written; the file it would replace is as it was.
    #[error("cannot write {path} on the host{hint}")]
    Write {
        /// The host path.
        path: PathBuf,
        /// A word on read-only hosts, when that is why.
        hint: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One host file before and after (`None`: no such file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The host path.
    pub path: PathBuf,
    /// Its content now.
    pub before: Option<String>,
    /// Its content once the plan is applied.
    pub after: Option<String>,
}

impl FileChange {
    /// Whether applying it would change the file.
    pub fn changes(&self) -> bool {
        self.before != self.after
    }

    /// A unified diff of the change, empty when there is none.
    pub fn diff(&self) -> String {
        if !self.changes() {
            return String::new();
        }
        let name = self.path.display().to_string();
        let old = if self.before.is_some() {
            format!("a{name}")
        } else {
            "/dev/null".to_owned()
        };
        let new = if self.after.is_some() {
            format!("b{name}")
        } else {
            "/dev/null".to_owned()
        };
        similar::TextDiff::from_lines(
            self.before.as_deref().unwrap_or(""),
            self.after.as_deref().unwrap_or(""),
        )
        .unified_diff()
        .context_radius(3)
        .header(&old, &new)
        .to_string()
    }

    /// Writes `after` in place of the file (a new file in the same
    /// directory, then a rename), or removes the file if `after` is `None`.
    pub fn apply(&self, host: &HostRoot) -> Result<(), PlanError> {
        if !self.changes() {
            return Ok(());
        }
        let path = host.join(&self.path);
        let write_error = |source: std::io::Error| PlanError::Write {
            path: self.path.clone(),
            hint: if source.raw_os_error() == Some(nix::libc::EROFS) {
                " (the host's filesystem is read-only there: an immutable OS is not supported by this installer)"
            } else {
                ""
            },
            source,
        };
        let Some(after) = &self.after else {
            return match std::fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(write_error(error))
                }
                _ => Ok(()),
            };
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let mode = std::fs::metadata(&path).map_or(0o644, |m| m.permissions().mode());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.wasmpod-tmp"));
        let mut out = std::fs::File::create(&tmp).map_err(write_error)?;
        out.write_all(after.as_bytes()).map_err(write_error)?;
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(write_error)?;
        out.sync_all().map_err(write_error)?;
        std::fs::rename(&tmp, &path).map_err(write_error)
    }

    /// The change that undoes this one.
    pub fn reversed(&self) -> Self {
        Self {
            path: self.path.clone(),
            before: self.after.clone(),
            after: self.before.clone(),
        }
    }
}

/// Reads host file `path`, `None` if there is none.
pub fn read_host(host: &HostRoot, path: &Path) -> Result<Option<String>, PlanError> {
    match std::fs::read_to_string(host.join(path)) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PlanError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The config change that adds the wasmpod runtime, with the shim at host
/// path `runtime_path`; `new_version` is the version of a config the
/// installer creates where there is none.
pub fn install(
    host: &HostRoot,
    layout: &Layout,
    runtime_path: &str,
    new_version: i64,
) -> Result<FileChange, PlanError> {
    let before = read_host(host, &layout.target)?;
    let name = layout.target.display().to_string();
    let after = match &layout.edit {
        Edit::Toml | Edit::DropIn => {
            let text = match layout.edit {
                // The drop-in is wasmpod's alone: written whole each time.
                Edit::DropIn => "",
                _ => before.as_deref().unwrap_or(""),
            };
            let mut config = Config::parse(&name, text, new_version)?;
            config.ensure_version();
            let systemd_cgroup = config.runc_systemd_cgroup();
            config.add_runtime(runtime_path, systemd_cgroup)?;
            if layout.edit == Edit::Toml {
                config.keep_default_runtime();
            }
            config.render()
        }
        Edit::TemplateBlock { generated } => {
            let base = read_host(host, generated)?.unwrap_or_default();
            let base = Config::parse(&generated.display().to_string(), &base, new_version)?;
            let version = before.as_deref().and_then(declared_version).unwrap_or(
                if name.ends_with("config-v3.toml.tmpl") {
                    3
                } else {
                    2
                },
            );
            let mut block = Config::parse(&name, "", version)?;
            block.add_runtime(runtime_path, base.runc_systemd_cgroup())?;
            template::with_block(before.as_deref(), &block.render())
        }
    };
    Ok(FileChange {
        path: layout.target.clone(),
        before,
        after: Some(after),
    })
}

/// The config change that takes the wasmpod runtime out again. A file the
/// installer created (`created`), or wasmpod's own drop-in, goes when
/// nothing else is left in it.
pub fn uninstall(host: &HostRoot, layout: &Layout, created: bool) -> Result<FileChange, PlanError> {
    let before = read_host(host, &layout.target)?;
    let name = layout.target.display().to_string();
    let after = match (&before, &layout.edit) {
        (None, _) => None,
        (Some(text), Edit::Toml | Edit::DropIn) => {
            let mut config = Config::parse(&name, text, crate::config::DEFAULT_VERSION)?;
            config.remove_runtime();
            // wasmpod's own drop-in goes whole, comments and all; a config
            // the installer created only if nobody wrote into it since.
            let gone = match layout.edit {
                Edit::DropIn => config.has_no_keys(),
                _ => created && config.is_empty(),
            };
            (!gone).then(|| config.render())
        }
        (Some(text), Edit::TemplateBlock { .. }) => {
            let rest = template::without_block(text);
            (!(created && template::only_base(&rest))).then_some(rest)
        }
    };
    Ok(FileChange {
        path: layout.target.clone(),
        before,
        after,
    })
}
