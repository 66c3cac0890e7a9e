//! Where a container's Wasm comes from: the file `process.args[0]` names in
//! its rootfs, or else the Wasm layer of its image in containerd's content
//! store; and the digests of rootfs files, remembered across starts.
//!
//! Before a container's first write, every file in its rootfs comes from
//! containerd's committed snapshots, which never change: the digest of its
//! entrypoint is a fact about those layers. It is kept in the node cache,
//! keyed by the layers' identity, the path and the file's own metadata, so
//! that the next pod of the same image skips the sha256 of its Wasm (about
//! 12 ms for an 18 MB component).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::protos::types::mount::Mount;
use sha2::{Digest, Sha256};
use wasmpod_oci::artifact::WasmLayer;
use wasmpod_oci::{ContentStore, DigestMemo, SourceError};

use crate::capabilities::Grants;
use crate::engine::{Origin, Program, WasmEngine};
use crate::error::TaskError;
use crate::spec::ContainerSpec;

/// The memo for one container's rootfs.
#[derive(Debug)]
pub struct LayerDigests {
    dir: PathBuf,
    /// sha256 of the identities of the read-only layers, top first.
    layers: String,
}

impl LayerDigests {
    /// The memo for a rootfs made of `mounts`, kept under `cache_dir`; `None`
    /// when a file in that rootfs may differ from its image layers: a
    /// writable layer with something in it, or a mount of another kind than
    /// the overlay and bind mounts of containerd's snapshotters.
    pub fn for_rootfs(mounts: &[Mount], cache_dir: &Path) -> Option<Self> {
        let [mount] = mounts else {
            return None;
        };
        let layers = read_only_layers(mount)?;
        let mut h = Sha256::new();
        for layer in &layers {
            let meta = fs::metadata(layer).ok()?;
            // A snapshot directory removed and made again under the same
            // name (containerd's metadata wiped) is a new inode with a new
            // ctime.
            h.update(layer.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            for n in [meta.dev(), meta.ino()] {
                h.update(n.to_le_bytes());
            }
            for n in [meta.ctime(), meta.ctime_nsec()] {
                h.update(n.to_le_bytes());
            }
        }
        Some(Self {
            dir: cache_dir.join("digests"),
            layers: format!("{:x}", h.finalize()),
        })
    }

    fn entry(&self, entrypoint: &str, meta: &fs::Metadata) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.layers.as_bytes());
        h.update(entrypoint.as_bytes());
        h.update(b"\0");
        // Not the device: overlayfs reports its own, new for each mount.
        h.update(meta.ino().to_le_bytes());
        h.update(meta.size().to_le_bytes());
        for n in [
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ] {
            h.update(n.to_le_bytes());
        }
        self.dir.join(format!("{:x}", h.finalize()))
    }
}

impl DigestMemo for LayerDigests {
    fn recall(&self, entrypoint: &str, meta: &fs::Metadata) -> Option<String> {
        let recorded = fs::read_to_string(self.entry(entrypoint, meta)).ok()?;
        let digest = recorded.trim_end();
        // Anything else (a torn write after a crash) is a miss.
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            tracing::debug!(entrypoint, digest, "digest recalled for the image layers");
            digest.to_owned()
        })
    }

    fn record(&self, entrypoint: &str, meta: &fs::Metadata, digest: &str) {
        let path = self.entry(entrypoint, meta);
        let written = crate::cache::create_private_dir(&self.dir)
            .and_then(|()| crate::cache::write_atomic(&path, format!("{digest}\n").as_bytes()));
        if let Err(e) = written {
            // The next start hashes again; nothing else is lost.
            tracing::debug!(path = %path.display(), error = %e, "digest not recorded");
        }
    }
}

/// The directories whose files the container sees, if none can change:
/// the lower layers of an overlay whose upper layer is still empty, or the
/// source of a read-only bind mount (a one-layer view).
fn read_only_layers(mount: &Mount) -> Option<Vec<PathBuf>> {
    let option = |name: &str| {
        mount
            .options
            .iter()
            .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
    };
    let layers: Vec<PathBuf> = match mount.type_.as_str() {
        "overlay" => {
            if let Some(upper) = option("upperdir") {
                fs::read_dir(upper).ok()?.next().is_none().then_some(())?;
            }
            let lower = option("lowerdir")?;
            // Escaped colons would need overlayfs's own parsing.
            if lower.contains('\\') {
                return None;
            }
            lower.split(':').map(PathBuf::from).collect()
        }
        "bind" | "rbind" if mount.options.iter().any(|o| o == "ro") => {
            vec![PathBuf::from(&mount.source)]
        }
        _ => return None,
    };
    layers.iter().all(|l| l.is_absolute()).then_some(layers)
}

/// Where to find containers' images: containerd's gRPC socket and the
/// namespace this shim serves, connected on first use.
pub struct Images {
    address: String,
    namespace: String,
    store: tokio::sync::OnceCell<Arc<ContentStore>>,
}

/// The Wasm layer of a container's image, found in the content store.
struct ImageLayer {
    store: Arc<ContentStore>,
    image: String,
    layer: WasmLayer,
}

impl Images {
    /// Images of `namespace`, read through containerd's gRPC socket at
    /// `address` once a container needs one.
    pub fn new(address: String, namespace: String) -> Self {
        Self {
            address,
            namespace,
            store: tokio::sync::OnceCell::new(),
        }
    }

    /// The Wasm layer of container `id`'s image, if it has an image and
    /// the image has one.
    async fn layer_of(&self, id: &str) -> Result<Option<ImageLayer>, TaskError> {
        let store = self
            .store
            .get_or_try_init(|| async {
                ContentStore::connect(&self.address, &self.namespace)
                    .await
                    .map(Arc::new)
            })
            .await?
            .clone();
        let Some(image) = store.container_image(id).await? else {
            return Ok(None);
        };
        let layer = store.wasm_layer(&image).await?;
        Ok(layer.map(|layer| ImageLayer {
            store,
            image,
            layer,
        }))
    }
}

/// Finds and compiles (or loads from the cache) container `id`'s Wasm: the
/// file `process.args[0]` names in its rootfs, or else the Wasm layer of
/// its image. Runs on a blocking thread; `runtime` serves the gRPC calls,
/// which only a container without the file in its rootfs makes. `rootfs`
/// is containerd's snapshot of it, which tells whether a digest may be
/// remembered.
pub fn load_program(
    engine: &WasmEngine,
    images: Option<&Images>,
    runtime: &tokio::runtime::Handle,
    id: &str,
    spec: &ContainerSpec,
    rootfs: &[Mount],
    grants: &Grants,
) -> Result<Program, TaskError> {
    let entrypoint = spec.args.first().map(String::as_str).unwrap_or_default();
    let export = spec.export.as_deref();
    let memo = LayerDigests::for_rootfs(rootfs, engine.cache().dir());
    let memo = memo.as_ref().map(|m| m as &dyn DigestMemo);
    let missing = match wasmpod_oci::identify_in_rootfs(&spec.rootfs, entrypoint, memo) {
        Ok(found) => {
            let (program, how, digest) =
                match engine.prepare_cached(&found.digest, &found.origin, export)? {
                    Some(program) => (program, Origin::Cached, found.digest),
                    None => {
                        // Compile the bytes read now, under their own digest.
                        let source = wasmpod_oci::read_from_rootfs(&spec.rootfs, entrypoint)?;
                        let (program, how) = engine.prepare(&source, export)?;
                        (program, how, source.digest)
                    }
                };
            log_created(id, &found.origin, &digest, how, grants);
            return Ok(program);
        }
        Err(e @ (SourceError::NotFound { .. } | SourceError::NoEntrypoint)) => e,
        Err(e) => return Err(e.into()),
    };
    let Some(found) = images
        .map(|images| runtime.block_on(images.layer_of(id)))
        .transpose()?
        .flatten()
    else {
        return Err(missing.into());
    };
    let ImageLayer {
        store,
        image,
        layer,
    } = found;
    let digest = &layer.descriptor.digest;
    let origin = format!("image:{image}@{digest} ({})", layer.layout);
    let (program, how) = match engine.prepare_cached(digest, &origin, export)? {
        Some(program) => (program, Origin::Cached),
        None => {
            let source = runtime.block_on(store.read_layer(&image, &layer))?;
            engine.prepare(&source, export)?
        }
    };
    log_created(id, &origin, digest, how, grants);
    Ok(program)
}

fn log_created(id: &str, origin: &str, digest: &str, how: Origin, grants: &Grants) {
    tracing::info!(
        %id,
        origin,
        digest,
        cached = how == Origin::Cached,
        granted = %grants,
        "container created"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(type_: &str, source: &str, options: &[String]) -> Mount {
        Mount {
            type_: type_.into(),
            source: source.into(),
            options: options.to_vec(),
            ..Default::default()
        }
    }

    struct Snapshots {
        dir: tempfile::TempDir,
    }

    impl Snapshots {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            for d in ["1", "2", "upper", "work", "cache"] {
                fs::create_dir(dir.path().join(d)).expect("mkdir");
            }
            fs::write(dir.path().join("1/app.wasm"), b"\0asm\x01\0\0\0").expect("write");
            Self { dir }
        }
        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).to_string_lossy().into_owned()
        }
        fn overlay(&self) -> Mount {
            mount(
                "overlay",
                "overlay",
                &[
                    format!("workdir={}", self.path("work")),
                    format!("upperdir={}", self.path("upper")),
                    format!("lowerdir={}:{}", self.path("2"), self.path("1")),
                ],
            )
        }
        fn memo(&self, m: Mount) -> Option<LayerDigests> {
            LayerDigests::for_rootfs(&[m], &self.dir.path().join("cache"))
        }
        fn meta(&self) -> fs::Metadata {
            fs::metadata(self.path("1/app.wasm")).expect("stat")
        }
    }

    const DIGEST: &str = "sha256:4b6a9c3b8c5d7e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7080";

    #[test]
    fn remembers_a_digest_for_the_same_layers_and_file() {
        let s = Snapshots::new();
        let memo = s.memo(s.overlay()).expect("an empty upper layer");
        assert_eq!(memo.recall("/app.wasm", &s.meta()), None);
        memo.record("/app.wasm", &s.meta(), DIGEST);
        // Another container of the same image: a new memo, same layers.
        let again = s.memo(s.overlay()).expect("memo");
        assert_eq!(
            again.recall("/app.wasm", &s.meta()).as_deref(),
            Some(DIGEST)
        );
        assert_eq!(again.recall("/other.wasm", &s.meta()), None);
    }

    #[test]
    fn forgets_when_a_layer_or_the_file_is_not_the_same() {
        let s = Snapshots::new();
        s.memo(s.overlay())
            .expect("memo")
            .record("/app.wasm", &s.meta(), DIGEST);

        fs::write(s.path("1/app.wasm"), b"\0asm\x01\0\0\0\0").expect("rewrite");
        let memo = s.memo(s.overlay()).expect("memo");
        assert_eq!(memo.recall("/app.wasm", &s.meta()), None, "file rewritten");
        memo.record("/app.wasm", &s.meta(), DIGEST);

        // The old directory kept, so the new one is surely another inode.
        fs::rename(s.path("2"), s.path("2.old")).expect("rename");
        fs::create_dir(s.path("2")).expect("mkdir");
        let memo = s.memo(s.overlay()).expect("memo");
        assert_eq!(memo.recall("/app.wasm", &s.meta()), None, "layer made anew");
    }

    #[test]
    fn a_torn_record_is_a_miss() {
        let s = Snapshots::new();
        let memo = s.memo(s.overlay()).expect("memo");
        memo.record("/app.wasm", &s.meta(), DIGEST);
        let entry = memo.entry("/app.wasm", &s.meta());
        fs::write(&entry, &DIGEST[..20]).expect("tear");
        assert_eq!(memo.recall("/app.wasm", &s.meta()), None);
        fs::write(&entry, "").expect("empty");
        assert_eq!(memo.recall("/app.wasm", &s.meta()), None);
    }

    #[test]
    fn only_unchangeable_rootfs_get_a_memo() {
        let s = Snapshots::new();
        let ro_bind = mount("bind", &s.path("1"), &["ro".into(), "rbind".into()]);
        assert!(s.memo(ro_bind.clone()).is_some());
        let rw_bind = mount("bind", &s.path("1"), &["rw".into(), "rbind".into()]);
        assert!(s.memo(rw_bind).is_none());
        let read_only_overlay = mount(
            "overlay",
            "overlay",
            &[format!("lowerdir={}:{}", s.path("2"), s.path("1"))],
        );
        assert!(s.memo(read_only_overlay).is_some());
        let relative = mount("overlay", "overlay", &["lowerdir=2:1".into()]);
        assert!(s.memo(relative).is_none());
        assert!(s.memo(mount("tmpfs", "tmpfs", &[])).is_none());
        let two = [ro_bind.clone(), ro_bind];
        assert!(LayerDigests::for_rootfs(&two, s.dir.path()).is_none());
        assert!(LayerDigests::for_rootfs(&[], s.dir.path()).is_none());

        fs::write(s.path("upper/app.wasm"), b"changed").expect("write");
        assert!(s.memo(s.overlay()).is_none(), "the container wrote");
    }
}
