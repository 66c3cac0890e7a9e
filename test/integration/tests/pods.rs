//! Pods through containerd's CRI plugin, driven by a test kubelet
//! ([`wasmpod_integration::kubelet`]) from the YAML in `deploy/examples/`.
//!
//! Run by `make test` (test/integration.sh), which starts containerd with
//! its CRI plugin, the `wasmpod` runtime handler and a CNI bridge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerState, ContainerStatus};
use wasmpod_integration::kubelet::{Kubelet, RunningPod};
use wasmpod_integration::pod::Pod;
use wasmpod_integration::pod::{
    ExecAction, HostPath, PortRef, TcpSocketAction, Volume, VolumeMount,
};
use wasmpod_integration::probe::{Outcome, Vantage};
use wasmpod_integration::{cached_programs, http, ok, processes, status_field, unique, var};

/// The namespace containerd's CRI plugin keeps its images and pods in.
const CRI_NAMESPACE: &str = "k8s.io";

/// Imports the sandbox and test images into the CRI's namespace, once.
fn images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let fixtures = PathBuf::from(var("WASMPOD_FIXTURES"));
        for tar in [
            "pause.tar",
            "hello.tar",
            "hello-native.tar",
            "programs.tar",
            "sidecar.tar",
        ] {
            let tar = fixtures.join(tar);
            let out = std::process::Command::new(var("WASMPOD_CTR"))
                .args(["-a", &var("WASMPOD_ADDRESS"), "-n", CRI_NAMESPACE])
                .args(["images", "import", tar.to_str().expect("utf-8")])
                .output()
                .expect("ctr runs");
            ok(&out, "ctr images import");
        }
    });
}

async fn kubelet() -> Kubelet {
    images();
    Kubelet::connect(&var("WASMPOD_ADDRESS"), Path::new(&var("WASMPOD_PODS_DIR")))
        .await
        .expect("connect to the CRI")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The network namespaces on the node (the CRI plugin makes one per pod).
fn netns() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs `pod` (one container that exits), waits for it, removes it; returns
/// its exit code and `kubectl logs` text. The pod must have had an IP and
/// must leave no network namespace behind. `inspect` sees the pod before
/// it is removed.
async fn run_to_completion_with(
    kubelet: &mut Kubelet,
    pod: &Pod,
    inspect: impl FnOnce(&RunningPod),
) -> (ContainerStatus, String) {
    let before = netns();
    let running = kubelet.run(pod).await.expect("pod runs");
    assert!(!running.ip.is_empty(), "the pod got no IP");
    let (name, id) = running.containers[0].clone();
    let status = kubelet
        .wait_exited(&name, &id, Duration::from_secs(60))
        .await
        .expect("the container exits");
    let logs = kubelet.logs(&running, &name).expect("logs");
    inspect(&running);
    kubelet.remove(&running).await.expect("pod removed");
    assert_eq!(netns(), before, "the pod's network namespace was left");
    assert!(!running.pod_dir.exists(), "the pod's volumes were left");
    (status, logs)
}

/// [`run_to_completion_with`], for the exit code.
async fn run_to_completion(kubelet: &mut Kubelet, pod: &Pod) -> (i32, String) {
    let (status, logs) = run_to_completion_with(kubelet, pod, |_| {}).await;
    (status.exit_code, logs)
}

/// The line `fs.wasm` printed for operation `op` (e.g. `cat /config/x`).
fn line<'a>(logs: &'a str, op: &str) -> &'a str {
    let prefix = format!("{op}: ");
    logs.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no line for {op:?} in:\n{logs}"))
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn hello_pod_logs_its_args_and_env() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let (code, logs) = run_to_completion(&mut kubelet, &Pod::example("hello.yaml")).await;
        assert_eq!(code, 0, "{logs}");
        assert!(logs.contains("hello from wasm"), "{logs}");
        assert!(logs.contains("argv[0]=/hello.wasm"), "{logs}");
        assert!(logs.contains("argv[1]=from-a-pod"), "{logs}");
        assert!(logs.contains("GREETING=hello"), "{logs}");
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_runc_pod_runs_beside_wasmpod_pods() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let (code, logs) =
            run_to_completion(&mut kubelet, &Pod::example("hello-native.yaml")).await;
        assert_eq!(code, 0, "{logs}");
        assert!(logs.contains("argv[1]=from-runc"), "{logs}");
        assert!(logs.contains("GREETING=default"), "{logs}");
        let (code, logs) = run_to_completion(&mut kubelet, &Pod::example("hello.yaml")).await;
        assert_eq!(code, 0, "{logs}");
        assert!(logs.contains("argv[1]=from-a-pod"), "{logs}");
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn volumes_are_preopens_with_their_modes() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let pod = Pod::example("volumes.yaml");
        let (status, logs) = run_to_completion_with(&mut kubelet, &pod, |running| {
            // The guest's write landed in the emptyDir on the node.
            let note = running.volumes["scratch"].host.join("note.txt");
            let text = std::fs::read_to_string(&note).expect("the guest's file on the node");
            assert_eq!(text, "written by the guest");
        })
        .await;
        assert_eq!(status.exit_code, 0, "{logs}");
        assert_eq!(
            line(&logs, "cat /config/greeting.txt"),
            "ok hello from a ConfigMap"
        );
        assert_eq!(line(&logs, "cat /secret/token"), "ok s3cr3t");
        assert_eq!(line(&logs, "write /scratch/note.txt"), "ok");
        assert_eq!(
            line(&logs, "cat /scratch/note.txt"),
            "ok written by the guest"
        );
        // A ConfigMap volume is read-only, and so is the image with
        // readOnlyRootFilesystem.
        assert!(
            line(&logs, "write /config/greeting.txt").starts_with("error"),
            "{logs}"
        );
        assert!(
            line(&logs, "write /new-in-image.txt").starts_with("error"),
            "{logs}"
        );
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn escapes_from_preopens_fail() {
    block_on(async {
        let mut kubelet = kubelet().await;
        // A secret of the node, outside every volume, and a hostPath volume
        // holding symlinks that point at it.
        let outside = tempfile::tempdir().expect("tempdir");
        let marker = unique("node-only");
        let secret = outside.path().join("node-secret.txt");
        std::fs::write(&secret, &marker).expect("write");
        let host = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(&secret, host.path().join("absolute")).expect("symlink");
        let up = "../".repeat(host.path().components().count()) + &rel(outside.path());
        std::os::unix::fs::symlink(&up, host.path().join("relative")).expect("symlink");
        std::fs::write(host.path().join("inside.txt"), "inside").expect("write");
        let outside_rel = rel(&secret);
        let outside_abs = secret.to_string_lossy().into_owned();

        let mut pod = Pod::example("volumes.yaml");
        pod.metadata.name = "escapes".into();
        pod.spec.volumes.push(Volume {
            name: "host".into(),
            empty_dir: None,
            host_path: Some(HostPath {
                path: host.path().to_string_lossy().into_owned(),
                kind: Some("Directory".into()),
            }),
            config_map: None,
            secret: None,
        });
        let c = &mut pod.spec.containers[0];
        c.volume_mounts.push(VolumeMount {
            name: "host".into(),
            mount_path: "/host".into(),
            read_only: true,
            sub_path: None,
        });
        let dotdot = "../".repeat(8);
        c.args = [
            "cat /host/inside.txt",
            "cat /host/absolute",
            "cat /host/relative/node-secret.txt",
            &format!("cat /host/../{dotdot}{outside_rel}"),
            &format!("cat /scratch/{dotdot}{outside_rel}"),
            &format!("cat {dotdot}{outside_rel}"),
            &format!("cat {outside_abs}"),
            &format!("symlink {outside_abs} /scratch/abs-link"),
            "cat /scratch/abs-link",
            &format!("symlink {dotdot}{outside_rel} /scratch/rel-link"),
            "cat /scratch/rel-link",
            "write /host/new.txt x",
            "ls /dev/shm",
            "ls /proc/self",
            "cat /etc/hosts",
        ]
        .iter()
        .flat_map(|op| op.split(' ').map(str::to_owned))
        .collect();

        let (code, logs) = run_to_completion(&mut kubelet, &pod).await;
        assert_eq!(code, 0, "{logs}");
        assert!(!logs.contains(&marker), "the node's file leaked:\n{logs}");
        assert_eq!(line(&logs, "cat /host/inside.txt"), "ok inside");
        for op in [
            "cat /host/absolute".to_owned(),
            "cat /host/relative/node-secret.txt".to_owned(),
            format!("cat /host/../{dotdot}{outside_rel}"),
            format!("cat /scratch/{dotdot}{outside_rel}"),
            format!("cat {dotdot}{outside_rel}"),
            format!("cat {outside_abs}"),
            "cat /scratch/abs-link".to_owned(),
            "cat /scratch/rel-link".to_owned(),
            "write /host/new.txt".to_owned(),
            "ls /dev/shm".to_owned(),
            "ls /proc/self".to_owned(),
            "cat /etc/hosts".to_owned(),
        ] {
            assert!(line(&logs, &op).starts_with("error"), "{op}:\n{logs}");
        }
        assert!(
            !host.path().join("new.txt").exists(),
            "a read-only hostPath was written"
        );
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn memory_limit_stops_a_hog_as_oom_killed() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let mut pod = Pod::example("memory-limit.yaml");
        let (status, logs) = run_to_completion_with(&mut kubelet, &pod, |_| {}).await;
        assert_eq!(status.exit_code, 0, "24 MiB fit in 32 MiB: {logs}");
        assert!(logs.contains("allocated 24 MiB, done"), "{logs}");

        pod.spec.containers[0].args.clear();
        let (status, logs) = run_to_completion_with(&mut kubelet, &pod, |_| {}).await;
        assert_eq!(status.exit_code, 137, "{logs}");
        assert_eq!(status.reason, "OOMKilled", "{logs}");
        assert!(logs.contains("allocated 16 MiB"), "{logs}");
        assert!(!logs.contains("allocated 32 MiB"), "{logs}");
        assert!(logs.contains("malloc failed after"), "{logs}");
        assert!(
            logs.contains("wasmpod: out of memory") && logs.contains("limit of 33554432 bytes"),
            "{logs}"
        );
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_spinning_guest_shows_in_stats_refuses_exec_and_stops_within_its_grace_period() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let mut pod = program_pod("spin", "/loop.component.wasm", &[]);
        pod.spec.termination_grace_period_seconds = Some(10);
        let running = kubelet.run(&pod).await.expect("pod runs");
        let (name, id) = running.containers[0].clone();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = kubelet.status(&id).await.expect("status");
        assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        // What `kubectl top` would show: the guest's own CPU and memory.
        let stats = kubelet.stats(&id).await.expect("ContainerStats");
        let cpu = stats
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value);
        let memory = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map_or(0, |v| v.value);
        // 300 ms of spinning is well over 100 ms of CPU; the program's
        // linear memory is at least one 64 KiB page.
        assert!(cpu > 100_000_000, "cpu {cpu} ns");
        assert!(memory >= 65_536, "memory {memory} bytes");
        // An exec probe or `kubectl exec` gets a clear refusal.
        let err = kubelet
            .exec_sync(&id, &["/bin/sh", "-c", "true"])
            .await
            .expect_err("exec is refused");
        assert!(
            err.to_string()
                .contains("not supported for Wasm containers"),
            "{err}"
        );
        let started = Instant::now();
        kubelet.stop(&id, running.grace).await.expect("stop");
        let took = started.elapsed();
        let status = kubelet
            .wait_exited(&name, &id, Duration::from_secs(5))
            .await
            .expect("exited");
        kubelet.remove(&running).await.expect("pod removed");
        // SIGTERM ends it: no SIGKILL after the grace period was needed.
        assert_eq!(status.exit_code, 143);
        assert!(took < running.grace, "StopContainer took {took:?}");
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_cpu_limit_is_enforced_through_the_containers_cgroup() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let mut pod = program_pod("throttled", "/loop.component.wasm", &[]);
        pod.spec.termination_grace_period_seconds = Some(5);
        pod.spec.containers[0].resources =
            serde_norway::from_str("limits: {cpu: 200m}").expect("resources");
        let running = kubelet.run(&pod).await.expect("pod runs");
        let (_, id) = running.containers[0].clone();
        // The pod's cgroup in one cgroup v1 controller's hierarchy.
        let pod_cgroup = |controller: &str| {
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(running.cgroup_parent.trim_start_matches('/'))
        };
        // cgroup v1 here: the guest's thread is in its container's cpu
        // cgroup, with the kubelet's quota for 200m.
        let dir = pod_cgroup("cpu").join(&id);
        let spin = Duration::from_millis(1500);
        tokio::time::sleep(spin).await;
        let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us"));
        let threads = std::fs::read_to_string(dir.join("tasks"));
        // The shim's memory is charged to the guest's memory cgroup, which
        // its main thread moved on to from the sandbox's: the kubelet reads
        // a container's memory there.
        let container = pod_cgroup("memory").join(&id);
        let procs = std::fs::read_to_string(container.join("cgroup.procs"));
        let charged = std::fs::read_to_string(container.join("memory.usage_in_bytes"));
        let sandbox_procs = std::fs::read_to_string(
            pod_cgroup("memory")
                .join(&running.sandbox_id)
                .join("cgroup.procs"),
        );
        let stats = kubelet.stats(&id).await.expect("ContainerStats");
        kubelet.remove(&running).await.expect("pod removed");
        let procs = procs.expect("the container's memory cgroup");
        assert_eq!(procs.lines().count(), 1, "the shim alone: {procs:?}");
        let sandbox_procs = sandbox_procs.expect("the sandbox's memory cgroup");
        assert_eq!(
            sandbox_procs, "",
            "the shim left the sandbox's memory cgroup"
        );
        let charged: u64 = charged.expect("usage").trim().parse().expect("a number");
        // Only what the shim allocates after the move is charged there.
        assert!(charged > 0, "no memory charged to the container");
        assert_eq!(quota.expect("the container's cgroup").trim(), "20000");
        assert!(
            threads.expect("its tasks").lines().count() >= 1,
            "the guest's thread is not in its cgroup"
        );
        let cpu = stats
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value);
        // 0.2 CPU for 1.5 s is 300 ms; unthrottled it would be ~1500 ms.
        assert!(cpu > 50_000_000, "cpu {cpu} ns");
        assert!(cpu < 600_000_000, "not throttled: cpu {cpu} ns in {spin:?}");
        assert!(!pod_cgroup("cpu").exists(), "the pod's cgroup was left");
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_failed_container_is_restarted_in_its_sandbox_by_policy() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let mut pod = program_pod("restarts", "/exit_code.wasm", &["3"]);
        pod.spec.restart_policy = Some("OnFailure".into());
        let mut running = kubelet.run(&pod).await.expect("pod runs");
        let (name, first) = running.containers[0].clone();
        let status = kubelet
            .wait_exited(&name, &first, Duration::from_secs(30))
            .await
            .expect("exits");
        assert_eq!(status.exit_code, 3);

        let restarted = kubelet.sync(&pod, &mut running).await.expect("sync");
        assert_eq!(restarted, std::slice::from_ref(&name));
        let second = running.containers[0].1.clone();
        assert_ne!(second, first, "a new container");
        let status = kubelet
            .wait_exited(&name, &second, Duration::from_secs(30))
            .await
            .expect("exits again");
        assert_eq!(status.exit_code, 3);
        assert_eq!(status.metadata.map(|m| m.attempt), Some(1));
        let logs = kubelet.logs(&running, &name).expect("logs of attempt 1");
        assert!(logs.contains("exiting with 3"), "{logs}");

        // Under `Never`, a failed container stays failed.
        pod.spec.restart_policy = Some("Never".into());
        let restarted = kubelet.sync(&pod, &mut running).await.expect("sync");
        assert!(restarted.is_empty(), "{restarted:?}");
        assert_eq!(running.containers[0].1, second);
        kubelet.remove(&running).await.expect("pod removed");
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_killed_shim_leaves_its_containers_exited_and_nothing_on_the_node() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let netns_before = netns();
        // A spinning guest with a CPU limit: its thread has cgroups of its
        // own, which only the shim removes.
        let mut pod = program_pod("shim-killed", "/loop.component.wasm", &[]);
        pod.spec.termination_grace_period_seconds = Some(5);
        pod.spec.containers[0].resources =
            serde_norway::from_str("limits: {cpu: 500m, memory: 64Mi}").expect("resources");
        let running = kubelet.run(&pod).await.expect("pod runs");
        let (name, id) = running.containers[0].clone();
        let shims = shims_of(&running.sandbox_id);
        assert_eq!(shims.len(), 1, "one shim serves the pod: {shims:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shims[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the shim");

        // containerd notices, runs the shim's `delete` in each bundle, and
        // the CRI reports the container exited: 255, containerd's status for
        // a task whose shim died (as for runc's), or the 137 of `delete`.
        let status = kubelet
            .wait_exited(&name, &id, Duration::from_secs(30))
            .await
            .expect("the container is reported exited");
        assert!(matches!(status.exit_code, 137 | 255), "{status:?}");
        kubelet.remove(&running).await.expect("pod removed");

        assert!(shims_of(&running.sandbox_id).is_empty(), "a shim is left");
        assert_eq!(
            netns(),
            netns_before,
            "the pod's network namespace was left"
        );
        let state = var("WASMPOD_STATE");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let left: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains(&running.sandbox_id) || l.contains(&id))
            .collect();
        assert!(left.is_empty(), "mounts left: {left:?}");
        for task in [&running.sandbox_id, &id] {
            let bundle = Path::new(&state)
                .join("io.containerd.runtime.v2.task")
                .join(CRI_NAMESPACE)
                .join(task);
            assert!(!bundle.exists(), "{} was left", bundle.display());
        }
        for controller in ["cpu", "cpuacct", "memory", "pids"] {
            let pod_cgroup = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(running.cgroup_parent.trim_start_matches('/'));
            assert!(!pod_cgroup.exists(), "{} was left", pod_cgroup.display());
        }
    });
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_containerd_restart_leaves_ten_pods_running_answering_and_logging() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let netns_before = netns();
        let mut pods = Vec::new();
        for n in 0..4 {
            let mut pod = Pod::example("http.yaml");
            pod.metadata.name = format!("restart-http-{n}");
            // Four pods cannot share one hostPort.
            for port in &mut pod.spec.containers[0].ports {
                port.host_port = None;
            }
            let running = kubelet.run(&pod).await.expect("HTTP pod runs");
            pods.push((pod, running));
        }
        for n in 0..6 {
            let pod = program_pod(&format!("restart-sleep-{n}"), "/sleep.component.wasm", &[]);
            let running = kubelet.run(&pod).await.expect("sleeping pod runs");
            pods.push((pod, running));
        }
        let http_pods = &pods[..4];
        for (pod, running) in http_pods {
            kubelet
                .wait_ready(pod, running, "web", Duration::from_secs(60))
                .await
                .expect("the HTTP pod turns ready");
        }

        // Requests on a keep-alive connection to each HTTP pod, from before
        // the restart until after it, and a slow one in flight across it.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counts: Vec<_> = http_pods
            .iter()
            .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0)))
            .collect();
        let answered_now = || -> Vec<u32> {
            counts
                .iter()
                .map(|c| c.load(std::sync::atomic::Ordering::SeqCst))
                .collect()
        };
        let load: Vec<_> = http_pods
            .iter()
            .zip(&counts)
            .map(|((_, running), count)| {
                let addr = SocketAddr::new(running.ip.parse().expect("pod IP"), 8080);
                let done = done.clone();
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut conn = http::Connection::open(addr, Duration::from_secs(10))?;
                    let (mut answered, started) = (0u32, Instant::now());
                    while !done.load(std::sync::atomic::Ordering::Relaxed)
                        && answered < 20_000
                        && started.elapsed() < Duration::from_secs(120)
                    {
                        let r = conn.get(&format!("/load/{answered}"), false)?;
                        if r.status != 200 {
                            return Err(std::io::Error::other(format!("{}: {}", r.status, r.body)));
                        }
                        answered += 1;
                        count.store(answered, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(answered)
                })
            })
            .collect();
        let slow_ip = http_pods[0].1.ip.clone();
        let slow = std::thread::spawn(move || http_get(&slow_ip, 8080, "/slow/3000"));
        tokio::time::sleep(Duration::from_millis(500)).await;

        let before_stop = answered_now();
        wasmpod_integration::stop_containerd(nix::sys::signal::Signal::SIGTERM);
        let stopped = answered_now();
        wasmpod_integration::start_containerd();
        let mut kubelet = crate::kubelet().await;
        // The CRI answers "not initialized yet" while it reloads its
        // containers; a kubelet retries.
        let first = &pods[0].1.containers[0].1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = kubelet.status(first).await {
            assert!(Instant::now() < deadline, "the CRI did not come back: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        for (_, running) in &pods {
            let (name, id) = &running.containers[0];
            let status = kubelet
                .status(id)
                .await
                .expect("the CRI knows the container");
            assert_eq!(
                status.state,
                ContainerState::ContainerRunning as i32,
                "{name} of {} after the restart: {status:?}",
                running.sandbox_id
            );
        }
        assert_eq!(
            slow.join().expect("thread").expect("the slow request"),
            (200, "hello from wasi:http /slow/3000\n".to_owned())
        );
        for (n, (_, running)) in http_pods.iter().enumerate() {
            let path = format!("/after-restart/{n}");
            let (code, _) = http_get(&running.ip, 8080, &path).expect("GET after the restart");
            assert_eq!(code, 200);
            // containerd reads the container's output again, into the same log.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let logs = kubelet.logs(running, "web").expect("logs");
                if logs.contains(&format!("handling GET {path}")) {
                    assert!(
                        logs.contains("handling GET /load/0"),
                        "the log lost its start"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "pod {n}'s log stopped at the restart:\n{logs}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for (n, load) in load.into_iter().enumerate() {
            let answered = load
                .join()
                .expect("thread")
                .expect("every request answered");
            assert!(answered > 0, "pod {n} answered nothing");
            // And the log has every request's line, those printed while
            // containerd was away included.
            let running = &http_pods[n].1;
            let last = format!("handling GET /load/{}\n", answered - 1);
            let deadline = Instant::now() + Duration::from_secs(10);
            let logs = loop {
                let logs = kubelet.logs(running, "web").expect("logs");
                if logs.contains(&last) || Instant::now() >= deadline {
                    break logs;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            // Lines containerd had read from the pipe but not yet written
            // when it went down are its own to lose (seen on 1.6.20: one
            // line); the shim keeps every line it has not read. So only
            // lines printed from just before the SIGTERM until containerd
            // had stopped may be missing, never one printed after.
            let window = before_stop[n].saturating_sub(1)..=stopped[n];
            let lost: Vec<u32> = (0..answered)
                .filter(|k| !logs.contains(&format!("handling GET /load/{k}\n")))
                .collect();
            if !lost.is_empty() {
                eprintln!(
                    "pod {n}: containerd lost lines {lost:?} while stopping (window {window:?})"
                );
            }
            assert!(
                lost.iter().all(|k| window.contains(k)),
                "pod {n}'s log lost requests {lost:?}, outside the window {window:?} in which containerd stopped"
            );
        }

        for (_, running) in &pods {
            kubelet
                .remove(running)
                .await
                .expect("pod removed after the restart");
            assert!(shims_of(&running.sandbox_id).is_empty(), "a shim is left");
        }
        assert_eq!(netns(), netns_before, "a network namespace was left");
    });
}

/// The pids of the shims serving the pod sandbox `sandbox_id`.
fn shims_of(sandbox_id: &str) -> Vec<u32> {
    wasmpod_integration::shims(|args| args.windows(2).any(|w| w[0] == "-id" && w[1] == sandbox_id))
}

/// The hello pod, named `name`, running `program` of the test image.
fn program_pod(name: &str, program: &str, args: &[&str]) -> Pod {
    let mut pod = Pod::example("hello.yaml");
    pod.metadata.name = name.into();
    let c = &mut pod.spec.containers[0];
    c.image = "docker.io/wasmpod/test-programs:latest".into();
    c.command = vec![program.into()];
    c.args = args.iter().map(|a| (*a).to_owned()).collect();
    pod
}

/// `path` without its leading `/`.
fn rel(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_owned()
}

/// Runs `net.component.wasm` (test/wasm/python/net.py) with `ops`, and with
/// `annotations` on the pod; returns its status, logs and pod IP. `while_running`
/// is called with the pod IP as soon as the pod runs.
async fn run_net_pod(
    kubelet: &mut Kubelet,
    name: &str,
    ops: &[&str],
    annotations: &[(&str, String)],
    while_running: impl AsyncFnOnce(&str),
) -> (ContainerStatus, String, String) {
    let mut pod = program_pod(name, "/net.component.wasm", ops);
    for (k, v) in annotations {
        pod.metadata.annotations.insert((*k).to_owned(), v.clone());
    }
    let running = kubelet.run(&pod).await.expect("pod runs");
    while_running(&running.ip).await;
    let (name, id) = running.containers[0].clone();
    let status = kubelet
        .wait_exited(&name, &id, Duration::from_secs(60))
        .await
        .expect("the container exits");
    let logs = kubelet.logs(&running, &name).expect("logs");
    kubelet.remove(&running).await.expect("pod removed");
    (status, logs, running.ip.clone())
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn sockets_are_denied_without_a_grant_and_allowed_by_annotations() {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};

    block_on(async {
        let mut kubelet = kubelet().await;
        // A TCP listener and a UDP socket on the node, which pods reach
        // through their bridge's address.
        let gateway = var("WASMPOD_POD_GATEWAY");
        let tcp = TcpListener::bind("0.0.0.0:0").expect("tcp listener");
        tcp.set_nonblocking(true).expect("nonblocking");
        let udp = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        udp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let tcp_port = tcp.local_addr().expect("addr").port().to_string();
        let udp_port = udp.local_addr().expect("addr").port().to_string();
        let ops = [
            "listen",
            "8080",
            "connect",
            &gateway,
            &tcp_port,
            "udp",
            &gateway,
            &udp_port,
            "lookup",
            "localhost",
            "accept",
        ];
        let connect = format!("{gateway}:{tcp_port}");
        let send = format!("{gateway}:{udp_port}");

        // No annotation: every use is refused, and the guest's log says
        // which annotation would have granted it.
        let (status, logs, _) =
            run_net_pod(&mut kubelet, "no-sockets", &ops, &[], async |_| {}).await;
        assert_eq!(status.exit_code, 0, "{logs}");
        assert_eq!(line(&logs, "listen 8080"), "error access-denied");
        assert_eq!(
            line(&logs, &format!("connect {connect}")),
            "error access-denied"
        );
        assert_eq!(line(&logs, &format!("udp {send}")), "error access-denied");
        assert_eq!(
            line(&logs, "lookup localhost"),
            "error permanent-resolver-failure"
        );
        for denial in [
            "wasmpod: denied: TCP bind to port 8080; the pod annotation wasmpod.dev/tcp-listen: \"8080\" would grant it".to_owned(),
            format!("wasmpod: denied: TCP connect to {connect}; the pod annotation wasmpod.dev/tcp-connect: \"{connect}\" would grant it"),
            format!("wasmpod: denied: UDP send to {send}; the pod annotation wasmpod.dev/udp-connect: \"{send}\" would grant it"),
        ] {
            assert!(logs.lines().any(|l| l.ends_with(&denial)), "no {denial:?} in:\n{logs}");
        }
        assert_eq!(
            tcp.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::WouldBlock)
        );

        // Granted: the guest listens in its pod's network namespace, where
        // the node reaches it at the pod IP, and connects and sends out.
        let grants = [
            ("wasmpod.dev/tcp-listen", "8080".to_owned()),
            (
                "wasmpod.dev/tcp-connect",
                format!("{gateway}/32:{tcp_port}"),
            ),
            ("wasmpod.dev/udp-connect", send.clone()),
            ("wasmpod.dev/dns", "true".to_owned()),
        ];
        let (status, logs, ip) =
            run_net_pod(&mut kubelet, "sockets", &ops, &grants, async |ip: &str| {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut stream = loop {
                    match TcpStream::connect((ip, 8080)) {
                        Ok(s) => break s,
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("the guest's listener at {ip}:8080: {e}"),
                    }
                };
                let mut greeting = String::new();
                stream.read_to_string(&mut greeting).expect("read");
                assert_eq!(greeting, "hello from wasm\n");
                let _ = stream.write_all(b"bye");
            })
            .await;
        assert_eq!(status.exit_code, 0, "{logs}");
        assert!(!logs.contains("wasmpod: denied"), "{logs}");
        assert_eq!(line(&logs, "listen 8080"), "ok");
        assert_eq!(line(&logs, &format!("connect {connect}")), "ok");
        assert_eq!(line(&logs, &format!("udp {send}")), "ok");
        assert!(
            line(&logs, "lookup localhost").contains("127.0.0.1"),
            "{logs}"
        );
        assert_eq!(line(&logs, "accept"), "ok");
        // The node saw the guest's connection and datagram come from the pod.
        tcp.set_nonblocking(false).expect("blocking");
        let (mut conn, peer) = tcp.accept().expect("the guest's connection");
        assert_eq!(peer.ip().to_string(), ip);
        let mut greeting = String::new();
        conn.read_to_string(&mut greeting).expect("read");
        assert_eq!(greeting, "hello from wasm\n");
        let mut buf = [0u8; 64];
        let (n, from) = udp.recv_from(&mut buf).expect("the guest's datagram");
        assert_eq!(&buf[..n], b"hello from wasm");
        assert_eq!(from.ip().to_string(), ip);
    });
}

/// GET `path` from `ip:port`; the status code and the body.
fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let ip = ip.parse().map_err(std::io::Error::other)?;
    let r = http::get(SocketAddr::new(ip, port), path, Duration::from_secs(30))?;
    Ok((r.status, r.body))
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_wasi_http_pod_answers_logs_and_drains_on_stop() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let pod = Pod::example("http.yaml");
        let running = kubelet.run(&pod).await.expect("pod runs");
        let (name, id) = running.containers[0].clone();
        let ip = running.ip.clone();
        // The kubelet's readiness probe (httpGet on the named port 8080:
        // no PORT, no annotation) from the node, to the pod IP.
        kubelet
            .wait_ready(&pod, &running, &name, Duration::from_secs(30))
            .await
            .expect("the pod turns ready");
        let c = &pod.spec.containers[0];
        let (ready, live) = (
            c.readiness_probe.clone().expect("readiness probe"),
            c.liveness_probe.clone().expect("liveness probe"),
        );
        for probe in [&ready, &live] {
            for from in [Vantage::Node, Vantage::Pod] {
                let outcome = kubelet.probe(&pod, &running, &name, probe, from).await;
                assert_eq!(
                    outcome.expect("probe"),
                    Outcome::Success,
                    "{probe:?} {from:?}"
                );
            }
        }
        // Nothing listens on 9 inside the pod, and exec is not for Wasm.
        let mut closed = live.clone();
        closed.tcp_socket = Some(TcpSocketAction {
            port: PortRef::Number(9),
        });
        let outcome = kubelet
            .probe(&pod, &running, &name, &closed, Vantage::Pod)
            .await;
        assert!(
            matches!(outcome.expect("probe"), Outcome::Failure(ref why) if why.contains("127.0.0.1:9")),
            "a probe of a closed port succeeded"
        );
        let mut exec = live.clone();
        exec.tcp_socket = None;
        exec.exec = Some(ExecAction {
            command: vec!["cat".into(), "/tmp/healthy".into()],
        });
        match kubelet
            .probe(&pod, &running, &name, &exec, Vantage::Node)
            .await
        {
            Ok(Outcome::Failure(why)) => {
                assert!(why.contains("not supported for Wasm containers"), "{why}")
            }
            other => panic!("an exec probe gave {other:?}"),
        }
        let first = http_get(&ip, 8080, "/first").expect("GET /first");
        assert_eq!(first, (200, "hello from wasi:http /first\n".to_owned()));
        // Every request's instance gives its memory back: far more requests
        // than fit in the 256Mi limit at once are all answered.
        let addr = SocketAddr::new(ip.parse().expect("pod IP"), 8080);
        let mut conn = http::Connection::open(addr, Duration::from_secs(30)).expect("connect");
        for n in 0..60 {
            let r = conn.get(&format!("/n/{n}"), false).expect("keep-alive GET");
            assert_eq!(r.status, 200, "request {n}: {}", r.body);
        }
        drop(conn);
        // hostPort 18080 on the node forwards to the pod (CNI portmap).
        let gateway = var("WASMPOD_POD_GATEWAY");
        let published = http_get(&gateway, 18080, "/via-host-port").expect("GET via hostPort");
        assert_eq!(
            published,
            (200, "hello from wasi:http /via-host-port\n".to_owned())
        );
        // Outgoing HTTP to a host the annotation does not name is refused.
        let (code, body) = http_get(&ip, 8080, &format!("/fetch/{gateway}:9")).expect("fetch");
        assert_eq!(code, 200);
        assert_eq!(
            body,
            format!("fetch {gateway}:9: error HttpRequestDenied\n")
        );

        // A slow request in flight when StopContainer comes is answered,
        // then the container exits 0.
        let slow_ip = ip.clone();
        let slow = std::thread::spawn(move || http_get(&slow_ip, 8080, "/slow/1500"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        kubelet.stop(&id, running.grace).await.expect("stop");
        let took = started.elapsed();
        let answer = slow.join().expect("thread").expect("the slow request");
        assert_eq!(
            answer,
            (200, "hello from wasi:http /slow/1500\n".to_owned())
        );
        let status = kubelet
            .wait_exited(&name, &id, Duration::from_secs(5))
            .await
            .expect("exited");
        assert_eq!(status.exit_code, 0, "drained, then exited 0");
        assert!(took < running.grace, "StopContainer took {took:?}");
        let logs = kubelet.logs(&running, &name).expect("logs");
        kubelet.remove(&running).await.expect("pod removed");
        for line in [
            "handling GET /healthz",
            "handling GET /first",
            "handling GET /slow/1500",
        ] {
            assert!(logs.contains(line), "no {line:?} in:\n{logs}");
        }
        assert!(
            logs.contains(&format!("wasmpod: denied: HTTP request to {gateway}:9; the pod annotation wasmpod.dev/http-connect: \"{gateway}\" would grant it")),
            "{logs}"
        );
    });
}

/// A wasi:http app with two Linux containers beside it (test/cri/sidecar.c):
/// a proxy to the app on 127.0.0.1, and one that reports the pod's hostname.
const SIDECAR_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sidecar
spec:
  runtimeClassName: wasmpod
  terminationGracePeriodSeconds: 5
  containers:
    - name: app
      image: docker.io/wasmpod/test-programs:latest
      imagePullPolicy: IfNotPresent
      command: ["/http.component.wasm"]
    - name: proxy
      image: docker.io/wasmpod/sidecar:latest
      imagePullPolicy: IfNotPresent
      command: ["/sidecar", "proxy", "9000", "8080"]
    - name: uts
      image: docker.io/wasmpod/sidecar:latest
      imagePullPolicy: IfNotPresent
      command: ["/sidecar", "uts"]
"#;

/// The pids of the test sidecar's processes on the node.
fn sidecars() -> Vec<u32> {
    processes(|args| args.first().is_some_and(|a| a == "/sidecar"))
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "PPid:").parse().ok()
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn linux_sidecars_share_the_wasm_pods_network_and_leave_nothing_behind() {
    block_on(async {
        let mut kubelet = kubelet().await;
        assert!(sidecars().is_empty(), "a sidecar from before");
        let pod = Pod::from_yaml(SIDECAR_POD).expect("pod");
        let running = kubelet.run(&pod).await.expect("pod runs");
        let id_of = |name: &str| {
            running
                .containers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| id.clone())
                .expect("container")
        };
        // The node reaches the Wasm app through the Linux proxy, which
        // reaches it on the pod's 127.0.0.1.
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = loop {
            match http_get(&running.ip, 9000, "/via-sidecar") {
                Ok(answer) if answer.0 == 200 => break answer,
                other if Instant::now() > deadline => {
                    panic!("no answer via the sidecar: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        assert_eq!(answer.1, "hello from wasi:http /via-sidecar\n");

        // runc ran them; their processes are the shim's children.
        let shim = shims_of(&running.sandbox_id);
        assert_eq!(shim.len(), 1, "one shim serves the pod: {shim:?}");
        let pids = sidecars();
        assert_eq!(pids.len(), 2, "two sidecar processes: {pids:?}");
        for pid in &pids {
            assert_eq!(parent_of(*pid), Some(shim[0]), "sidecar {pid}'s parent");
        }
        // Each has a cgroup of its own, in the pod's.
        for pid in &pids {
            let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
            assert!(
                cgroups.contains(&running.cgroup_parent),
                "sidecar {pid} is outside the pod's cgroup {}: {cgroups}",
                running.cgroup_parent
            );
        }
        let stats = kubelet.stats(&id_of("proxy")).await.expect("stats");
        let memory = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map_or(0, |v| v.value);
        assert!(memory > 0, "the proxy's memory: {stats:?}");

        // Logs as for any container; the pod's hostname in its UTS namespace.
        let deadline = Instant::now() + Duration::from_secs(10);
        let uts = loop {
            let logs = kubelet.logs(&running, "uts").expect("logs");
            if !logs.is_empty() || Instant::now() > deadline {
                break logs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(uts, "hostname sidecar\n");
        let proxy = kubelet.logs(&running, "proxy").expect("logs");
        assert!(
            proxy.contains("proxying :9000 to 127.0.0.1:8080"),
            "{proxy}"
        );
        assert!(proxy.contains("connection forwarded"), "{proxy}");

        // `kubectl exec` into a Linux container runs there (runc exec),
        // with its output and exit code; into the Wasm app it is refused.
        let proxy_id = id_of("proxy");
        let wrote = kubelet
            .exec_sync(&proxy_id, &["/sidecar", "write", "/from-exec", "hi"])
            .await
            .expect("exec");
        assert_eq!(wrote, (0, "wrote /from-exec\n".to_owned()));
        let (code, said) = kubelet
            .exec_sync(&proxy_id, &["/sidecar", "write", "/no/dir/file", "hi"])
            .await
            .expect("exec");
        assert_eq!(code, 1, "{said}");
        assert!(
            said.contains("/no/dir/file: No such file or directory"),
            "{said}"
        );
        let refused = kubelet
            .exec_sync(&id_of("app"), &["/sidecar", "uts"])
            .await
            .expect_err("exec into Wasm is refused");
        assert!(
            refused
                .to_string()
                .contains("not supported for Wasm containers"),
            "{refused}"
        );

        // SIGTERM ends the proxy cleanly; its exit is reported.
        kubelet.stop(&proxy_id, running.grace).await.expect("stop");
        let status = kubelet
            .wait_exited("proxy", &proxy_id, Duration::from_secs(10))
            .await
            .expect("exited");
        assert_eq!(status.exit_code, 0);
        let app = kubelet.status(&id_of("app")).await.expect("status");
        assert_eq!(
            app.state,
            ContainerState::ContainerRunning as i32,
            "the app runs on"
        );

        kubelet.remove(&running).await.expect("pod removed");
        assert!(
            sidecars().is_empty(),
            "sidecar processes left: {:?}",
            sidecars()
        );
        assert!(shims_of(&running.sandbox_id).is_empty(), "a shim is left");
        let state = var("WASMPOD_STATE");
        for (_, id) in &running.containers {
            let bundle = Path::new(&state)
                .join("io.containerd.runtime.v2.task")
                .join(CRI_NAMESPACE)
                .join(id);
            assert!(!bundle.exists(), "{} was left", bundle.display());
        }
        for controller in ["cpu", "memory", "pids"] {
            let pod_cgroup = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(running.cgroup_parent.trim_start_matches('/'));
            assert!(!pod_cgroup.exists(), "{} was left", pod_cgroup.display());
        }
    });
}

/// How often the containerd log has `needle` (the shims log to it).
fn count_in_log(needle: &str) -> usize {
    std::fs::read_to_string(var("WASMPOD_CONTAINERD_LOG"))
        .expect("containerd log")
        .matches(needle)
        .count()
}

/// Removes every entry of the compiled-code cache: a node that has compiled
/// nothing.
fn clear_code_cache(cache: &Path) {
    if let Ok(entries) = std::fs::read_dir(cache) {
        for entry in entries {
            let path = entry.expect("cache entry").path();
            if path.is_file() {
                std::fs::remove_file(path).expect("clear the cache");
            }
        }
    }
}

/// Compile processes of the shim still running: their pids.
fn compile_processes() -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-f", "containerd-shim-wasmpod-v1 compile "])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether process `pid` holds a capability or may gain privileges; `None`
/// once it is gone.
fn privileged(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status_field(&status, name);
    Some(
        ["CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
            .iter()
            .any(|f| !field(f).trim_start_matches('0').is_empty())
            || field("NoNewPrivs:") != "1",
    )
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn a_first_server_answers_on_baseline_code_then_runs_optimised_code() {
    const BASELINE: &str = "compiled by the baseline compiler";
    const READY: &str = "optimised code ready: the next requests run it";
    const COMPILED: &str = "compile process done";
    // Cranelift on two busy cores: well under a minute.
    const COMPILE_WITHIN: Duration = Duration::from_secs(120);
    let cache = PathBuf::from(var("WASMPOD_WASM_CACHE"));
    clear_code_cache(&cache);
    block_on(async {
        let mut kubelet = kubelet().await;
        let pod = Pod::example("http.yaml");
        let (baseline, ready, compiled) = (
            count_in_log(BASELINE),
            count_in_log(READY),
            count_in_log(COMPILED),
        );
        let running = kubelet.run(&pod).await.expect("pod runs");
        let (name, _) = running.containers[0].clone();
        assert_eq!(count_in_log(BASELINE), baseline + 1, "no baseline compile");
        kubelet
            .wait_ready(&pod, &running, &name, Duration::from_secs(30))
            .await
            .expect("the pod turns ready on baseline code");
        let ip = running.ip.clone();
        assert_eq!(
            http_get(&ip, 8080, "/early").expect("GET /early"),
            (200, "hello from wasi:http /early\n".to_owned())
        );
        let deadline = Instant::now() + COMPILE_WITHIN;
        while count_in_log(READY) == ready {
            assert!(Instant::now() < deadline, "the optimised code never came");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            count_in_log(COMPILED),
            compiled + 1,
            "not compiled by a compile process"
        );
        assert_eq!(
            http_get(&ip, 8080, "/later").expect("GET /later"),
            (200, "hello from wasi:http /later\n".to_owned())
        );
        assert_eq!(
            cached_programs(&cache),
            1,
            "the optimised code is not cached"
        );
        kubelet.remove(&running).await.expect("pod removed");

        // The next pod loads the optimised code: no baseline compile.
        let running = kubelet.run(&pod).await.expect("second pod runs");
        let (name, _) = running.containers[0].clone();
        kubelet
            .wait_ready(&pod, &running, &name, Duration::from_secs(30))
            .await
            .expect("the second pod turns ready");
        assert_eq!(
            http_get(&running.ip, 8080, "/second").expect("GET /second"),
            (200, "hello from wasi:http /second\n".to_owned())
        );
        assert_eq!(
            count_in_log(BASELINE),
            baseline + 1,
            "the second pod compiled"
        );
        kubelet.remove(&running).await.expect("second pod removed");

        // A first pod that is gone before its optimised code is ready: the
        // compile process finishes the entry anyway, then ends.
        clear_code_cache(&cache);
        let running = kubelet.run(&pod).await.expect("short pod runs");
        let (name, _) = running.containers[0].clone();
        kubelet
            .wait_ready(&pod, &running, &name, Duration::from_secs(30))
            .await
            .expect("the short pod turns ready");
        kubelet.remove(&running).await.expect("short pod removed");
        let compiling = compile_processes();
        assert!(
            cached_programs(&cache) > 0 || !compiling.is_empty(),
            "nothing cached and no compile process left running"
        );
        for pid in compiling {
            assert_ne!(
                privileged(pid),
                Some(true),
                "compile process {pid} holds a capability or may gain one"
            );
        }
        assert_eq!(
            count_in_log(BASELINE),
            baseline + 2,
            "the short pod did not start on baseline code"
        );
        let deadline = Instant::now() + COMPILE_WITHIN;
        while cached_programs(&cache) == 0 || !compile_processes().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the compile ended with the pod: {} cached, {:?} compiling",
                cached_programs(&cache),
                compile_processes()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
