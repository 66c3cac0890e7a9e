//! Pod volumes made into directories on the node, laid out as the kubelet
//! lays them out (`<pod dir>/volumes/kubernetes.io~<plugin>/<name>`), so
//! that the CRI sees the same bind mounts it would see under a kubelet.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::pod::{KeyToPath, Pod, Volume};

/// A volume on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialised {
    /// The directory the container's mount binds.
    pub host: PathBuf,
    /// ConfigMap and Secret volumes are read-only whatever the mount says.
    pub read_only: bool,
}

/// Why a volume could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume names a ConfigMap or Secret the manifest does not have.
    #[error("volume {volume}: {kind} {name} not found")]
    Missing {
        /// The volume.
        volume: String,
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A key the volume asks for is not in its source.
    #[error("volume {volume}: key {key} not found")]
    MissingKey {
        /// The volume.
        volume: String,
        /// The key.
        key: String,
    },
    /// No source, or one this driver does not support.
    #[error("volume {0}: only emptyDir, hostPath, configMap and secret are supported")]
    Unsupported(String),
    /// An `items` path that would leave the volume.
    #[error("volume {volume}: item path {path:?} must be relative and stay inside the volume")]
    BadPath {
        /// The volume.
        volume: String,
        /// The path.
        path: String,
    },
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes every volume of `pod` under `pod_dir`; returns them by name.
pub fn materialise(
    pod: &Pod,
    pod_dir: &Path,
) -> Result<HashMap<String, Materialised>, VolumeError> {
    let mut out = HashMap::new();
    for v in &pod.spec.volumes {
        out.insert(v.name.clone(), one(pod, v, pod_dir)?);
    }
    Ok(out)
}

fn one(pod: &Pod, v: &Volume, pod_dir: &Path) -> Result<Materialised, VolumeError> {
    let dir = |plugin: &str| pod_dir.join("volumes").join(plugin).join(&v.name);
    if v.empty_dir.is_some() {
        let host = dir("kubernetes.io~empty-dir");
        std::fs::create_dir_all(&host).map_err(io(&host))?;
        // As the kubelet makes it: any user of the pod may write.
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777))
            .map_err(io(&host))?;
        return Ok(Materialised {
            host,
            read_only: false,
        });
    }
    if let Some(h) = &v.host_path {
        let host = PathBuf::from(&h.path);
        if h.kind.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&host).map_err(io(&host))?;
        }
        return Ok(Materialised {
            host,
            read_only: false,
        });
    }
    let (kind, name, source, items, plugin) = if let Some(c) = &v.config_map {
        let source = pod.sources.config_maps.get(&c.name);
        (
            "ConfigMap",
            &c.name,
            source,
            &c.items,
            "kubernetes.io~configmap",
        )
    } else if let Some(s) = &v.secret {
        let source = pod.sources.secrets.get(&s.secret_name);
        (
            "Secret",
            &s.secret_name,
            source,
            &s.items,
            "kubernetes.io~secret",
        )
    } else {
        return Err(VolumeError::Unsupported(v.name.clone()));
    };
    let source = source.ok_or_else(|| VolumeError::Missing {
        volume: v.name.clone(),
        kind,
        name: name.clone(),
    })?;
    let files = select(&v.name, source, items)?;
    let host = dir(plugin);
    write_atomically(&host, &files)?;
    Ok(Materialised {
        host,
        read_only: true,
    })
}

/// The files of a ConfigMap or Secret volume: every key, or the `items`.
fn select<'a>(
    volume: &str,
    source: &'a BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
) -> Result<BTreeMap<String, &'a [u8]>, VolumeError> {
    if items.is_empty() {
        return Ok(source
            .iter()
            .map(|(k, v)| (k.clone(), v.as_slice()))
            .collect());
    }
    items
        .iter()
        .map(|item| {
            let stays_inside = Path::new(&item.path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !stays_inside {
                return Err(VolumeError::BadPath {
                    volume: volume.to_owned(),
                    path: item.path.clone(),
                });
            }
            let bytes = source
                .get(&item.key)
                .ok_or_else(|| VolumeError::MissingKey {
                    volume: volume.to_owned(),
                    key: item.key.clone(),
                })?;
            Ok((item.path.clone(), bytes.as_slice()))
        })
        .collect()
}

/// The kubelet's atomic writer layout: the files live in a timestamped
/// directory, `..data` points at it, and each file name is a symlink through
/// `..data`. A guest reading a ConfigMap therefore follows two symlinks,
/// both inside the volume.
fn write_atomically(dir: &Path, files: &BTreeMap<String, &[u8]>) -> Result<(), VolumeError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let data = dir.join(format!("..{stamp}"));
    std::fs::create_dir_all(&data).map_err(io(&data))?;
    for (name, bytes) in files {
        let file = data.join(name);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&file, bytes).map_err(io(&file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .map_err(io(&file))?;
    }
    let link = dir.join("..data");
    symlink(format!("..{stamp}"), &link).map_err(io(&link))?;
    for name in files.keys() {
        // Nested item paths link their top directory, as the kubelet does.
        let top = Path::new(name)
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let link = dir.join(&top);
        if !link.exists() {
            symlink(Path::new("..data").join(&top), &link).map_err(io(&link))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps_secrets_and_empty_dirs_as_the_kubelet_lays_them_out() {
        let pod = Pod::from_yaml(include_str!("../../../deploy/examples/volumes.yaml"))
            .expect("the volumes example");
        let dir = tempfile::tempdir().expect("tempdir");
        let volumes = materialise(&pod, dir.path()).expect("volumes");
        let config = &volumes["config"];
        assert!(config.read_only);
        assert!(
            config
                .host
                .ends_with("volumes/kubernetes.io~configmap/config")
        );
        let file = config.host.join("greeting.txt");
        assert!(file.is_symlink(), "keys are symlinks through ..data");
        assert_eq!(
            std::fs::read_to_string(&file).expect("read through ..data"),
            "hello from a ConfigMap"
        );
        assert_eq!(
            std::fs::read(volumes["secret"].host.join("token")).expect("secret"),
            b"s3cr3t"
        );
        let scratch = &volumes["scratch"];
        assert!(!scratch.read_only && scratch.host.is_dir());
    }

    #[test]
    fn refuses_missing_sources_and_paths_that_leave_the_volume() {
        let mut pod = Pod::from_yaml(include_str!("../../../deploy/examples/volumes.yaml"))
            .expect("the volumes example");
        let dir = tempfile::tempdir().expect("tempdir");
        pod.sources.secrets.clear();
        let err = materialise(&pod, dir.path()).expect_err("no secret");
        assert_eq!(
            err.to_string(),
            "volume secret: Secret app-secret not found"
        );

        let mut pod = Pod::from_yaml(include_str!("../../../deploy/examples/volumes.yaml"))
            .expect("the volumes example");
        if let Some(c) = pod.spec.volumes[0].config_map.as_mut() {
            c.items.push(KeyToPath {
                key: "greeting.txt".into(),
                path: "../../escape".into(),
            });
        }
        let err = materialise(&pod, dir.path()).expect_err("bad path");
        assert!(err.to_string().contains("must be relative"), "{err}");
    }
}
