//! The part of a Kubernetes Pod (or a Deployment's or Job's pod template)
//! that the kubelet turns into CRI calls: what `kubectl apply` would send.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Why a manifest is not a pod this driver can run.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Not YAML of a known shape.
    #[error("not a Pod manifest: {0}")]
    Yaml(#[from] serde_norway::Error),
    /// A kind without a pod template.
    #[error("kind {0} has no pod template (Pod, Deployment or Job expected)")]
    Kind(String),
}

/// `metadata` of a pod.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Pod name.
    #[serde(default)]
    pub name: String,
    /// Namespace; `default` when absent.
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations, where `wasmpod.dev/` grants live.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A pod: metadata and spec.
#[derive(Debug, Clone, Deserialize)]
pub struct Pod {
    /// Name, namespace, labels, annotations.
    #[serde(default)]
    pub metadata: Metadata,
    /// What runs.
    pub spec: PodSpec,
}

/// `spec` of a pod.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The RuntimeClass, whose handler names the CRI runtime (`wasmpod`).
    pub runtime_class_name: Option<String>,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: Option<String>,
    /// Seconds between SIGTERM and SIGKILL on stop.
    pub termination_grace_period_seconds: Option<i64>,
    /// The containers, started in order.
    pub containers: Vec<Container>,
}

/// One container of a pod.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Name within the pod.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's `CMD`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: Option<String>,
}

/// One environment variable: a value, or a field of the pod.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Literal value.
    pub value: Option<String>,
    /// Where the value comes from instead.
    pub value_from: Option<EnvSource>,
}

/// `valueFrom` of an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvSource {
    /// A field of the pod, e.g. `metadata.name` or `status.podIP`.
    pub field_ref: Option<FieldRef>,
}

/// `fieldRef` of an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    /// The field's path.
    pub field_path: String,
}

#[derive(Deserialize)]
struct Manifest {
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    spec: serde_norway::Value,
}

#[derive(Deserialize)]
struct WithTemplate {
    template: Pod,
}

impl Pod {
    /// Reads a Pod, or the pod template of a Deployment or Job.
    pub fn from_yaml(text: &str) -> Result<Self, PodError> {
        let manifest: Manifest = serde_norway::from_str(text)?;
        match manifest.kind.as_str() {
            "Pod" => Ok(Pod {
                metadata: manifest.metadata,
                spec: serde_norway::from_value(manifest.spec)?,
            }),
            "Deployment" | "Job" | "StatefulSet" | "DaemonSet" => {
                let WithTemplate { template } = serde_norway::from_value(manifest.spec)?;
                let mut pod = template;
                if pod.metadata.name.is_empty() {
                    pod.metadata.name = manifest.metadata.name;
                }
                if pod.metadata.namespace.is_none() {
                    pod.metadata.namespace = manifest.metadata.namespace;
                }
                Ok(pod)
            }
            other => Err(PodError::Kind(other.to_owned())),
        }
    }

    /// The namespace, `default` when the manifest names none.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pod_and_a_deployment_template() {
        let pod = Pod::from_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\n  annotations:\n    wasmpod.dev/x: y\nspec:\n  runtimeClassName: wasmpod\n  containers:\n  - name: app\n    image: example/app:1\n    args: [a, b]\n    env:\n    - name: POD\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n",
        )
        .expect("a pod");
        assert_eq!(pod.metadata.name, "hello");
        assert_eq!(pod.namespace(), "default");
        assert_eq!(pod.spec.runtime_class_name.as_deref(), Some("wasmpod"));
        assert_eq!(pod.spec.containers[0].args, ["a", "b"]);
        let env = &pod.spec.containers[0].env[0];
        let field = env.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
        assert_eq!(field.map(|f| f.field_path.as_str()), Some("metadata.name"));

        let deployment = Pod::from_yaml(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: edge\nspec:\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: example/web:1\n",
        )
        .expect("a deployment");
        assert_eq!(deployment.metadata.name, "web");
        assert_eq!(deployment.namespace(), "edge");
        assert_eq!(deployment.metadata.labels["app"], "web");
    }

    #[test]
    fn refuses_what_has_no_pod() {
        let err =
            Pod::from_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {}\n")
                .expect_err("no pod");
        assert!(err.to_string().contains("ConfigMap"), "{err}");
    }
}
