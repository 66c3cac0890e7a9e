//! Plays the kubelet: turns a [`Pod`] into the CRI calls the kubelet makes
//! against containerd's CRI plugin, with the kubelet's field mapping, and
//! reads container logs the way `kubectl logs` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_client::tonic::{self, transport::Channel};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ContainerState, ContainerStats,
    ContainerStatsRequest, ContainerStatus, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, ImageStatusRequest, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, PortMapping, Protocol, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};

use crate::pod::{Container, Pod, Probe};
use crate::probe::{self, Outcome, Target, Vantage};
use crate::volumes::{self, Materialised, VolumeError};

/// What went wrong talking to the CRI.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// containerd's socket did not answer.
    #[error("cannot connect to the CRI at {address}: {source}")]
    Connect {
        /// The socket.
        address: String,
        /// Why.
        source: containerd_client::tonic::transport::Error,
    },
    /// A CRI call failed.
    #[error("{call} failed: {status}")]
    Call {
        /// The CRI method.
        call: &'static str,
        /// containerd's answer.
        status: tonic::Status,
    },
    /// The pod cannot be mapped.
    #[error("{0}")]
    Invalid(String),
    /// A container did not reach the state asked for in time.
    #[error("container {container} did not {what} within {timeout:?}")]
    Timeout {
        /// The container's name.
        container: String,
        /// What was waited for.
        what: &'static str,
        /// How long.
        timeout: Duration,
    },
    /// A volume could not be made.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Reading or writing the pod's directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn call(name: &'static str) -> impl FnOnce(tonic::Status) -> KubeletError {
    move |status| KubeletError::Call { call: name, status }
}

/// A CRI client that behaves like a kubelet.
pub struct Kubelet {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    pods_dir: PathBuf,
}

/// A pod the kubelet started: its sandbox and its containers' ids.
#[derive(Debug, Clone)]
pub struct RunningPod {
    /// The sandbox id.
    pub sandbox_id: String,
    /// The sandbox config, sent again with every container.
    pub config: PodSandboxConfig,
    /// The pod's IP on the CNI bridge.
    pub ip: String,
    /// The pod's network namespace, from the sandbox's runtime spec.
    pub netns: Option<PathBuf>,
    /// Container name -> id of its latest attempt, in the pod's order.
    pub containers: Vec<(String, String)>,
    /// Container name -> its latest attempt (0 until restarted).
    pub attempts: HashMap<String, u32>,
    /// Earlier attempts, kept for their logs until the pod is removed.
    pub dead: Vec<String>,
    /// The pod's log directory.
    pub log_dir: PathBuf,
    /// Grace period for stops, from the pod spec (default 30 s).
    pub grace: Duration,
    /// The kubelet's directory for this pod (`/var/lib/kubelet/pods/UID`).
    pub pod_dir: PathBuf,
    /// The pod's cgroup (cgroupfs driver), parent of its containers'.
    pub cgroup_parent: String,
    /// The pod's volumes on the node, by name.
    pub volumes: HashMap<String, Materialised>,
    /// How long each CRI call of [`Kubelet::run`] took, in order.
    pub startup: Vec<(&'static str, Duration)>,
}

impl Kubelet {
    /// Connects to containerd's socket `address`; pod logs go under
    /// `pods_dir` (the kubelet's `/var/log/pods`).
    pub async fn connect(address: &str, pods_dir: &Path) -> Result<Self, KubeletError> {
        let channel = containerd_client::connect(address)
            .await
            .map_err(|source| KubeletError::Connect {
                address: address.to_owned(),
                source,
            })?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            pods_dir: pods_dir.to_owned(),
        })
    }

    /// Pulls `image` unless the policy and the node's images say not to,
    /// as the kubelet does (`IfNotPresent` unless the tag is `latest`).
    pub async fn ensure_image(&mut self, c: &Container) -> Result<(), KubeletError> {
        let spec = ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        };
        let latest = !c.image.contains(':') || c.image.ends_with(":latest");
        let policy = c.image_pull_policy.as_deref().unwrap_or(if latest {
            "Always"
        } else {
            "IfNotPresent"
        });
        if policy != "Always" {
            let status = self
                .images
                .image_status(ImageStatusRequest {
                    image: Some(spec.clone()),
                    verbose: false,
                })
                .await
                .map_err(call("ImageStatus"))?
                .into_inner();
            if status.image.is_some() {
                return Ok(());
            }
            if policy == "Never" {
                return Err(KubeletError::Invalid(format!(
                    "image {} is not on the node and imagePullPolicy is Never",
                    c.image
                )));
            }
        }
        self.images
            .pull_image(PullImageRequest {
                image: Some(spec),
                ..Default::default()
            })
            .await
            .map_err(call("PullImage"))?;
        Ok(())
    }

    /// RunPodSandbox, then for each container: pull, CreateContainer,
    /// StartContainer.
    pub async fn run(&mut self, pod: &Pod) -> Result<RunningPod, KubeletError> {
        let namespace = pod.namespace().to_owned();
        let name = pod.metadata.name.clone();
        let uid = format!("{:x}", pod_uid(&namespace, &name));
        let log_dir = self.pods_dir.join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&log_dir).map_err(|source| KubeletError::Io {
            path: log_dir.clone(),
            source,
        })?;
        // Volumes are ready before the sandbox, as the kubelet waits for
        // them before RunPodSandbox.
        let pod_dir = self.pods_dir.join("kubelet").join(&uid);
        let volumes = volumes::materialise(pod, &pod_dir)?;
        let cgroup_parent = pod_cgroup(pod, &uid);
        let mut labels: HashMap<String, String> = pod.metadata.labels.clone().into_iter().collect();
        labels.insert("io.kubernetes.pod.name".into(), name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), uid.clone());
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            hostname: name.clone(),
            log_directory: log_dir.to_string_lossy().into_owned(),
            labels,
            annotations: pod.metadata.annotations.clone().into_iter().collect(),
            port_mappings: port_mappings(pod),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: namespaces(pod),
                    privileged: pod
                        .spec
                        .containers
                        .iter()
                        .any(|c| c.security_context.privileged),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // RuntimeClass `wasmpod` has handler `wasmpod` (deploy/), as the
        // kubelet resolves it through the RuntimeClass object.
        let handler = pod.spec.runtime_class_name.clone().unwrap_or_default();
        let mut startup = Vec::new();
        let mut clock = Instant::now();
        let mut lap = |call: &'static str, startup: &mut Vec<(&'static str, Duration)>| {
            startup.push((call, clock.elapsed()));
            clock = Instant::now();
        };
        let sandbox_id = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler,
            })
            .await
            .map_err(call("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id;
        lap("RunPodSandbox", &mut startup);
        let status = self
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: true,
            })
            .await
            .map_err(call("PodSandboxStatus"))?
            .into_inner();
        lap("PodSandboxStatus", &mut startup);
        let netns = status
            .info
            .get("info")
            .and_then(|info| network_namespace(info));
        let ip = status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let mut running = RunningPod {
            sandbox_id,
            config,
            ip,
            netns,
            containers: Vec::new(),
            log_dir,
            grace: Duration::from_secs(
                pod.spec
                    .termination_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(30),
            ),
            pod_dir,
            cgroup_parent,
            volumes,
            attempts: HashMap::new(),
            dead: Vec::new(),
            startup: Vec::new(),
        };
        for c in &pod.spec.containers {
            self.ensure_image(c).await?;
            lap("ImageStatus", &mut startup);
            let id = self.create(pod, &running, c, 0).await?;
            lap("CreateContainer", &mut startup);
            self.start(&id).await?;
            lap("StartContainer", &mut startup);
            running.containers.push((c.name.clone(), id));
            running.attempts.insert(c.name.clone(), 0);
        }
        running.startup = startup;
        Ok(running)
    }

    async fn start(&mut self, id: &str) -> Result<(), KubeletError> {
        self.runtime
            .start_container(StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .map_err(call("StartContainer"))?;
        Ok(())
    }

    /// One pass of the kubelet's pod sync: every container that has exited
    /// and that `restartPolicy` says to restart (`Always`, the default; or
    /// `OnFailure` with a non-zero exit) is created again as the next
    /// attempt in the same sandbox, and started. The kubelet's back-off
    /// between restarts is left to the caller. Returns the names restarted.
    pub async fn sync(
        &mut self,
        pod: &Pod,
        running: &mut RunningPod,
    ) -> Result<Vec<String>, KubeletError> {
        let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
        let mut restarted = Vec::new();
        for c in &pod.spec.containers {
            let Some(slot) = running.containers.iter().position(|(n, _)| *n == c.name) else {
                continue;
            };
            let status = self.status(&running.containers[slot].1).await?;
            if status.state != ContainerState::ContainerExited as i32 {
                continue;
            }
            let restart = match policy {
                "Always" => true,
                "OnFailure" => status.exit_code != 0,
                _ => false,
            };
            if !restart {
                continue;
            }
            let attempt = running.attempts.get(&c.name).copied().unwrap_or(0) + 1;
            let id = self.create(pod, running, c, attempt).await?;
            self.start(&id).await?;
            let old = std::mem::replace(&mut running.containers[slot].1, id);
            running.dead.push(old);
            running.attempts.insert(c.name.clone(), attempt);
            restarted.push(c.name.clone());
        }
        Ok(restarted)
    }

    async fn create(
        &mut self,
        pod: &Pod,
        running: &RunningPod,
        c: &Container,
        attempt: u32,
    ) -> Result<String, KubeletError> {
        let mut envs = Vec::new();
        for e in &c.env {
            let value = match (
                &e.value,
                e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()),
            ) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => match f.field_path.as_str() {
                    "metadata.name" => pod.metadata.name.clone(),
                    "metadata.namespace" => pod.namespace().to_owned(),
                    "status.podIP" => running.ip.clone(),
                    // The kubelet's node name defaults to the hostname.
                    "spec.nodeName" => std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                    other => {
                        return Err(KubeletError::Invalid(format!(
                            "env {}: fieldRef {other} is not supported by this driver",
                            e.name
                        )));
                    }
                },
                (None, None) => String::new(),
            };
            envs.push(KeyValue {
                key: e.name.clone(),
                value,
            });
        }
        let mut mounts = Vec::new();
        for m in &c.volume_mounts {
            let volume = running.volumes.get(&m.name).ok_or_else(|| {
                KubeletError::Invalid(format!(
                    "container {}: volumeMount {} names no volume of the pod",
                    c.name, m.name
                ))
            })?;
            let host = match &m.sub_path {
                Some(sub) => volume.host.join(sub),
                None => volume.host.clone(),
            };
            mounts.push(Mount {
                container_path: m.mount_path.clone(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: m.read_only || volume.read_only,
                ..Default::default()
            });
        }
        let mut labels = HashMap::new();
        labels.insert("io.kubernetes.container.name".to_owned(), c.name.clone());
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs,
            labels,
            annotations: pod.metadata.annotations.clone().into_iter().collect(),
            log_path: format!("{}/{attempt}.log", c.name),
            mounts,
            linux: Some(linux(pod, c)),
            ..Default::default()
        };
        Ok(self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: running.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(running.config.clone()),
            })
            .await
            .map_err(call("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    /// ContainerStatus of container `id`.
    pub async fn status(&mut self, id: &str) -> Result<ContainerStatus, KubeletError> {
        self.runtime
            .container_status(ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(call("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or_else(|| KubeletError::Invalid(format!("no status for container {id}")))
    }

    /// ExecSync: what an exec probe and `kubectl exec` do. Returns the exit
    /// code and the output.
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
    ) -> Result<(i32, String), KubeletError> {
        let out = self
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.to_owned(),
                cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
                timeout: 10,
            })
            .await
            .map_err(call("ExecSync"))?
            .into_inner();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.exit_code, text))
    }

    /// ContainerStats of container `id`: what `kubectl top` shows.
    pub async fn stats(&mut self, id: &str) -> Result<ContainerStats, KubeletError> {
        self.runtime
            .container_stats(ContainerStatsRequest {
                container_id: id.to_owned(),
            })
            .await
            .map_err(call("ContainerStats"))?
            .into_inner()
            .stats
            .ok_or_else(|| KubeletError::Invalid(format!("no stats for container {id}")))
    }

    /// Waits until container `id` has exited; returns its status.
    pub async fn wait_exited(
        &mut self,
        name: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<ContainerStatus, KubeletError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id).await?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(KubeletError::Timeout {
                    container: name.to_owned(),
                    what: "exit",
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What `kubectl logs` shows for container `name`: the message part of
    /// each CRI log line (`TIME STREAM TAG MESSAGE`), partial lines joined.
    pub fn logs(&self, pod: &RunningPod, name: &str) -> Result<String, KubeletError> {
        let attempt = pod.attempts.get(name).copied().unwrap_or(0);
        let path = pod.log_dir.join(name).join(format!("{attempt}.log"));
        let raw = std::fs::read_to_string(&path).map_err(|source| KubeletError::Io {
            path: path.clone(),
            source,
        })?;
        let mut out = String::new();
        for line in raw.lines() {
            let mut parts = line.splitn(4, ' ');
            let (_, _, tag, message) = (parts.next(), parts.next(), parts.next(), parts.next());
            out.push_str(message.unwrap_or_default());
            if tag != Some("P") {
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// Runs `probe` of container `name` once, as the kubelet would; network
    /// probes connect `from` the node or from inside the pod.
    pub async fn probe(
        &mut self,
        pod: &Pod,
        running: &RunningPod,
        name: &str,
        probe: &Probe,
        from: Vantage,
    ) -> Result<Outcome, KubeletError> {
        let (c, id) = find(pod, running, name)?;
        if let Some(exec) = &probe.exec {
            let cmd: Vec<&str> = exec.command.iter().map(String::as_str).collect();
            return Ok(match self.exec_sync(id, &cmd).await {
                Ok((0, _)) => Outcome::Success,
                Ok((code, out)) => Outcome::Failure(format!("exit code {code}: {out}")),
                Err(e) => Outcome::Failure(e.to_string()),
            });
        }
        let target = Target {
            container: c.clone(),
            ip: running.ip.clone(),
            netns: running.netns.clone(),
        };
        // The probe blocks on sockets; keep it off the async runtime.
        let probe = probe.clone();
        tokio::task::spawn_blocking(move || {
            probe::network(&probe, &target, from)
                .ok_or_else(|| KubeletError::Invalid("a probe with no action".into()))
        })
        .await
        .map_err(|e| KubeletError::Invalid(format!("probe task: {e}")))?
    }

    /// Runs the readiness probe of container `name` every `periodSeconds`
    /// until it succeeds (the pod turns Ready), or fails with the last
    /// failure after `timeout`. A container without one is ready at once.
    pub async fn wait_ready(
        &mut self,
        pod: &Pod,
        running: &RunningPod,
        name: &str,
        timeout: Duration,
    ) -> Result<(), KubeletError> {
        let (c, _) = find(pod, running, name)?;
        let Some(probe) = c.readiness_probe.clone() else {
            return Ok(());
        };
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1));
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .probe(pod, running, name, &probe, Vantage::Node)
                .await?
            {
                Outcome::Success => return Ok(()),
                Outcome::Failure(why) if Instant::now() + period > deadline => {
                    return Err(KubeletError::Invalid(format!(
                        "container {name} not ready within {timeout:?}: {why}"
                    )));
                }
                Outcome::Failure(_) => tokio::time::sleep(period).await,
            }
        }
    }

    /// StopContainer: SIGTERM, then SIGKILL after `grace`, as the kubelet
    /// stops a container.
    pub async fn stop(&mut self, id: &str, grace: Duration) -> Result<(), KubeletError> {
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: id.to_owned(),
                timeout: i64::try_from(grace.as_secs()).unwrap_or(30),
            })
            .await
            .map_err(call("StopContainer"))?;
        Ok(())
    }

    /// StopContainer (with the pod's grace period) and RemoveContainer for
    /// every container, then StopPodSandbox and RemovePodSandbox.
    pub async fn remove(&mut self, pod: &RunningPod) -> Result<(), KubeletError> {
        let ids = pod.containers.iter().map(|(_, id)| id).chain(&pod.dead);
        for id in ids {
            self.stop(id, pod.grace).await?;
            self.runtime
                .remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .map_err(call("RemoveContainer"))?;
        }
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
            })
            .await
            .map_err(call("StopPodSandbox"))?;
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
            })
            .await
            .map_err(call("RemovePodSandbox"))?;
        let _ = std::fs::remove_dir_all(&pod.log_dir);
        let _ = std::fs::remove_dir_all(&pod.pod_dir);
        remove_cgroup(&pod.cgroup_parent);
        Ok(())
    }
}

/// The Linux part of a container's config: resources and security context,
/// converted as the kubelet converts them.
/// The namespaces the kubelet asks for: the node's pids under `hostPID`,
/// else a pid namespace per container (the kubelet's default without
/// `shareProcessNamespace`; the CRI's zero value would share the pod's).
fn namespaces(pod: &Pod) -> Option<NamespaceOption> {
    let pid = if pod.spec.host_pid {
        NamespaceMode::Node
    } else {
        NamespaceMode::Container
    };
    Some(NamespaceOption {
        pid: pid as i32,
        ..Default::default()
    })
}

fn linux(pod: &Pod, c: &Container) -> LinuxContainerConfig {
    /// The CFS period the kubelet uses, in microseconds.
    const CPU_PERIOD: i64 = 100_000;
    let r = &c.resources;
    let resources = LinuxContainerResources {
        memory_limit_in_bytes: r.memory_limit().unwrap_or(0),
        cpu_period: CPU_PERIOD,
        cpu_quota: r
            .cpu_limit_milli()
            .map_or(0, |milli| (milli * CPU_PERIOD / 1000).max(1000)),
        // The kubelet's shares: 1024 per CPU requested, at least 2.
        cpu_shares: r
            .cpu_request_milli()
            .or(r.cpu_limit_milli())
            .map_or(2, |milli| (milli * 1024 / 1000).max(2)),
        ..Default::default()
    };
    LinuxContainerConfig {
        resources: Some(resources),
        security_context: Some({
            let s = &c.security_context;
            LinuxContainerSecurityContext {
                readonly_rootfs: s.read_only_root_filesystem,
                privileged: s.privileged,
                run_as_user: s.run_as_user.map(|value| Int64Value { value }),
                no_new_privs: s.allow_privilege_escalation == Some(false),
                capabilities: Some(Capability {
                    add_capabilities: s.capabilities.add.clone(),
                    drop_capabilities: s.capabilities.drop.clone(),
                    ..Default::default()
                }),
                namespace_options: namespaces(pod),
                ..Default::default()
            }
        }),
    }
}

/// The pod's cgroup as the kubelet names it with the cgroupfs driver, by
/// QoS class: Guaranteed pods directly under `/kubepods`, the others under
/// `burstable` or `besteffort`.
fn pod_cgroup(pod: &Pod, uid: &str) -> String {
    let cs = &pod.spec.containers;
    let best_effort = cs
        .iter()
        .all(|c| c.resources.requests.is_empty() && c.resources.limits.is_empty());
    let guaranteed = cs.iter().all(|c| {
        let res = &c.resources;
        ["cpu", "memory"].iter().all(|k| {
            let limit = res.limits.get(*k);
            limit.is_some() && res.requests.get(*k).is_none_or(|req| Some(req) == limit)
        })
    });
    match (best_effort, guaranteed) {
        (true, _) => format!("/kubepods/besteffort/pod{uid}"),
        (_, true) => format!("/kubepods/pod{uid}"),
        _ => format!("/kubepods/burstable/pod{uid}"),
    }
}

/// Removes the pod's cgroup from every hierarchy once its containers are
/// gone, as the kubelet does, and the QoS parents if they are empty (the
/// kubelet keeps those; a test node should be left as found).
fn remove_cgroup(parent: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let relative = parent.trim_start_matches('/');
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let dir = root.join(relative);
        for _ in 0..100 {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    // A process that just left may not be gone yet.
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break,
            }
        }
        for up in dir.ancestors().skip(1) {
            if up == root || std::fs::remove_dir(up).is_err() {
                break;
            }
        }
    }
}

/// The container `name` of `pod` and the id of its latest attempt.
fn find<'a>(
    pod: &'a Pod,
    running: &'a RunningPod,
    name: &str,
) -> Result<(&'a Container, &'a str), KubeletError> {
    let c = pod.spec.containers.iter().find(|c| c.name == name);
    let id = running.containers.iter().find(|(n, _)| n == name);
    match (c, id) {
        (Some(c), Some((_, id))) => Ok((c, id)),
        _ => Err(KubeletError::Invalid(format!(
            "no container {name} in the pod"
        ))),
    }
}

/// Every container port of the pod, as the kubelet lists them for the
/// sandbox; the CRI plugin hands those with a `hostPort` to CNI portmap.
fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let ports = pod.spec.containers.iter().flat_map(|c| &c.ports);
    ports
        .map(|p| PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            } as i32,
            container_port: i32::from(p.container_port),
            host_port: i32::from(p.host_port.unwrap_or(0)),
            host_ip: String::new(),
        })
        .collect()
}

/// The network namespace's path in the `info` JSON of a verbose
/// PodSandboxStatus: the sandbox's runtime spec, as containerd keeps it.
fn network_namespace(info: &str) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(info).ok()?;
    let namespaces = info.pointer("/runtimeSpec/linux/namespaces")?.as_array()?;
    namespaces
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// A stable pod uid from its namespace and name (the API server would
/// assign a UUID; the tests need only uniqueness per pod).
fn pod_uid(namespace: &str, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (namespace, name).hash(&mut h);
    h.finish()
}
