//! Talking to an OCI registry: push a Wasm artifact, fetch what a reference
//! names, and stream a layer to a file with its digest checked.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use wasmpod_oci::artifact::{self, Descriptor, Index, Manifest, WasmLayer};
use wasmpod_oci::verify::{Mismatch, Verifier, sha256_digest};

use crate::progress::Progress;

/// Why a registry operation failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error(
        "{reference:?} is not an image reference (like registry.example:5000/app:1.0): {reason}"
    )]
    BadReference {
        /// As given.
        reference: String,
        /// What the parser said.
        reason: String,
    },
    /// Nothing answered.
    #[error(
        "cannot reach registry {registry}: {detail}; is it running? For a registry without TLS pass --plain-http"
    )]
    Unreachable {
        /// Host[:port].
        registry: String,
        /// The transport's explanation.
        detail: String,
    },
    /// 401 or 403.
    #[error(
        "registry {registry} refused access (401/403): run `docker login {registry}` or add its credentials to ~/.docker/config.json (or $DOCKER_CONFIG/config.json)"
    )]
    Unauthorized {
        /// Host[:port].
        registry: String,
    },
    /// 404.
    #[error(
        "{reference} was not found in the registry (404): check the repository name and the tag"
    )]
    NotFound {
        /// The reference.
        reference: String,
    },
    /// 5xx and other registry failures.
    #[error("registry {registry} failed: {detail}; try again, or look at the registry's log")]
    Server {
        /// Host[:port].
        registry: String,
        /// Code and message.
        detail: String,
    },
    /// The manifest or index is not JSON of the expected shape.
    #[error("{reference}: the registry's {what} is not valid: {reason}")]
    BadMetadata {
        /// The reference.
        reference: String,
        /// Manifest, index or config.
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// An index without a Wasm entry.
    #[error(
        "{reference} is an index without a Wasm entry (wasip1/wasip2 or architecture wasm); it has: {platforms}"
    )]
    NoWasmPlatform {
        /// The reference.
        reference: String,
        /// The platforms it lists.
        platforms: String,
    },
    /// An ordinary container image.
    #[error(
        "{reference} is an ordinary container image, not a Wasm artifact: its Wasm, if any, is a file in its filesystem"
    )]
    NotAnArtifact {
        /// The reference.
        reference: String,
    },
    /// The layers do not form a known layout.
    #[error(transparent)]
    Layout(#[from] artifact::LayoutError),
    /// A blob is not what the manifest says.
    #[error("{reference}: blob {digest} {mismatch}; nothing was written")]
    Mismatch {
        /// The reference.
        reference: String,
        /// The blob.
        digest: String,
        /// How it differs.
        mismatch: Mismatch,
    },
    /// The layer is not Wasm.
    #[error(
        "{reference}: layer {digest} is not a WebAssembly module or component (it starts with {preamble}); nothing was written"
    )]
    NotWasm {
        /// The reference.
        reference: String,
        /// The layer.
        digest: String,
        /// Its first bytes, hex.
        preamble: wasmpod_oci::Preamble,
    },
    /// A local file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Anything else the client reported.
    #[error("registry {registry}: {source}")]
    Other {
        /// Host[:port].
        registry: String,
        /// The client's error.
        #[source]
        source: OciDistributionError,
    },
}

/// What a reference resolved to: its manifest, config and Wasm layer.
pub struct Resolved {
    /// Digest of the manifest (not of an index above it).
    pub manifest_digest: String,
    /// The config's media type.
    pub config_media_type: String,
    /// The Wasm layer.
    pub layer: WasmLayer,
}

/// One repository of one registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    text: String,
}

const ACCEPTED: [&str; 4] = [
    artifact::OCI_MANIFEST,
    artifact::OCI_INDEX,
    artifact::DOCKER_MANIFEST,
    artifact::DOCKER_INDEX,
];

impl Registry {
    /// A client for `reference`, with credentials from the docker config if
    /// it has any for the registry.
    pub fn new(reference: &str, plain_http: bool) -> Result<Self, RegistryError> {
        let parsed: Reference =
            reference
                .parse()
                .map_err(|e: oci_client::ParseError| RegistryError::BadReference {
                    reference: reference.to_owned(),
                    reason: e.to_string(),
                })?;
        let client = Client::new(ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..Default::default()
        });
        let auth = match docker_credential::get_credential(parsed.resolve_registry()) {
            Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                RegistryAuth::Basic(user, password)
            }
            Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
                RegistryAuth::Bearer(token)
            }
            Err(_) => RegistryAuth::Anonymous,
        };
        Ok(Self {
            client,
            auth,
            text: parsed.whole(),
            reference: parsed,
        })
    }

    /// The reference, normalised (`docker.io/library/...` spelled out).
    pub fn reference(&self) -> &str {
        &self.text
    }

    fn explain(&self, error: OciDistributionError) -> RegistryError {
        let registry = self.reference.resolve_registry().to_owned();
        let not_found = || RegistryError::NotFound {
            reference: self.text.clone(),
        };
        match error {
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => {
                RegistryError::Unauthorized { registry }
            }
            OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
            OciDistributionError::RegistryError { ref envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    RegistryError::Unauthorized { registry }
                } else {
                    RegistryError::Server {
                        registry,
                        detail: envelope.to_string(),
                    }
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                401 | 403 => RegistryError::Unauthorized { registry },
                404 => not_found(),
                _ => RegistryError::Server {
                    registry,
                    detail: format!("HTTP {code}: {message}"),
                },
            },
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                RegistryError::Unreachable {
                    registry,
                    detail: wasmpod_oci::error_chain(&e),
                }
            }
            // Blob downloads report the HTTP status through the transport.
            OciDistributionError::RequestError(e) if e.status().is_some() => {
                match e.status().map(|s| s.as_u16()) {
                    Some(401 | 403) => RegistryError::Unauthorized { registry },
                    Some(404) => not_found(),
                    _ => RegistryError::Server {
                        registry,
                        detail: wasmpod_oci::error_chain(&e),
                    },
                }
            }
            other => RegistryError::Other {
                registry,
                source: other,
            },
        }
    }

    /// Pushes `wasm` as a CNCF Wasm artifact: `config` (an `oci-wasm`
    /// config), one `application/wasm` layer, and `annotations` on the
    /// manifest. Returns the manifest digest.
    pub async fn push(
        &self,
        wasm: bytes::Bytes,
        config: Config,
        layer_annotations: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    ) -> Result<String, RegistryError> {
        let layer = ImageLayer {
            data: wasm,
            media_type: artifact::WASM_LAYER.to_owned(),
            annotations: Some(layer_annotations),
        };
        let mut manifest =
            OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
        manifest.media_type = Some(artifact::OCI_MANIFEST.to_owned());
        self.client
            .store_auth_if_needed(self.reference.resolve_registry(), &self.auth)
            .await;
        self.client
            .auth(
                &self.reference,
                &self.auth,
                oci_client::RegistryOperation::Push,
            )
            .await
            .map_err(|e| self.explain(e))?;
        let layer_digest = layer.sha256_digest();
        let mut progress = Progress::new("push", &layer_digest, layer.data.len() as u64);
        // Chunks let the progress line move; the registry sees one upload.
        let chunks: Vec<bytes::Bytes> = (0..layer.data.len())
            .step_by(1 << 20)
            .map(|at| layer.data.slice(at..layer.data.len().min(at + (1 << 20))))
            .collect();
        let stream = futures_util::stream::iter(chunks).map(move |chunk| {
            progress.advance(chunk.len() as u64);
            Ok(chunk)
        });
        self.client
            .push_blob_stream(&self.reference, stream, &layer_digest)
            .await
            .map_err(|e| self.explain(e))?;
        self.client
            .push_blob(
                &self.reference,
                config.data.clone(),
                &sha256_digest(&config.data),
            )
            .await
            .map_err(|e| self.explain(e))?;
        let body = serde_json::to_vec(&manifest).map_err(|e| self.explain(e.into()))?;
        let digest = sha256_digest(&body);
        self.client
            .push_manifest_raw(
                &self.reference,
                body,
                oci_client::manifest::OCI_IMAGE_MEDIA_TYPE
                    .parse()
                    .map_err(|_| self.explain(OciDistributionError::GenericError(None)))?,
            )
            .await
            .map_err(|e| self.explain(e))?;
        Ok(digest)
    }

    async fn manifest_raw(&self, reference: &Reference) -> Result<Vec<u8>, RegistryError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &ACCEPTED)
            .await
            .map_err(|e| self.explain(e))?;
        if let Some(pinned) = reference.digest() {
            let actual = sha256_digest(&bytes);
            if actual != pinned {
                return Err(RegistryError::Mismatch {
                    reference: self.text.clone(),
                    digest: pinned.to_owned(),
                    mismatch: Mismatch::Digest { actual },
                });
            }
        }
        Ok(bytes.to_vec())
    }

    fn bad(&self, what: &'static str, e: serde_json::Error) -> RegistryError {
        RegistryError::BadMetadata {
            reference: self.text.clone(),
            what,
            reason: e.to_string(),
        }
    }

    /// Resolves the reference (through an index if need be) to its manifest,
    /// config and Wasm layer.
    pub async fn resolve(&self) -> Result<Resolved, RegistryError> {
        let mut raw = self.manifest_raw(&self.reference).await?;
        let mut digest = sha256_digest(&raw);
        let top: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| self.bad("manifest", e))?;
        if top.get("manifests").is_some() {
            let index: Index = serde_json::from_value(top).map_err(|e| self.bad("index", e))?;
            let Some(entry) = index
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_some_and(artifact::Platform::is_wasm))
            else {
                return Err(RegistryError::NoWasmPlatform {
                    reference: self.text.clone(),
                    platforms: index
                        .manifests
                        .iter()
                        .map(|m| {
                            m.platform
                                .as_ref()
                                .map_or_else(|| "(no platform)".to_owned(), ToString::to_string)
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let child = Reference::with_digest(
                self.reference.registry().to_owned(),
                self.reference.repository().to_owned(),
                entry.digest.clone(),
            );
            raw = self.manifest_raw(&child).await?;
            digest = entry.digest.clone();
        }
        let manifest: Manifest =
            serde_json::from_slice(&raw).map_err(|e| self.bad("manifest", e))?;
        let mut config = Vec::new();
        self.blob(&manifest.config, |chunk| {
            config.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        let layer = artifact::wasm_layer(&self.text, &manifest, &config)?.ok_or_else(|| {
            RegistryError::NotAnArtifact {
                reference: self.text.clone(),
            }
        })?;
        Ok(Resolved {
            manifest_digest: digest,
            config_media_type: manifest.config.media_type,
            layer,
        })
    }

    /// Streams the blob `desc` into `sink`, checking size and digest.
    async fn blob(
        &self,
        desc: &Descriptor,
        mut sink: impl FnMut(&[u8]) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        let oci = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: i64::try_from(desc.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &oci)
            .await
            .map_err(|e| self.explain(e))?;
        let mismatch = |mismatch| RegistryError::Mismatch {
            reference: self.text.clone(),
            digest: desc.digest.clone(),
            mismatch,
        };
        let mut verifier = Verifier::new(&desc.digest, desc.size);
        let mut progress = Progress::new("pull", &desc.digest, desc.size);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                // The client checks the digest too, and reports it as I/O.
                if e.to_string().contains("igest") {
                    mismatch(Mismatch::Digest {
                        actual: e.to_string(),
                    })
                } else {
                    self.explain(e.into())
                }
            })?;
            verifier.update(&chunk).map_err(mismatch)?;
            progress.advance(chunk.len() as u64);
            sink(&chunk)?;
        }
        verifier.finish().map_err(mismatch)
    }

    /// Downloads the Wasm layer to `out`, through a temporary file beside
    /// it, so that `out` appears only once the bytes are verified.
    pub async fn pull_layer(&self, layer: &WasmLayer, out: &Path) -> Result<(), RegistryError> {
        let write_err = |source| RegistryError::Write {
            path: out.to_path_buf(),
            source,
        };
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
        let mut head = Vec::with_capacity(8);
        let desc = &layer.descriptor;
        self.blob(desc, |chunk| {
            if head.len() < 8 {
                head.extend(chunk.iter().take(8 - head.len()));
                if head.len() == 8 || head.len() as u64 == desc.size {
                    check_wasm(&self.text, &desc.digest, &head)?;
                }
            }
            tmp.write_all(chunk).map_err(write_err)
        })
        .await?;
        check_wasm(&self.text, &desc.digest, &head)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(out).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}

fn check_wasm(reference: &str, digest: &str, head: &[u8]) -> Result<(), RegistryError> {
    wasmpod_oci::WasmKind::identify(head)
        .map(drop)
        .map_err(|preamble| RegistryError::NotWasm {
            reference: reference.to_owned(),
            digest: digest.to_owned(),
            preamble,
        })
}
