//! What the integration tests (in `tests/`) and the benchmark share: the
//! environment `make test` sets up, creating a container the way the CRI
//! does through containerd's API, and a driver that plays the kubelet
//! against containerd's CRI plugin ([`kubelet`], reading [`pod`] YAML).

pub mod http;
pub mod kubelet;
pub mod pod;
pub mod probe;
pub mod volumes;

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use containerd_client::services::v1::{
    Container, CreateContainerRequest, container::Runtime, containers_client::ContainersClient,
};
use containerd_client::tonic::Request;

/// The runtime type containerd knows the shim by.
pub const RUNTIME: &str = "io.containerd.wasmpod.v1";

/// A `WASMPOD_*` variable that test/integration.sh exports.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests need the private daemons `make test` starts")
    })
}

/// Command output as text, for assertions and messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `name` made unique within this test run (containers, images, repositories).
pub fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The stdout of a command that must have succeeded; otherwise a panic with
/// everything it said.
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The pids of the running processes whose command line (its arguments
/// in order) `matches`.
pub fn processes(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline.split(|&b| b == 0).map(text).collect();
            matches(&args)
        })
        .collect()
}

/// The pids of the running wasmpod shims whose command line `matches`:
/// containerd starts each with its `-address` and the `-id` of the pod's
/// first container.
pub fn shims(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    processes(|args| {
        args.first()
            .is_some_and(|a| a.ends_with("containerd-shim-wasmpod-v1"))
            && matches(args)
    })
}

/// Whether `args` has `flag` followed by a value that `value` accepts.
pub fn has_flag(args: &[String], flag: &str, value: impl Fn(&str) -> bool) -> bool {
    args.windows(2).any(|w| w[0] == flag && value(&w[1]))
}

/// Imports (and unpacks) the fixture image archive `archive` of
/// `WASMPOD_FIXTURES` into `namespace` of this suite's containerd.
pub fn import_fixture(namespace: &str, archive: &str) -> Result<(), String> {
    let path = std::path::Path::new(&var("WASMPOD_FIXTURES")).join(archive);
    let out = std::process::Command::new(var("WASMPOD_CTR"))
        .args(["-a", &var("WASMPOD_ADDRESS"), "-n", namespace])
        .args(["images", "import"])
        .arg(path)
        .output()
        .map_err(|e| format!("ctr images import {archive}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ctr images import {archive}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// How many compiled programs the cache at `dir` holds whole: code
/// (`.cwasm`) with its checksum (`.sum`, written after it), as a shim's
/// lookup finds them.
pub fn cached_programs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "cwasm") && p.with_extension("sum").exists()
            })
            .count()
    })
}

/// The value of `name` (as `CapEff:`) in a `/proc/PID/status` text; empty
/// if it has none.
pub fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map_or("", str::trim)
}

/// Sends `signal` to this suite's containerd (test/containerd.sh started it)
/// and waits, at most 20 s, until it is gone: SIGTERM as a service manager
/// stops it, SIGKILL as a crash does.
pub fn stop_containerd(signal: nix::sys::signal::Signal) {
    use nix::sys::signal::kill;
    let log = std::path::PathBuf::from(var("WASMPOD_CONTAINERD_LOG"));
    let pid: i32 = std::fs::read_to_string(log.with_file_name("containerd.pid"))
        .expect("containerd.pid")
        .trim()
        .parse()
        .expect("a pid");
    let pid = nix::unistd::Pid::from_raw(pid);
    kill(pid, signal).expect("signal containerd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while kill(pid, None).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "containerd did not stop on {signal}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Starts this suite's containerd again on the same root, state and
/// config, and returns once it answers.
pub fn start_containerd() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../containerd.sh");
    let out = std::process::Command::new(script)
        .args(["start", &var("WASMPOD_SUITE")])
        .output()
        .expect("containerd.sh runs");
    ok(&out, "containerd.sh start");
}

/// Creates container `id` of `image` with the OCI runtime `spec` (JSON) and
/// our runtime, through containerd's Containers API, as the CRI plugin
/// does. `ctr run` cannot stand in: it refuses the Wasm artifact's config
/// media type before any shim is involved.
pub fn create_container(
    address: &str,
    namespace: &str,
    id: &str,
    image: &str,
    spec: &serde_json::Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let container = Container {
        id: id.to_owned(),
        image: image.to_owned(),
        runtime: Some(Runtime {
            name: RUNTIME.to_owned(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".to_owned(),
            value: serde_json::to_vec(spec)?,
        }),
        ..Default::default()
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let channel = containerd_client::connect(address).await?;
            let mut req = Request::new(CreateContainerRequest {
                container: Some(container),
            });
            req.metadata_mut()
                .insert("containerd-namespace", namespace.parse()?);
            ContainersClient::new(channel).create(req).await?;
            Ok(())
        })
}
