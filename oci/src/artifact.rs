//! The shapes in which registries carry Wasm, and which layer of an image
//! holds the program.
//!
//! Three layouts keep the Wasm as a raw (not tar) layer: the CNCF Wasm OCI
//! artifact, runwasi's image with a component layer, and the older single
//! content layer. An image with none of them is an ordinary image whose
//! rootfs holds the `.wasm` file.

use serde::Deserialize;

/// Manifest config media type of the CNCF Wasm OCI artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of the CNCF Wasm OCI artifact.
pub const WASM_LAYER: &str = "application/wasm";
/// Layer media type runwasi uses for components in an ordinary image config.
pub const COMPONENT_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Layer media type of the older single-layer Wasm images.
pub const CONTENT_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

const WASM_LAYERS: [&str; 3] = [WASM_LAYER, COMPONENT_LAYER, CONTENT_LAYER];

/// Whether `media_type` is one of the layer types that carry raw Wasm.
pub fn is_wasm_layer(media_type: &str) -> bool {
    WASM_LAYERS.contains(&media_type)
}

fn is_tar_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// The layouts wasmpod reads, by the name users know them by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// CNCF Wasm OCI artifact (`wkg`, `oci-wasm`, `oras`, `wasmpod push`).
    Artifact,
    /// An image config with a component layer (runwasi).
    ComponentImage,
    /// One `application/vnd.wasm.content.layer.v1+wasm` layer.
    ContentLayer,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Artifact => "wasm-artifact",
            Self::ComponentImage => "component-image",
            Self::ContentLayer => "content-layer",
        })
    }
}

/// A content descriptor, as manifests and indexes write them.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
    /// Free-form metadata (`org.opencontainers.image.title`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// For index entries: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The file name the layer was pushed from, if the pusher recorded one.
    pub fn title(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get("org.opencontainers.image.title")
            .map(String::as_str)
    }
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Platform {
    /// `wasm`, `amd64`, ...
    pub architecture: String,
    /// `wasip1`, `wasip2`, `linux`, ...
    pub os: String,
}

impl Platform {
    /// Whether this entry is for Wasm rather than a native platform.
    pub fn is_wasm(&self) -> bool {
        self.architecture == "wasm" || self.os.starts_with("wasi")
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// An image manifest: only the fields wasmpod reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index (or Docker manifest list).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    /// One manifest per platform.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// Whether `media_type` names an index.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_INDEX
}

/// Whether `media_type` names a single-platform manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Which manifest of an index to run: a Wasm platform entry first, then the
/// node's own platform (an ordinary image with a `.wasm` in its rootfs).
pub fn pick_from_index(index: &Index) -> Option<&Descriptor> {
    let on = |pred: &dyn Fn(&Platform) -> bool| {
        index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(pred))
    };
    on(&Platform::is_wasm).or_else(|| on(&|p| p.os == "linux" && p.architecture == "amd64"))
}

/// The Wasm layer of an image and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmLayer {
    /// The layer's descriptor (digest, size, media type).
    pub descriptor: Descriptor,
    /// Which layout held it.
    pub layout: Layout,
}

/// Why an image's layers cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// More than one layer holds Wasm, and wasmpod would have to guess.
    #[error(
        "image {image} has {count} Wasm layers ({digests}); wasmpod runs exactly one per container"
    )]
    SeveralWasmLayers {
        /// The image name.
        image: String,
        /// How many.
        count: usize,
        /// Their digests.
        digests: String,
    },
    /// An artifact layer of a type wasmpod does not know.
    #[error(
        "image {image} layer {digest} has media type {media_type}, which is neither Wasm nor a filesystem layer"
    )]
    UnknownLayer {
        /// The image name.
        image: String,
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A Wasm artifact without a Wasm layer.
    #[error("image {image} is a Wasm artifact but has no {WASM_LAYER} layer")]
    NoWasmLayer {
        /// The image name.
        image: String,
    },
    /// The config blob is not the JSON object its media type promises.
    #[error("image {image} config {digest} is not valid JSON: {reason}")]
    BadConfig {
        /// The image name.
        image: String,
        /// The config's digest.
        digest: String,
        /// What the parser said.
        reason: String,
    },
}

/// Finds the Wasm layer of `manifest` (whose config blob is `config`).
///
/// `Ok(None)` means an ordinary image: the program is a file in its rootfs.
pub fn wasm_layer(
    image: &str,
    manifest: &Manifest,
    config: &[u8],
) -> Result<Option<WasmLayer>, LayoutError> {
    let wasm: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| is_wasm_layer(&l.media_type))
        .collect();
    let is_artifact = manifest.config.media_type == WASM_CONFIG;
    if !is_artifact && wasm.is_empty() {
        return Ok(None);
    }
    if let Err(e) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(config) {
        return Err(LayoutError::BadConfig {
            image: image.to_owned(),
            digest: manifest.config.digest.clone(),
            reason: e.to_string(),
        });
    }
    // Artifacts carry nothing but Wasm; images may add filesystem layers.
    if let Some(other) = manifest
        .layers
        .iter()
        .find(|l| !is_wasm_layer(&l.media_type) && (is_artifact || !is_tar_layer(&l.media_type)))
    {
        return Err(LayoutError::UnknownLayer {
            image: image.to_owned(),
            digest: other.digest.clone(),
            media_type: other.media_type.clone(),
        });
    }
    let layer = match wasm.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(LayoutError::NoWasmLayer {
                image: image.to_owned(),
            });
        }
        several => {
            return Err(LayoutError::SeveralWasmLayers {
                image: image.to_owned(),
                count: several.len(),
                digests: several
                    .iter()
                    .map(|l| l.digest.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    let layout = match layer.media_type.as_str() {
        WASM_LAYER => Layout::Artifact,
        COMPONENT_LAYER => Layout::ComponentImage,
        _ => Layout::ContentLayer,
    };
    Ok(Some(WasmLayer {
        descriptor: layer,
        layout,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{n:064x}"),
            size: 8,
            annotations: None,
            platform: None,
        }
    }

    fn manifest(config: &str, layers: &[&str]) -> Manifest {
        Manifest {
            config: desc(config, 0),
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, t)| desc(t, i as u8 + 1))
                .collect(),
        }
    }

    const CONFIG: &[u8] = br#"{"architecture":"wasm","os":"wasip2"}"#;

    #[test]
    fn finds_each_layout() {
        let cases = [
            (WASM_CONFIG, WASM_LAYER, Layout::Artifact),
            (OCI_CONFIG, COMPONENT_LAYER, Layout::ComponentImage),
            (OCI_CONFIG, CONTENT_LAYER, Layout::ContentLayer),
        ];
        for (config, layer, layout) in cases {
            let found = wasm_layer("img", &manifest(config, &[layer]), CONFIG)
                .expect(layer)
                .expect(layer);
            assert_eq!(found.layout, layout);
            assert_eq!(found.descriptor.digest, format!("sha256:{:064x}", 1));
        }
    }

    #[test]
    fn ordinary_images_are_left_to_the_rootfs() {
        let m = manifest(OCI_CONFIG, &["application/vnd.oci.image.layer.v1.tar+gzip"]);
        assert_eq!(wasm_layer("img", &m, b"not even json"), Ok(None));
    }

    #[test]
    fn images_may_add_filesystem_layers_but_artifacts_may_not() {
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let image = manifest(OCI_CONFIG, &[tar, COMPONENT_LAYER]);
        assert!(wasm_layer("img", &image, CONFIG).expect("image").is_some());
        let artifact = manifest(WASM_CONFIG, &[WASM_LAYER, tar]);
        let err = wasm_layer("img", &artifact, CONFIG).expect_err("artifact");
        assert!(matches!(err, LayoutError::UnknownLayer { .. }), "{err}");
    }

    #[test]
    fn refuses_what_it_would_have_to_guess() {
        let several = manifest(WASM_CONFIG, &[WASM_LAYER, WASM_LAYER]);
        let err = wasm_layer("reg/app:1", &several, CONFIG).expect_err("several");
        assert!(
            err.to_string().contains("reg/app:1 has 2 Wasm layers"),
            "{err}"
        );

        let unknown = manifest(OCI_CONFIG, &[COMPONENT_LAYER, "application/x-thing"]);
        let err = wasm_layer("img", &unknown, CONFIG).expect_err("unknown");
        assert!(err.to_string().contains("application/x-thing"), "{err}");

        let empty = manifest(WASM_CONFIG, &[]);
        let err = wasm_layer("img", &empty, CONFIG).expect_err("empty");
        assert!(matches!(err, LayoutError::NoWasmLayer { .. }), "{err}");

        let garbage = manifest(WASM_CONFIG, &[WASM_LAYER]);
        let err = wasm_layer("img", &garbage, b"{garbage").expect_err("garbage");
        assert!(matches!(err, LayoutError::BadConfig { .. }), "{err}");
    }

    #[test]
    fn index_prefers_wasm_then_the_node() {
        let entry = |os: &str, arch: &str, n| Descriptor {
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
            }),
            ..desc(OCI_MANIFEST, n)
        };
        let index = Index {
            manifests: vec![entry("linux", "arm64", 1), entry("linux", "amd64", 2)],
        };
        assert_eq!(pick_from_index(&index), Some(&index.manifests[1]));
        let index = Index {
            manifests: vec![entry("linux", "amd64", 2), entry("wasip2", "wasm", 3)],
        };
        assert_eq!(pick_from_index(&index), Some(&index.manifests[1]));
        let index = Index {
            manifests: vec![entry("linux", "arm64", 1)],
        };
        assert_eq!(pick_from_index(&index), None);
    }
}
