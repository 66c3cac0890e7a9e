//! Which containerd a node runs, where its config lives, and how the
//! installer's edit goes into it.
//!
//! Detection order, first match wins (the chart's `node.layout` overrides it):
//! rke2, k3s, k0s, microk8s, then plain containerd.

use std::path::{Path, PathBuf};

/// The distributions whose containerd layout the installer knows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// containerd from a package or a release tarball, `/etc/containerd/config.toml`.
    Containerd,
    /// k3s: a `config.toml.tmpl` or `config-v3.toml.tmpl` beside the config it generates.
    K3s,
    /// rke2: as k3s, under `/var/lib/rancher/rke2`.
    Rke2,
    /// k0s: a drop-in in `/etc/k0s/containerd.d/`.
    K0s,
    /// microk8s: its `containerd-template.toml`.
    Microk8s,
}

impl Flavour {
    /// The name the chart and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::K3s => "k3s",
            Self::Rke2 => "rke2",
            Self::K0s => "k0s",
            Self::Microk8s => "microk8s",
        }
    }

    /// Where this flavour's containerd serves, unless its config says.
    pub fn default_socket(self) -> &'static str {
        match self {
            Self::Containerd => "/run/containerd/containerd.sock",
            Self::K3s | Self::Rke2 => "/run/k3s/containerd/containerd.sock",
            Self::K0s => "/run/k0s/containerd.sock",
            Self::Microk8s => "/var/snap/microk8s/common/run/containerd.sock",
        }
    }

    /// The systemd units that run this flavour's containerd, in the order
    /// they are tried (a server before an agent).
    pub fn units(self) -> &'static [&'static str] {
        match self {
            Self::Containerd => &["containerd.service"],
            Self::K3s => &["k3s.service", "k3s-agent.service"],
            Self::Rke2 => &["rke2-server.service", "rke2-agent.service"],
            Self::K0s => &["k0scontroller.service", "k0sworker.service"],
            Self::Microk8s => &["snap.microk8s.daemon-containerd.service"],
        }
    }
}

/// How the wasmpod runtime goes into the file the flavour reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// A TOML config, edited table by table.
    Toml,
    /// A Go template that k3s or rke2 renders into the config: a marked
    /// block appended to it (a template is not TOML). `generated` is the
    /// config it renders, which tells the version and runc's options.
    TemplateBlock {
        /// The config the template is rendered into (host path).
        generated: PathBuf,
    },
    /// A drop-in file of wasmpod's own.
    DropIn,
}

/// Where and how one node's containerd gets the wasmpod runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The distribution.
    pub flavour: Flavour,
    /// The file the installer writes (host path).
    pub target: PathBuf,
    /// How it is written.
    pub edit: Edit,
}

/// Why a node's layout could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Nothing of any known flavour is on the host.
    #[error(
        "no containerd found under {0}: looked for rke2, k3s, k0s, microk8s and /etc/containerd; set the chart's node.layout if it lives elsewhere"
    )]
    NotFound(PathBuf),
    /// An immutable OS, where no installer may change containerd.
    #[error(
        "this node runs {0}, whose containerd config is part of a read-only system image: wasmpod cannot be installed on it by this chart, and nothing was changed"
    )]
    ReadOnlyOs(String),
    /// k3s or rke2 has not generated its config yet (its agent is starting).
    #[error("{flavour} has not written {path} yet; the installer tries again when it restarts")]
    NotGenerated {
        /// `k3s` or `rke2`.
        flavour: &'static str,
        /// The generated config it waits for (host path).
        path: PathBuf,
    },
}

/// Paths on the host, seen through the directory it is mounted at.
#[derive(Debug, Clone)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    /// The host's `/` is mounted at `root` (`/host` in the installer's pod).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// Where host path `path` is seen from here.
    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.0.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn exists(&self, path: &str) -> bool {
        self.join(path).exists()
    }
}

const RKE2_CONFIG: &str = "/var/lib/rancher/rke2/agent/etc/containerd/config.toml";
const K3S_CONFIG: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";
const K0S_DROP_IN: &str = "/etc/k0s/containerd.d/wasmpod.toml";
const MICROK8S_TEMPLATE: &str = "/var/snap/microk8s/current/args/containerd-template.toml";
const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

/// Works out the node's layout: `flavour` if given (the chart's override),
/// else the first of the detection order found on the host. `config`
/// overrides the file plain containerd reads.
pub fn detect(
    host: &HostRoot,
    flavour: Option<Flavour>,
    config: Option<&Path>,
) -> Result<Layout, LayoutError> {
    if let Some(os) = read_only_os(host) {
        return Err(LayoutError::ReadOnlyOs(os));
    }
    let flavour = match flavour {
        Some(flavour) => flavour,
        None if host.exists("/var/lib/rancher/rke2") || host.exists("/etc/rancher/rke2") => {
            Flavour::Rke2
        }
        None if host.exists("/var/lib/rancher/k3s") || host.exists("/etc/rancher/k3s") => {
            Flavour::K3s
        }
        None if host.exists("/etc/k0s") || host.exists("/var/lib/k0s") => Flavour::K0s,
        None if host.exists(MICROK8S_TEMPLATE) => Flavour::Microk8s,
        None if config.is_some() || host.exists("/etc/containerd") => Flavour::Containerd,
        None => return Err(LayoutError::NotFound(host.0.clone())),
    };
    let layout = match flavour {
        Flavour::Containerd => Layout {
            flavour,
            target: config.map_or_else(|| PathBuf::from(CONTAINERD_CONFIG), Path::to_path_buf),
            edit: Edit::Toml,
        },
        Flavour::K3s | Flavour::Rke2 => {
            let generated = PathBuf::from(if flavour == Flavour::K3s {
                K3S_CONFIG
            } else {
                RKE2_CONFIG
            });
            if !host.join(&generated).exists() {
                return Err(LayoutError::NotGenerated {
                    flavour: flavour.name(),
                    path: generated,
                });
            }
            let dir = generated.parent().unwrap_or(Path::new("/")).to_path_buf();
            let target = template_for(host, &dir, &generated);
            Layout {
                flavour,
                target,
                edit: Edit::TemplateBlock { generated },
            }
        }
        Flavour::K0s => Layout {
            flavour,
            target: PathBuf::from(K0S_DROP_IN),
            edit: Edit::DropIn,
        },
        Flavour::Microk8s => Layout {
            flavour,
            target: PathBuf::from(MICROK8S_TEMPLATE),
            edit: Edit::Toml,
        },
    };
    Ok(layout)
}

/// The template k3s and rke2 read: a user's own if there is one (the v3
/// one first, as they read it first), else the one matching the version
/// of the config they generate.
fn template_for(host: &HostRoot, dir: &Path, generated: &Path) -> PathBuf {
    let v3 = dir.join("config-v3.toml.tmpl");
    let v2 = dir.join("config.toml.tmpl");
    if host.join(&v3).exists() {
        return v3;
    }
    if host.join(&v2).exists() {
        return v2;
    }
    let text = std::fs::read_to_string(host.join(generated)).unwrap_or_default();
    if declared_version(&text) == Some(3) {
        v3
    } else {
        v2
    }
}

/// The `version = N` line of a config or template, read without parsing
/// the rest (a template is not TOML).
pub fn declared_version(text: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "version").then(|| value.trim().parse().ok())?
    })
}

/// The name of an immutable OS from the host's os-release, if it is one.
fn read_only_os(host: &HostRoot) -> Option<String> {
    let text = std::fs::read_to_string(host.join("/etc/os-release"))
        .or_else(|_| std::fs::read_to_string(host.join("/usr/lib/os-release")))
        .ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(|value| value.trim_matches('"').to_owned())
    };
    let id = field("ID")?;
    ["talos", "bottlerocket", "cos"]
        .contains(&id.as_str())
        .then(|| field("PRETTY_NAME").unwrap_or(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let root = HostRoot::new(dir.path());
        (dir, root)
    }

    #[test]
    fn plain_containerd_is_found_by_its_config_dir() {
        let (_dir, root) = host(&[("/etc/containerd/config.toml", "version = 2\n")]);
        let layout = detect(&root, None, None).expect("detected");
        assert_eq!(layout.flavour, Flavour::Containerd);
        assert_eq!(layout.target, Path::new(CONTAINERD_CONFIG));
    }

    #[test]
    fn k3s_gets_the_template_matching_its_generated_config() {
        let (_dir, root) = host(&[(K3S_CONFIG, "version = 3\nroot = '/x'\n")]);
        let layout = detect(&root, None, None).expect("detected");
        assert_eq!(layout.flavour, Flavour::K3s);
        assert!(layout.target.ends_with("config-v3.toml.tmpl"), "{layout:?}");
        let (_dir, root) = host(&[(K3S_CONFIG, "version = 2\n")]);
        let layout = detect(&root, None, None).expect("detected");
        assert!(
            layout.target.ends_with("containerd/config.toml.tmpl"),
            "{layout:?}"
        );
    }

    #[test]
    fn a_users_own_template_is_kept_as_the_target() {
        let user = "/var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl";
        let (_dir, root) = host(&[
            (RKE2_CONFIG, "version = 3\n"),
            (user, "{{ template \"base\" . }}\n"),
        ]);
        let layout = detect(&root, None, None).expect("detected");
        assert_eq!(layout.flavour, Flavour::Rke2);
        assert_eq!(layout.target, Path::new(user));
    }

    #[test]
    fn k3s_before_its_first_start_is_retried_not_guessed() {
        let (_dir, root) = host(&[("/etc/rancher/k3s/config.yaml", "")]);
        let error = detect(&root, None, None).expect_err("not yet");
        assert!(error.to_string().contains("has not written"), "{error}");
    }

    #[test]
    fn the_override_wins_over_detection() {
        let (_dir, root) = host(&[
            ("/etc/containerd/config.toml", ""),
            ("/etc/k0s/k0s.yaml", ""),
        ]);
        assert_eq!(
            detect(&root, None, None).expect("k0s").flavour,
            Flavour::K0s
        );
        let layout = detect(&root, Some(Flavour::Containerd), None).expect("containerd");
        assert_eq!(layout.flavour, Flavour::Containerd);
    }

    #[test]
    fn immutable_oses_and_empty_hosts_are_refused() {
        let (_dir, root) = host(&[
            (
                "/etc/os-release",
                "NAME=Talos\nID=talos\nPRETTY_NAME=\"Talos (v1.9)\"\n",
            ),
            ("/etc/containerd/config.toml", ""),
        ]);
        let error = detect(&root, None, None).expect_err("refused");
        assert!(error.to_string().contains("Talos (v1.9)"), "{error}");
        let (_dir, root) = host(&[]);
        let error = detect(&root, None, None).expect_err("refused");
        assert!(
            error.to_string().starts_with("no containerd found"),
            "{error}"
        );
    }
}
