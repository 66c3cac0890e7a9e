//! Pods through containerd's CRI plugin, driven by a test kubelet
//! ([`wasmpod_integration::kubelet`]) from the YAML in `deploy/examples/`.
//!
//! Run by `make test` (test/integration.sh), which starts containerd with
//! its CRI plugin, the `wasmpod` runtime handler and a CNI bridge.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use wasmpod_integration::kubelet::Kubelet;
use wasmpod_integration::pod::Pod;
use wasmpod_integration::{ok, var};

/// The namespace containerd's CRI plugin keeps its images and pods in.
const CRI_NAMESPACE: &str = "k8s.io";

fn example(name: &str) -> Pod {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example pod");
    Pod::from_yaml(&text).expect("a pod manifest")
}

/// Imports the sandbox and test images into the CRI's namespace, once.
fn images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let fixtures = PathBuf::from(var("WASMPOD_FIXTURES"));
        for tar in ["pause.tar", "hello.tar", "hello-native.tar"] {
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
/// must leave no network namespace behind.
async fn run_to_completion(kubelet: &mut Kubelet, pod: &Pod) -> (i32, String) {
    let before = netns();
    let running = kubelet.run(pod).await.expect("pod runs");
    assert!(!running.ip.is_empty(), "the pod got no IP");
    let (name, id) = running.containers[0].clone();
    let status = kubelet
        .wait_exited(&name, &id, Duration::from_secs(30))
        .await
        .expect("the container exits");
    let logs = kubelet.logs(&running, &name).expect("logs");
    kubelet.remove(&running).await.expect("pod removed");
    assert_eq!(netns(), before, "the pod's network namespace was left");
    (status.exit_code, logs)
}

#[test]
#[ignore = "needs containerd with its CRI plugin: run `make test`"]
fn hello_pod_logs_its_args_and_env() {
    block_on(async {
        let mut kubelet = kubelet().await;
        let (code, logs) = run_to_completion(&mut kubelet, &example("hello.yaml")).await;
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
        let (code, logs) = run_to_completion(&mut kubelet, &example("hello-native.yaml")).await;
        assert_eq!(code, 0, "{logs}");
        assert!(logs.contains("argv[1]=from-runc"), "{logs}");
        assert!(logs.contains("GREETING=default"), "{logs}");
        let (code, logs) = run_to_completion(&mut kubelet, &example("hello.yaml")).await;
        assert_eq!(code, 0, "{logs}");
        assert!(logs.contains("argv[1]=from-a-pod"), "{logs}");
    });
}
