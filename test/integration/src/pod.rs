//! The part of a Kubernetes Pod (or a Deployment's or Job's pod template)
//! that the kubelet turns into CRI calls: what `kubectl apply` would send.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

/// Why a manifest is not a pod this driver can run.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Not YAML of a known shape.
    #[error("not a Pod manifest: {0}")]
    Yaml(#[from] serde_norway::Error),
    /// No document of the file has a pod.
    #[error("no Pod, Deployment, Job, StatefulSet or DaemonSet in the manifest")]
    NoPod,
    /// A Secret's `data` is not base64.
    #[error("secret {secret}, key {key}: the value is not base64")]
    Base64 {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
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
    /// The ConfigMaps and Secrets of the same file, which the API server
    /// would hold.
    #[serde(skip)]
    pub sources: Sources,
}

/// ConfigMap and Secret contents by name: file name -> bytes.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// ConfigMaps.
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Secrets, decoded.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
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
    /// Volumes the containers may mount.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// The node's process namespace instead of the pod's own.
    #[serde(default, rename = "hostPID")]
    pub host_pid: bool,
}

/// A pod volume; exactly one source is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name, referred to by `volumeMounts`.
    pub name: String,
    /// A fresh directory that lives as long as the pod.
    pub empty_dir: Option<serde_norway::Value>,
    /// A directory of the node.
    pub host_path: Option<HostPath>,
    /// The keys of a ConfigMap as files.
    pub config_map: Option<ConfigMapVolume>,
    /// The keys of a Secret as files.
    pub secret: Option<SecretVolume>,
}

/// `hostPath` of a volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPath {
    /// The node's directory.
    pub path: String,
    /// `DirectoryOrCreate` creates it; others expect it to exist.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `configMap` of a volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolume {
    /// The ConfigMap.
    pub name: String,
    /// Which keys, under which file names; all keys when empty.
    #[serde(default)]
    pub items: Vec<KeyToPath>,
}

/// `secret` of a volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolume {
    /// The Secret.
    pub secret_name: String,
    /// Which keys, under which file names; all keys when empty.
    #[serde(default)]
    pub items: Vec<KeyToPath>,
}

/// One key of a ConfigMap or Secret and the file it becomes.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyToPath {
    /// The key.
    pub key: String,
    /// The file name inside the volume.
    pub path: String,
}

/// One `volumeMounts` entry of a container.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where the container sees it.
    pub mount_path: String,
    /// Read-only when true.
    #[serde(default)]
    pub read_only: bool,
    /// A directory inside the volume to mount instead of its root.
    pub sub_path: Option<String>,
}

/// `securityContext` of a container, the part that matters here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// The image's files are read-only when true.
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// Every capability and device, as the kubelet passes it on.
    #[serde(default)]
    pub privileged: bool,
    /// The uid the process runs as.
    pub run_as_user: Option<i64>,
    /// `false` sets `no_new_privs`.
    pub allow_privilege_escalation: Option<bool>,
    /// Capabilities added to and dropped from the runtime's default set.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// `securityContext.capabilities`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Capabilities {
    /// Added (`NET_ADMIN`, ...).
    #[serde(default)]
    pub add: Vec<String>,
    /// Dropped (`ALL` for every one).
    #[serde(default)]
    pub drop: Vec<String>,
}

/// `resources` of a container: quantities as written (`64Mi`, `500m`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resources {
    /// What the scheduler reserves.
    #[serde(default)]
    pub requests: BTreeMap<String, serde_norway::Value>,
    /// What the node enforces.
    #[serde(default)]
    pub limits: BTreeMap<String, serde_norway::Value>,
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
    /// Volumes and where they appear.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Read-only root filesystem.
    #[serde(default)]
    pub security_context: SecurityContext,
    /// Requests and limits.
    #[serde(default)]
    pub resources: Resources,
    /// Ports the container serves on; `hostPort` ones are published on the node.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Gates traffic: the pod is ready once it succeeds.
    pub readiness_probe: Option<Probe>,
    /// Restarts the container when it fails.
    pub liveness_probe: Option<Probe>,
}

/// One `ports` entry of a container.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// A name probes may refer to.
    pub name: Option<String>,
    /// The port inside the pod.
    pub container_port: u16,
    /// The node's port forwarded to it, if any.
    pub host_port: Option<u16>,
    /// `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
}

/// A probe: exactly one of `httpGet`, `tcpSocket` and `exec` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// GET a path; 200-399 is success.
    pub http_get: Option<HttpGetAction>,
    /// Open a TCP connection.
    pub tcp_socket: Option<TcpSocketAction>,
    /// Run a command in the container (refused for Wasm containers).
    pub exec: Option<ExecAction>,
    /// Seconds between checks (10 by default).
    pub period_seconds: Option<u64>,
    /// Seconds one check may take (1 by default).
    pub timeout_seconds: Option<u64>,
}

/// `httpGet` of a probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// The path, `/` when absent.
    pub path: Option<String>,
    /// A number or the name of a container port.
    pub port: PortRef,
}

/// `tcpSocket` of a probe.
#[derive(Debug, Clone, Deserialize)]
pub struct TcpSocketAction {
    /// A number or the name of a container port.
    pub port: PortRef,
}

/// `exec` of a probe.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecAction {
    /// The command and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
}

/// A probe's port: a number or a container port's name (IntOrString).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// The port itself.
    Number(u16),
    /// The `name` of one of the container's `ports`.
    Name(String),
}

impl Container {
    /// The port number `port` stands for in this container.
    pub fn resolve(&self, port: &PortRef) -> Option<u16> {
        match port {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        }
    }
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

impl Resources {
    /// `limits.memory` in bytes.
    pub fn memory_limit(&self) -> Option<i64> {
        self.limits.get("memory").and_then(quantity)
    }

    /// `limits.cpu` in millicores.
    pub fn cpu_limit_milli(&self) -> Option<i64> {
        self.limits.get("cpu").and_then(quantity_milli)
    }

    /// `requests.cpu` in millicores.
    pub fn cpu_request_milli(&self) -> Option<i64> {
        self.requests.get("cpu").and_then(quantity_milli)
    }
}

/// A Kubernetes quantity (`128Mi`, `1G`, `500m`, `2`) in thousandths of its
/// unit, so that CPU millicores and byte counts share one parser.
fn quantity_milli(value: &serde_norway::Value) -> Option<i64> {
    let text = match value {
        serde_norway::Value::String(s) => s.trim().to_owned(),
        serde_norway::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let scale: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let milli = number.parse::<f64>().ok()? * scale * 1000.0;
    (milli.is_finite() && milli >= 0.0 && milli < i64::MAX as f64).then(|| milli.round() as i64)
}

fn quantity(value: &serde_norway::Value) -> Option<i64> {
    quantity_milli(value).map(|m| (m + 999) / 1000)
}

#[derive(Deserialize)]
struct Manifest {
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: serde_norway::Value,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct WithTemplate {
    template: Pod,
}

impl Pod {
    /// The manifest `name` of `deploy/examples/`, as `kubectl apply` takes it.
    pub fn example(name: &str) -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/examples")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("example pod {}: {e}", path.display()));
        Self::from_yaml(&text).expect("a pod manifest")
    }

    /// Reads the first Pod (or pod template of a Deployment, Job,
    /// StatefulSet or DaemonSet) of a file of YAML documents, with the
    /// file's ConfigMaps and Secrets.
    pub fn from_yaml(text: &str) -> Result<Self, PodError> {
        let mut pod = None;
        let mut sources = Sources::default();
        for document in serde_norway::Deserializer::from_str(text) {
            let manifest = Manifest::deserialize(document)?;
            match manifest.kind.as_str() {
                "ConfigMap" => {
                    let files = manifest.data.into_iter().map(|(k, v)| (k, v.into_bytes()));
                    sources
                        .config_maps
                        .insert(manifest.metadata.name, files.collect());
                }
                "Secret" => {
                    let name = manifest.metadata.name;
                    let mut files = BTreeMap::new();
                    for (key, value) in manifest.data {
                        let bytes = BASE64.decode(value.trim()).map_err(|_| PodError::Base64 {
                            secret: name.clone(),
                            key: key.clone(),
                        })?;
                        files.insert(key, bytes);
                    }
                    files.extend(
                        manifest
                            .string_data
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    sources.secrets.insert(name, files);
                }
                "Pod" if pod.is_none() => {
                    pod = Some(Pod {
                        metadata: manifest.metadata,
                        spec: serde_norway::from_value(manifest.spec)?,
                        sources: Sources::default(),
                    });
                }
                "Deployment" | "Job" | "StatefulSet" | "DaemonSet" if pod.is_none() => {
                    let WithTemplate { template } = serde_norway::from_value(manifest.spec)?;
                    let mut p = template;
                    if p.metadata.name.is_empty() {
                        p.metadata.name = manifest.metadata.name;
                    }
                    if p.metadata.namespace.is_none() {
                        p.metadata.namespace = manifest.metadata.namespace;
                    }
                    pod = Some(p);
                }
                _ => {}
            }
        }
        let mut pod = pod.ok_or(PodError::NoPod)?;
        pod.sources = sources;
        Ok(pod)
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
        assert!(err.to_string().contains("no Pod"), "{err}");
        let err = Pod::from_yaml(
            "kind: Secret\nmetadata: {name: s}\ndata: {k: '!!'}\n---\nkind: Pod\nspec: {containers: []}\n",
        )
        .expect_err("bad base64");
        assert!(err.to_string().contains("secret s, key k"), "{err}");
    }

    #[test]
    fn quantities_as_kubernetes_writes_them() {
        let r: Resources =
            serde_norway::from_str("limits: {memory: 64Mi, cpu: 500m}\nrequests: {cpu: '0.25'}\n")
                .expect("resources");
        assert_eq!(r.memory_limit(), Some(64 * 1024 * 1024));
        assert_eq!(r.cpu_limit_milli(), Some(500));
        assert_eq!(r.cpu_request_milli(), Some(250));
        let r: Resources =
            serde_norway::from_str("limits: {memory: 1G, cpu: 2}\n").expect("resources");
        assert_eq!(r.memory_limit(), Some(1_000_000_000));
        assert_eq!(r.cpu_limit_milli(), Some(2000));
        let r: Resources = serde_norway::from_str("limits: {memory: 12Qi}\n").expect("resources");
        assert_eq!(r.memory_limit(), None, "unknown suffix");
    }

    #[test]
    fn every_example_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).expect("deploy/examples") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("example");
            let pod = Pod::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!pod.spec.containers.is_empty(), "{}", path.display());
            read += 1;
        }
        assert!(read >= 5, "only {read} examples");
        let pod = Pod::from_yaml(include_str!("../../../deploy/examples/sockets.yaml"))
            .expect("the sockets example");
        assert_eq!(pod.metadata.annotations["wasmpod.dev/tcp-listen"], "8080");
    }

    #[test]
    fn reads_ports_and_probes() {
        let pod = Pod::from_yaml(include_str!("../../../deploy/examples/http.yaml"))
            .expect("the http example");
        let c = &pod.spec.containers[0];
        assert_eq!(c.ports[0].container_port, 8080);
        assert_eq!(c.ports[0].host_port, Some(18080));
        let ready = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
        let port = ready.map(|h| &h.port).expect("an httpGet readiness probe");
        assert!(matches!(port, PortRef::Name(n) if n == "http"));
        assert_eq!(c.resolve(port), Some(8080));
        assert_eq!(c.resolve(&PortRef::Name("nope".into())), None);
        let live = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.tcp_socket.as_ref());
        assert_eq!(live.and_then(|t| c.resolve(&t.port)), Some(8080));
    }

    #[test]
    fn reads_volumes_with_their_config_maps_and_secrets() {
        let text = include_str!("../../../deploy/examples/volumes.yaml");
        let pod = Pod::from_yaml(text).expect("the volumes example");
        assert_eq!(pod.metadata.name, "volumes");
        assert_eq!(
            pod.sources.config_maps["app-config"]["greeting.txt"],
            b"hello from a ConfigMap"
        );
        assert_eq!(pod.sources.secrets["app-secret"]["token"], b"s3cr3t");
        let c = &pod.spec.containers[0];
        assert!(c.security_context.read_only_root_filesystem);
        assert_eq!(c.volume_mounts.len(), 3);
        assert_eq!(c.volume_mounts[0].mount_path, "/config");
        let kinds: Vec<_> = pod
            .spec
            .volumes
            .iter()
            .map(|v| {
                (
                    v.config_map.is_some(),
                    v.secret.is_some(),
                    v.empty_dir.is_some(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (true, false, false),
                (false, true, false),
                (false, false, true)
            ]
        );
    }
}
