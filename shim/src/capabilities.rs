//! What a guest is allowed to do, derived from its container spec.
//!
//! Deny by default: the guest gets its args, its env, the container's root
//! filesystem, the directories the spec binds in and the sockets its pod's
//! annotations grant, and nothing else. No host environment, no host paths
//! outside the bundle and its mounts. Every grant is set explicitly on the
//! [`WasiCtxBuilder`] instead of relying on wasmtime-wasi's defaults.

use std::fmt;
use std::fs::File;
use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::http_grants::{HttpError, HttpGrants};
use crate::sockets::{Denials, GrantError, SocketGrants};
use crate::spec::{ContainerSpec, Network};

/// A capability could not be granted.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// A directory to preopen could not be opened on the host.
    #[error("cannot give the guest {guest} (host directory {}): open failed", host.display())]
    Preopen {
        /// Host directory.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// What wasmtime-wasi reported.
        #[source]
        source: wasmtime::Error,
    },
    /// A `wasmpod.dev/` socket annotation is malformed.
    #[error(transparent)]
    Sockets(#[from] GrantError),
    /// The HTTP port is malformed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// A host directory visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// Host directory.
    pub host: PathBuf,
    /// Path the guest uses.
    pub guest: String,
    /// Read-only when true.
    pub readonly: bool,
}

/// Everything one guest is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Command line, `args[0]` first.
    pub args: Vec<String>,
    /// Environment, exactly as the spec gives it.
    pub env: Vec<(String, String)>,
    /// Initial working directory (WASI `initial-cwd`).
    pub cwd: String,
    /// Directories, root filesystem first.
    pub preopens: Vec<Preopen>,
    /// Linear memory the guest may hold, in bytes; `None` for no limit.
    pub memory_limit: Option<u64>,
    /// Sockets, from the pod's `wasmpod.dev/` annotations.
    pub sockets: SocketGrants,
    /// The network namespace the guest's sockets are made in.
    pub network: Network,
    /// Where a wasi:http/proxy guest is served.
    pub http_port: u16,
    /// Hosts the guest may send HTTP requests to.
    pub http_connect: HttpGrants,
}

impl Grants {
    /// What `spec` grants; fails on a malformed socket annotation.
    pub fn for_container(spec: &ContainerSpec) -> Result<Self, CapabilityError> {
        let root = Preopen {
            host: spec.rootfs.clone(),
            guest: "/".to_owned(),
            readonly: spec.rootfs_readonly,
        };
        let mounts = spec.mounts.iter().map(|m| Preopen {
            host: m.host.clone(),
            guest: m.guest.clone(),
            readonly: m.readonly,
        });
        Ok(Self {
            args: spec.args.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            preopens: std::iter::once(root).chain(mounts).collect(),
            memory_limit: spec.limits.memory,
            sockets: SocketGrants::from_annotations(&spec.annotations)?,
            network: spec.network.clone(),
            http_port: crate::http_grants::port(&spec.env, &spec.annotations)?,
            http_connect: HttpGrants::from_annotations(&spec.annotations),
        })
    }

    /// Sets every grant on `builder`, and denies all that is not granted.
    /// Refused socket uses are explained on `stderr`.
    pub fn apply(
        &self,
        builder: &mut WasiCtxBuilder,
        stderr: Option<File>,
    ) -> Result<(), CapabilityError> {
        // A guest may make TCP and UDP sockets, which alone reach nothing:
        // every address it binds, listens on, connects or sends to passes
        // the check, which refuses what the annotations do not grant and
        // says so on stderr. Name lookups have no such check, so they are
        // switched off unless granted.
        let sockets = self.sockets.clone();
        let denials = Denials::new(stderr);
        builder
            .args(&self.args)
            .envs(&self.env)
            .initial_cwd(&self.cwd)
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(self.sockets.dns)
            .socket_addr_check(move |addr, used| {
                let allowed = sockets.allows(addr, used);
                if !allowed && let Some(line) = SocketGrants::denial(addr, used) {
                    denials.report(line);
                }
                Box::pin(async move { allowed })
            });
        for p in &self.preopens {
            let perms = if p.readonly {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&p.host, &p.guest, perms)
                .map_err(|source| CapabilityError::Preopen {
                    host: p.host.clone(),
                    guest: p.guest.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// One line for containerd's log: what the guest was granted.
impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "args={} env=[", self.args.len())?;
        for (i, (k, _)) in self.env.iter().enumerate() {
            write!(f, "{}{k}", if i == 0 { "" } else { "," })?;
        }
        write!(f, "] cwd={} dirs=[", self.cwd)?;
        for (i, p) in self.preopens.iter().enumerate() {
            let mode = if p.readonly { "ro" } else { "rw" };
            write!(f, "{}{}:{mode}", if i == 0 { "" } else { "," }, p.guest)?;
        }
        write!(f, "] network={} ", self.sockets)?;
        if !self.http_connect.is_empty() {
            write!(f, "http-connect={} ", self.http_connect)?;
        }
        write!(f, "memory=")?;
        match self.memory_limit {
            Some(bytes) => write!(f, "{bytes}"),
            None => write!(f, "unlimited"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::{ContainerRole, DirMount};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            role: ContainerRole::Guest,
            args: vec!["/app.wasm".into(), "x".into()],
            export: None,
            env: vec![("A".into(), "1".into()), ("SECRET".into(), "s".into())],
            cwd: "/".into(),
            rootfs: "/bundle/rootfs".into(),
            rootfs_readonly: true,
            mounts: vec![DirMount {
                host: "/var/data".into(),
                guest: "/data".into(),
                readonly: false,
            }],
            annotations: Default::default(),
            cgroups_path: None,
            limits: crate::spec::Limits {
                memory: Some(64 << 20),
                ..Default::default()
            },
            network: Network::Host,
            hostname: None,
        }
    }

    #[test]
    fn grants_exactly_the_spec() {
        let g = Grants::for_container(&spec()).expect("grants");
        assert_eq!(g.args, ["/app.wasm", "x"]);
        assert_eq!(g.env.len(), 2);
        assert_eq!(
            g.preopens,
            [
                Preopen {
                    host: "/bundle/rootfs".into(),
                    guest: "/".into(),
                    readonly: true
                },
                Preopen {
                    host: "/var/data".into(),
                    guest: "/data".into(),
                    readonly: false
                },
            ]
        );
    }

    #[test]
    fn summary_names_env_keys_but_not_values() {
        let line = Grants::for_container(&spec()).expect("grants").to_string();
        assert_eq!(
            line,
            "args=2 env=[A,SECRET] cwd=/ dirs=[/:ro,/data:rw] network=none memory=67108864"
        );
        assert!(!line.contains("=s"), "values must stay out of logs: {line}");
    }

    #[test]
    fn missing_host_directory_is_an_error() {
        let mut s = spec();
        s.rootfs = Path::new("/nonexistent/wasmpod/rootfs").into();
        let err = Grants::for_container(&s)
            .expect("grants")
            .apply(&mut WasiCtxBuilder::new(), None)
            .expect_err("missing dir");
        assert!(
            err.to_string().contains("/nonexistent/wasmpod/rootfs"),
            "{err}"
        );
    }
}
