//! Reading a container's Wasm from containerd's content store.
//!
//! The walk is the one containerd itself does: container -> image ->
//! (index ->) manifest -> config -> layers, over containerd's gRPC API. Only
//! the Wasm layer's bytes are read, and only when the compiled-code cache
//! does not already hold them (the layer digest is the cache key).

use containerd_client::services::v1::{
    GetContainerRequest, GetImageRequest, ReadContentRequest, containers_client::ContainersClient,
    content_client::ContentClient, images_client::ImagesClient,
};
use containerd_client::tonic::metadata::{Ascii, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use crate::artifact::{self, Index, Manifest, WasmLayer};
use crate::verify::{Mismatch, Verifier};
use crate::{MAX_WASM_SIZE, Preamble, WasmKind, WasmSource};

/// Largest manifest, index or config wasmpod reads (4 MiB, as containerd).
const MAX_METADATA_SIZE: u64 = 4 << 20;

/// Why the Wasm could not be read from containerd's content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// containerd's socket did not answer.
    #[error("cannot connect to containerd at {address}")]
    Connect {
        /// The socket path.
        address: String,
        /// What the transport said.
        #[source]
        source: containerd_client::tonic::transport::Error,
    },
    /// The namespace cannot be sent as gRPC metadata.
    #[error("namespace {0:?} is not a valid containerd namespace")]
    Namespace(String),
    /// An API call failed.
    #[error("containerd refused {what}: {}", .status.message())]
    Rpc {
        /// What wasmpod was doing.
        what: String,
        /// containerd's answer.
        status: Status,
    },
    /// The image is gone from the image store.
    #[error(
        "image {image} is not in containerd's image store (namespace {namespace}); pull it again"
    )]
    ImageNotFound {
        /// The image name.
        image: String,
        /// The containerd namespace.
        namespace: String,
    },
    /// The image's manifest or index is not usable.
    #[error("image {image}: {digest} is not a valid {media_type}: {reason}")]
    BadMetadata {
        /// The image name.
        image: String,
        /// The blob's digest.
        digest: String,
        /// What it claims to be.
        media_type: String,
        /// What the parser said.
        reason: String,
    },
    /// The image's top descriptor is neither an index nor a manifest.
    #[error(
        "image {image} has media type {media_type}, which is neither an image index nor a manifest"
    )]
    UnknownMediaType {
        /// The image name.
        image: String,
        /// What it is.
        media_type: String,
    },
    /// An index without an entry wasmpod can run.
    #[error(
        "image {image} is an index without a Wasm (wasip1/wasip2, wasm) or linux/amd64 entry; it has: {platforms}"
    )]
    NoPlatform {
        /// The image name.
        image: String,
        /// The platforms it does list.
        platforms: String,
    },
    /// The image's layers do not form a layout wasmpod knows.
    #[error(transparent)]
    Layout(#[from] artifact::LayoutError),
    /// A blob is not what its descriptor says (size or digest).
    #[error("image {image}: blob {digest} {mismatch}")]
    Mismatch {
        /// The image name.
        image: String,
        /// The digest the manifest gives.
        digest: String,
        /// How it differs.
        mismatch: Mismatch,
    },
    /// A blob is larger than wasmpod accepts.
    #[error(
        "image {image}: layer {digest} is {size} bytes, more than the {limit} bytes wasmpod accepts"
    )]
    TooLarge {
        /// The image name.
        image: String,
        /// The blob's digest.
        digest: String,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The Wasm layer does not hold Wasm.
    #[error(
        "image {image}: layer {digest} ({media_type}) is not a WebAssembly module or component (it starts with {preamble})"
    )]
    NotWasm {
        /// The image name.
        image: String,
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
        /// What its bytes start with.
        preamble: Preamble,
    },
}

impl ContentError {
    /// Whether containerd did not answer at all (its socket refused us, or a
    /// call found the service unavailable), as opposed to answering no.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Rpc { status, .. } => {
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
            }
            _ => false,
        }
    }
}

/// A connection to containerd's content, image and container services in
/// one namespace.
pub struct ContentStore {
    channel: Channel,
    namespace: String,
    header: MetadataValue<Ascii>,
}

impl ContentStore {
    /// Connects to containerd's gRPC socket at `address` (a path, or
    /// `unix://path`) for `namespace`.
    pub async fn connect(address: &str, namespace: &str) -> Result<Self, ContentError> {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        let header = namespace
            .parse()
            .map_err(|_| ContentError::Namespace(namespace.to_owned()))?;
        let channel =
            containerd_client::connect(path)
                .await
                .map_err(|source| ContentError::Connect {
                    address: path.to_owned(),
                    source,
                })?;
        Ok(Self {
            channel,
            namespace: namespace.to_owned(),
            header,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut()
            .insert("containerd-namespace", self.header.clone());
        req
    }

    /// The image a container was created from; `None` if it has none (for
    /// example `ctr run --config`).
    pub async fn container_image(&self, id: &str) -> Result<Option<String>, ContentError> {
        let found = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_owned() }))
            .await
            .map_err(|status| ContentError::Rpc {
                what: format!("looking up container {id}"),
                status,
            })?;
        let image = found
            .into_inner()
            .container
            .map(|c| c.image)
            .unwrap_or_default();
        Ok((!image.is_empty()).then_some(image))
    }

    /// Walks `image` down to its Wasm layer. `Ok(None)`: an ordinary image,
    /// whose rootfs holds the program.
    pub async fn wasm_layer(&self, image: &str) -> Result<Option<WasmLayer>, ContentError> {
        let found = ImagesClient::new(self.channel.clone())
            .get(self.request(GetImageRequest {
                name: image.to_owned(),
            }))
            .await
            .map_err(|status| match status.code() {
                Code::NotFound => ContentError::ImageNotFound {
                    image: image.to_owned(),
                    namespace: self.namespace.clone(),
                },
                _ => ContentError::Rpc {
                    what: format!("looking up image {image}"),
                    status,
                },
            })?;
        let target = found
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| ContentError::ImageNotFound {
                image: image.to_owned(),
                namespace: self.namespace.clone(),
            })?;
        let mut desc = artifact::Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: target.size.max(0) as u64,
            annotations: None,
            platform: None,
        };
        if artifact::is_index(&desc.media_type) {
            let index: Index = self.read_json(image, &desc).await?;
            desc = match artifact::pick_from_index(&index) {
                Some(entry) => entry.clone(),
                None => {
                    let platforms = index
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref().map(ToString::to_string))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ContentError::NoPlatform {
                        image: image.to_owned(),
                        platforms,
                    });
                }
            };
        }
        if !artifact::is_manifest(&desc.media_type) {
            return Err(ContentError::UnknownMediaType {
                image: image.to_owned(),
                media_type: desc.media_type,
            });
        }
        let manifest: Manifest = self.read_json(image, &desc).await?;
        let config = self
            .read_blob(image, &manifest.config, MAX_METADATA_SIZE)
            .await?;
        Ok(artifact::wasm_layer(image, &manifest, &config)?)
    }

    /// Reads the Wasm layer, checking its size and digest as it streams in.
    pub async fn read_layer(
        &self,
        image: &str,
        layer: &WasmLayer,
    ) -> Result<WasmSource, ContentError> {
        let desc = &layer.descriptor;
        let bytes = self.read_blob(image, desc, MAX_WASM_SIZE).await?;
        let kind = WasmKind::identify(&bytes).map_err(|preamble| ContentError::NotWasm {
            image: image.to_owned(),
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            preamble,
        })?;
        Ok(WasmSource {
            bytes,
            digest: desc.digest.clone(),
            kind,
            origin: format!("image:{image}@{}", desc.digest),
        })
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        image: &str,
        desc: &artifact::Descriptor,
    ) -> Result<T, ContentError> {
        let bytes = self.read_blob(image, desc, MAX_METADATA_SIZE).await?;
        serde_json::from_slice(&bytes).map_err(|e| ContentError::BadMetadata {
            image: image.to_owned(),
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            reason: e.to_string(),
        })
    }

    async fn read_blob(
        &self,
        image: &str,
        desc: &artifact::Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, ContentError> {
        if desc.size > limit {
            return Err(ContentError::TooLarge {
                image: image.to_owned(),
                digest: desc.digest.clone(),
                size: desc.size,
                limit,
            });
        }
        let rpc_error = |status| ContentError::Rpc {
            what: format!("reading {} of image {image}", desc.digest),
            status,
        };
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.request(ReadContentRequest {
                digest: desc.digest.clone(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(rpc_error)?
            .into_inner();
        let mut verifier = Verifier::new(&desc.digest, desc.size);
        let mut bytes = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        let mismatch = |mismatch| ContentError::Mismatch {
            image: image.to_owned(),
            digest: desc.digest.clone(),
            mismatch,
        };
        while let Some(chunk) = stream.message().await.map_err(rpc_error)? {
            verifier.update(&chunk.data).map_err(mismatch)?;
            bytes.extend_from_slice(&chunk.data);
        }
        verifier.finish().map_err(mismatch)?;
        Ok(bytes)
    }
}
