//! The OCI runtime spec (`config.json` in the bundle), reduced to what a Wasm
//! container can ask for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// CRI annotation that says whether a container is the pod sandbox.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// CRI annotation naming the pod sandbox a container belongs to.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Why a bundle's spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `config.json` is missing, unreadable or not a valid OCI runtime spec.
    #[error("cannot read the OCI runtime spec {}", path.display())]
    Load {
        /// The `config.json` path.
        path: PathBuf,
        /// What oci-spec reported.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// The spec has no `process` section, which every container needs.
    #[error("the OCI runtime spec has no process section")]
    NoProcess,
    /// An `env` entry is not of the form `NAME=value`.
    #[error("environment entry {0:?} is not of the form NAME=value")]
    BadEnv(String),
}

/// What the container is: the pod's sandbox holder, or a guest to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRole {
    /// The CRI pod sandbox ("pause") container: holds the pod, runs nothing.
    Sandbox,
    /// A Wasm program.
    Guest,
}

/// A directory the host makes visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMount {
    /// Absolute host path.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Whether the guest may only read it.
    pub readonly: bool,
}

/// The limits of `linux.resources` that the kernel enforces for us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// CFS quota per period, in microseconds (`limits.cpu`).
    pub cpu_quota: Option<i64>,
    /// CFS period, in microseconds.
    pub cpu_period: Option<u64>,
    /// Relative weight (`requests.cpu`), in cgroup v1 shares.
    pub cpu_shares: Option<u64>,
    /// Bytes of memory (`limits.memory`); applied to process cgroups only.
    pub memory: Option<u64>,
}

/// The parts of an OCI runtime spec that decide what a Wasm container does.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Sandbox holder or guest.
    pub role: ContainerRole,
    /// `process.args`; `args[0]` names the Wasm file in the rootfs (with
    /// any `#export` suffix taken off into `export`).
    pub args: Vec<String>,
    /// The function to run instead of the program's own entry point, named
    /// after a `#` in `process.args[0]` (`/app.wasm#name`, as runwasi reads it).
    pub export: Option<String>,
    /// `process.env`, split into pairs, in order.
    pub env: Vec<(String, String)>,
    /// `process.cwd`.
    pub cwd: String,
    /// Host path of the root filesystem.
    pub rootfs: PathBuf,
    /// `root.readonly`.
    pub rootfs_readonly: bool,
    /// Bind mounts of directories, in spec order.
    pub mounts: Vec<DirMount>,
    /// Every annotation, for later grants (`wasmpod.dev/...`).
    pub annotations: HashMap<String, String>,
    /// `linux.cgroupsPath`: where the CRI puts the container.
    pub cgroups_path: Option<String>,
    /// `linux.resources`: the kernel enforces them through the cgroup, and
    /// the memory limit also bounds the guest's linear memories.
    pub limits: Limits,
    /// The network namespace the spec puts the container in.
    pub network: Network,
    /// `hostname`: the pod's name, in a sandbox's spec.
    pub hostname: Option<String>,
}

/// Where a container's sockets live, from the spec's `network` namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No network namespace in the spec: the node's own (`hostNetwork`).
    Host,
    /// Join the namespace at this path (the CRI's pod namespace).
    Join(PathBuf),
    /// A new, empty namespace of the container's own (`ctr run`'s default).
    New,
}

/// Mount types that give a Linux container its kernel view (`/proc`, `/dev`,
/// ...): they mean nothing to a Wasm guest and are skipped.
const SYSTEM_MOUNT_TYPES: &[&str] = &[
    "proc", "sysfs", "devpts", "mqueue", "tmpfs", "cgroup", "cgroup2", "devtmpfs",
];

/// Destinations that belong to a Linux container's kernel view. The CRI
/// binds the pod's shared memory at `/dev/shm`; a guest has no use for it,
/// and the pod spec never asked for it.
const KERNEL_PATHS: &[&str] = &["/dev", "/proc", "/sys"];

fn is_kernel_path(destination: &Path) -> bool {
    KERNEL_PATHS.iter().any(|p| destination.starts_with(p))
}

/// `/app.wasm#name` -> (`/app.wasm`, `name`): an entrypoint that names the
/// export to run after its last `#`. A `#` followed by nothing, or by a `/`
/// (part of a directory name), names none.
fn split_export(program: &str) -> Option<(&str, &str)> {
    let (path, export) = program.rsplit_once('#')?;
    (!export.is_empty() && !export.contains('/')).then_some((path, export))
}

impl ContainerSpec {
    /// Loads `config.json` from `bundle`.
    pub fn load(bundle: &Path) -> Result<Self, SpecError> {
        let path = bundle.join("config.json");
        let spec = Spec::load(&path).map_err(|source| SpecError::Load { path, source })?;
        Self::from_spec(bundle, &spec)
    }

    /// Reduces an already parsed spec; relative paths are taken from `bundle`.
    pub fn from_spec(bundle: &Path, spec: &Spec) -> Result<Self, SpecError> {
        let annotations = spec.annotations().clone().unwrap_or_default();
        let role = match annotations
            .get(CONTAINER_TYPE_ANNOTATION)
            .map(String::as_str)
        {
            Some("sandbox") => ContainerRole::Sandbox,
            _ => ContainerRole::Guest,
        };
        let process = spec.process().as_ref().ok_or(SpecError::NoProcess)?;
        let env = process
            .env()
            .iter()
            .flatten()
            .map(|entry| {
                entry
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| SpecError::BadEnv(entry.clone()))
            })
            .collect::<Result<_, _>>()?;
        let (rootfs, rootfs_readonly) = match spec.root() {
            Some(root) => (bundle.join(root.path()), root.readonly().unwrap_or(false)),
            None => (bundle.join("rootfs"), false),
        };
        let mounts = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| {
                let typ = m.typ().as_deref().unwrap_or("bind");
                !SYSTEM_MOUNT_TYPES.contains(&typ) && !is_kernel_path(m.destination())
            })
            .filter_map(|m| {
                let options = m.options().as_deref().unwrap_or_default();
                let is_bind = m.typ().as_deref() == Some("bind")
                    || options.iter().any(|o| o == "bind" || o == "rbind");
                let host = m.source().as_ref()?;
                // WASI can only preopen directories; single-file binds such as
                // /etc/hosts have no equivalent and are left out.
                (is_bind && host.is_dir()).then(|| DirMount {
                    host: host.clone(),
                    guest: m.destination().to_string_lossy().into_owned(),
                    readonly: options.iter().any(|o| o == "ro"),
                })
            })
            .collect();
        let linux = spec.linux().as_ref();
        let resources = linux.and_then(|l| l.resources().as_ref());
        let cpu = resources.and_then(|r| r.cpu().as_ref());
        let limits = Limits {
            cpu_quota: cpu.and_then(|c| c.quota()),
            cpu_period: cpu.and_then(|c| c.period()),
            cpu_shares: cpu.and_then(|c| c.shares()),
            // Zero and negative (-1) mean "no limit" in the runtime spec.
            memory: resources
                .and_then(|r| r.memory().as_ref())
                .and_then(|m| m.limit())
                .and_then(|l| u64::try_from(l).ok())
                .filter(|&l| l > 0),
        };
        let cgroups_path = linux
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty());
        let network = linux
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| {
                ns.iter()
                    .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
            })
            .map_or(Network::Host, |n| match n.path() {
                Some(path) => Network::Join(path.clone()),
                None => Network::New,
            });
        let mut args = process.args().clone().unwrap_or_default();
        let export = args.first_mut().and_then(|program| {
            let (path, export) = split_export(program)?;
            let export = export.to_owned();
            program.truncate(path.len());
            Some(export)
        });
        Ok(Self {
            role,
            args,
            export,
            env,
            cwd: process.cwd().to_string_lossy().into_owned(),
            rootfs,
            rootfs_readonly,
            mounts,
            annotations,
            cgroups_path,
            limits,
            network,
            hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        })
    }

    /// The pod sandbox this container belongs to, if it was created by the CRI.
    pub fn sandbox_id(&self) -> Option<&str> {
        self.annotations
            .get(SANDBOX_ID_ANNOTATION)
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).expect("valid spec")
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "args": ["/hello.wasm", "a b"],
                "env": ["PATH=/usr/bin", "GREETING=hi=there"],
                "cwd": "/work",
                "user": {"uid": 0, "gid": 0}
            },
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}
            ]
        })
    }

    #[test]
    fn maps_process_and_root() {
        let s = ContainerSpec::from_spec(Path::new("/b"), &spec(base())).expect("spec");
        assert_eq!(s.role, ContainerRole::Guest);
        assert_eq!(s.args, ["/hello.wasm", "a b"]);
        assert_eq!(s.export, None);
        assert_eq!(
            s.env,
            [
                ("PATH".to_owned(), "/usr/bin".to_owned()),
                ("GREETING".to_owned(), "hi=there".to_owned())
            ]
        );
        assert_eq!(s.cwd, "/work");
        assert_eq!(s.rootfs, Path::new("/b/rootfs"));
        assert!(s.rootfs_readonly);
        assert!(s.mounts.is_empty(), "system mounts are not for guests");
        assert_eq!(s.limits.memory, None);
        assert_eq!(s.network, Network::Host);
    }

    #[test]
    fn an_export_after_hash_is_taken_off_the_program_path() {
        let mut json = base();
        for (arg0, path, export) in [
            ("/app.wasm#run", "/app.wasm", Some("run")),
            ("/app.wasm#a#b", "/app.wasm#a", Some("b")),
            ("/app.wasm#", "/app.wasm#", None),
            ("/dir#1/app.wasm", "/dir#1/app.wasm", None),
        ] {
            json["process"]["args"] = serde_json::json!([arg0, "x"]);
            let s = ContainerSpec::from_spec(Path::new("/b"), &spec(json.clone())).expect("spec");
            assert_eq!(s.args, [path, "x"], "{arg0}");
            assert_eq!(s.export.as_deref(), export, "{arg0}");
        }
    }

    #[test]
    fn reads_the_network_namespace() {
        let mut json = base();
        json["linux"] = serde_json::json!({"namespaces": [{"type": "mount"}, {"type": "network"}]});
        let s = ContainerSpec::from_spec(Path::new("/b"), &spec(json.clone())).expect("spec");
        assert_eq!(s.network, Network::New);
        json["linux"]["namespaces"][1]["path"] = serde_json::json!("/var/run/netns/cni-1");
        let s = ContainerSpec::from_spec(Path::new("/b"), &spec(json)).expect("spec");
        assert_eq!(s.network, Network::Join("/var/run/netns/cni-1".into()));
    }

    #[test]
    fn reads_the_memory_limit() {
        let mut json = base();
        json["linux"] = serde_json::json!({"resources": {"memory": {"limit": 67108864}}});
        let s = ContainerSpec::from_spec(Path::new("/b"), &spec(json.clone())).expect("spec");
        assert_eq!(s.limits.memory, Some(64 << 20));
        json["linux"]["resources"]["memory"]["limit"] = serde_json::json!(-1);
        json["linux"]["resources"]["cpu"] =
            serde_json::json!({"quota": 20000, "period": 100000, "shares": 204});
        json["linux"]["cgroupsPath"] = serde_json::json!("/kubepods/burstable/pod1/abc");
        let s = ContainerSpec::from_spec(Path::new("/b"), &spec(json)).expect("spec");
        assert_eq!(s.limits.memory, None, "-1 is unlimited");
        assert_eq!(
            s.cgroups_path.as_deref(),
            Some("/kubepods/burstable/pod1/abc")
        );
        let limits = Limits {
            cpu_quota: Some(20_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(204),
            memory: None,
        };
        assert_eq!(s.limits, limits);
    }

    #[test]
    fn binds_directories_only_and_not_at_kernel_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").expect("write");
        let mut json = base();
        json["mounts"] = serde_json::json!([
            {"destination": "/data", "type": "bind", "source": dir.path(), "options": ["rbind", "ro"]},
            {"destination": "/scratch", "source": dir.path(), "options": ["rbind", "rw"]},
            {"destination": "/etc/hosts", "type": "bind", "source": file, "options": ["rbind"]},
            {"destination": "/dev/shm", "type": "bind", "source": dir.path(), "options": ["rbind"]}
        ]);
        let s = ContainerSpec::from_spec(Path::new("/b"), &spec(json)).expect("spec");
        assert_eq!(
            s.mounts,
            [
                DirMount {
                    host: dir.path().into(),
                    guest: "/data".into(),
                    readonly: true
                },
                DirMount {
                    host: dir.path().into(),
                    guest: "/scratch".into(),
                    readonly: false
                },
            ]
        );
    }

    #[test]
    fn knows_the_sandbox() {
        let mut json = base();
        json["annotations"] = serde_json::json!({
            CONTAINER_TYPE_ANNOTATION: "sandbox",
            SANDBOX_ID_ANNOTATION: "pod1",
        });
        let s = ContainerSpec::from_spec(Path::new("/b"), &spec(json)).expect("spec");
        assert_eq!(s.role, ContainerRole::Sandbox);
        assert_eq!(s.sandbox_id(), Some("pod1"));
    }

    #[test]
    fn refuses_bad_env_and_missing_process() {
        let mut json = base();
        json["process"]["env"] = serde_json::json!(["NOVALUE"]);
        let err = ContainerSpec::from_spec(Path::new("/b"), &spec(json)).expect_err("bad env");
        assert!(matches!(err, SpecError::BadEnv(e) if e == "NOVALUE"));

        let mut json = base();
        json.as_object_mut().expect("object").remove("process");
        let err = ContainerSpec::from_spec(Path::new("/b"), &spec(json)).expect_err("no process");
        assert!(matches!(err, SpecError::NoProcess));
    }

    #[test]
    fn unreadable_bundle_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.json"), "{not json").expect("write");
        let err = ContainerSpec::load(dir.path()).expect_err("garbage");
        assert!(err.to_string().contains("config.json"), "{err}");
        let err = ContainerSpec::load(&dir.path().join("missing")).expect_err("missing");
        assert!(matches!(err, SpecError::Load { .. }));
    }
}
