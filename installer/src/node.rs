//! The node's object in the Kubernetes API: the label the RuntimeClass
//! schedules on, set only once this node's containerd runs the shim, and
//! events that tell the admin what happened here.
//!
//! Three calls (patch a label, post an event, list labelled nodes) with the
//! pod's service account, over reqwest: a generated client (kube,
//! k8s-openapi) would be most of the installer's size and build time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

/// The label the chart's RuntimeClass selects nodes by.
pub const READY_LABEL: &str = "wasmpod.dev/ready";

/// Where a pod's service account token and the cluster's CA are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Events about cluster-scoped objects such as nodes live here, as the
/// kubelet's do; `kubectl describe node` finds them.
const EVENTS_NAMESPACE: &str = "default";

/// Errors talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The token or CA the kubelet mounts is missing or unreadable.
    #[error("cannot read the pod's service account file {path}: {source}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file has no certificate in it.
    #[error("the cluster CA {path} holds no usable certificate")]
    NoCa {
        /// The file.
        path: PathBuf,
    },
    /// The TLS client could not be made.
    #[error("cannot set up TLS to the Kubernetes API: {0}")]
    Tls(String),
    /// The API server did not answer (connection, TLS, timeout).
    #[error("the Kubernetes API at {server} did not answer: {reason}")]
    Unreachable {
        /// The API server.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The API server answered with an error (RBAC, no such node).
    #[error("the Kubernetes API refused to {action}: HTTP {status}: {message}")]
    Refused {
        /// What was asked.
        action: String,
        /// The HTTP status.
        status: u16,
        /// The Status object's message.
        message: String,
    },
}

/// What the label says about this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// containerd runs Wasm pods here (`true`): the RuntimeClass schedules them.
    Ready,
    /// The uninstaller is taking the shim out (`uninstalling`): no new pods,
    /// and the uninstall hook waits for the label to go.
    Leaving,
    /// No label: nothing of wasmpod's is installed here.
    Gone,
}

impl Mark {
    fn value(self) -> Option<&'static str> {
        match self {
            Mark::Ready => Some("true"),
            Mark::Leaving => Some("uninstalling"),
            Mark::Gone => None,
        }
    }
}

/// Whether an event reports something that went well or not.
#[derive(Debug, Clone, Copy)]
pub enum EventType {
    /// It went well.
    Normal,
    /// It failed; the admin should look.
    Warning,
}

/// The Kubernetes API as the pod's service account sees it.
pub struct Api {
    client: reqwest::Client,
    server: String,
    token: PathBuf,
}

impl Api {
    /// The API server named by the `KUBERNETES_SERVICE_HOST`/`_PORT` that
    /// the kubelet gives every pod, or `None` outside a pod.
    pub fn from_env(service_account: &Path) -> Result<Option<Self>, NodeError> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Self::new(&format!("https://{host}:{port}"), service_account).map(Some)
    }

    /// The API server at `server` (`https://host:port`), trusted through
    /// the `ca.crt` and authenticated by the `token` in `service_account`.
    pub fn new(server: &str, service_account: &Path) -> Result<Self, NodeError> {
        let ca_path = service_account.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|source| NodeError::Credentials {
            path: ca_path.clone(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&ca).filter_map(Result::ok);
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(NodeError::NoCa { path: ca_path });
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| NodeError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .map_err(|error| NodeError::Tls(wasmpod_oci::error_chain(&error)))?;
        Ok(Self {
            client,
            server: server.trim_end_matches('/').to_owned(),
            token: service_account.join("token"),
        })
    }

    /// Sets or removes the ready label on node `node`.
    pub async fn mark(&self, node: &str, mark: Mark) -> Result<(), NodeError> {
        let patch = json!({ "metadata": { "labels": { READY_LABEL: mark.value() } } });
        let request = self
            .client
            .patch(format!("{}/api/v1/nodes/{node}", self.server))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string());
        self.send(request, &format!("label node {node}")).await?;
        Ok(())
    }

    /// Posts an event about node `node`, as `kubectl describe node` shows it.
    pub async fn event(
        &self,
        node: &str,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), NodeError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "generateName": format!("{node}.wasmpod-"), "namespace": EVENTS_NAMESPACE },
            // A node's uid in its events is its name, as the kubelet writes them.
            "involvedObject": { "apiVersion": "v1", "kind": "Node", "name": node, "uid": node },
            "type": match kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "reason": reason,
            "message": message,
            "source": { "component": "wasmpod-node-installer", "host": node },
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let request = self
            .client
            .post(format!(
                "{}/api/v1/namespaces/{EVENTS_NAMESPACE}/events",
                self.server
            ))
            .json(&event);
        self.send(request, "post an event").await?;
        Ok(())
    }

    /// The nodes that carry the ready label, with its value.
    pub async fn labelled(&self) -> Result<Vec<(String, String)>, NodeError> {
        let request = self
            .client
            .get(format!("{}/api/v1/nodes", self.server))
            .query(&[("labelSelector", READY_LABEL)]);
        let list = self.send(request, "list nodes").await?;
        let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        Ok(items
            .iter()
            .filter_map(|node| {
                let name = node["metadata"]["name"].as_str()?;
                let value = node["metadata"]["labels"][READY_LABEL].as_str()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect())
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        action: &str,
    ) -> Result<serde_json::Value, NodeError> {
        // Read for each call: the kubelet rotates a projected token.
        let token =
            std::fs::read_to_string(&self.token).map_err(|source| NodeError::Credentials {
                path: self.token.clone(),
                source,
            })?;
        let unreachable = |error: reqwest::Error| NodeError::Unreachable {
            server: self.server.clone(),
            reason: wasmpod_oci::error_chain(&error),
        };
        let response = request
            .bearer_auth(token.trim())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        if status.is_success() {
            return Ok(body);
        }
        // A Status object says why; anything else is shown as it came.
        let message = body["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        Err(NodeError::Refused {
            action: action.to_owned(),
            status: status.as_u16(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_by_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.crt"), "not a certificate\n").expect("write");
        std::fs::write(dir.path().join("token"), "t").expect("write");
        let error = Api::new("https://127.0.0.1:6443", dir.path())
            .err()
            .expect("refused");
        assert!(matches!(error, NodeError::NoCa { .. }), "{error}");
        assert!(error.to_string().contains("ca.crt"), "{error}");
    }

    #[test]
    fn a_missing_service_account_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = Api::new("https://127.0.0.1:6443", dir.path())
            .err()
            .expect("refused");
        assert!(error.to_string().contains("ca.crt"), "{error}");
    }
}
