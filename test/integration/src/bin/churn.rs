//! `churn [N] [P]`: task churn through containerd's API as the CRI drives it,
//! the churn part of `make bench`. Against the containerd that
//! test/containerd.sh started (its `env` in the environment, and
//! `WASMPOD_FIXTURES`), runs N hello containers with P at a time, each
//! through snapshot prepare, container create, task create, start, wait,
//! task delete, snapshot remove and container delete: the hello component
//! under wasmpod and the same program built natively under runc, in
//! alternating rounds. Prints a Markdown table of tasks per second and the
//! latency of one task's whole life, then checks that no shim, mount,
//! cgroup or snapshot of the churn is left on the node (exit 1 if one is).

use std::error::Error;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    ListSnapshotsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetImageRequest, KillRequest, ReadContentRequest, StartRequest, WaitRequest,
};
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;
use sha2::{Digest, Sha256};
use wasmpod_integration::var;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The churn's own namespace: what is left in it after a run is a leak.
const NAMESPACE: &str = "wasmpod-churn";
const SNAPSHOTTER: &str = "overlayfs";
/// Alternating rounds of each runtime.
const ROUNDS: usize = 2;
/// A task that has not ended after this long is a hang.
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

/// One runtime's side of the churn.
struct Side {
    label: &'static str,
    runtime: &'static str,
    image: &'static str,
    archive: &'static str,
    args: &'static [&'static str],
}

const SIDES: [Side; 2] = [
    Side {
        label: "runc, native static hello",
        runtime: "io.containerd.runc.v2",
        image: "docker.io/wasmpod/hello-native:latest",
        archive: "hello-native.tar",
        args: &["/hello"],
    },
    Side {
        label: "wasmpod, hello component",
        runtime: wasmpod_integration::RUNTIME,
        image: "docker.io/wasmpod/hello:latest",
        archive: "hello.tar",
        args: &["/hello.wasm"],
    },
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let (n, p) = match (args.next(), args.next()) {
        (None, _) => (200, 4),
        (Some(Ok(n)), None) => (n, 4),
        (Some(Ok(n)), Some(Ok(p))) if n > 0 && p > 0 => (n, p),
        _ => {
            eprintln!("usage: churn [N] [P]");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|rt| rt.block_on(churn(n, p)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("churn: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn churn(n: usize, p: usize) -> Result<()> {
    let address = var("WASMPOD_ADDRESS");
    let channel = containerd_client::connect(&address).await?;
    let spec = default_spec()?;
    let mut parents = Vec::new();
    for side in &SIDES {
        wasmpod_integration::import_fixture(NAMESPACE, side.archive)?;
        parents.push(chain_id(&channel, side.image).await?);
    }
    // Warm: the shim binaries and the images in the page cache, Wasm's
    // compiled code in its cache.
    for (side, parent) in SIDES.iter().zip(&parents) {
        round(&channel, &spec, side, parent, 2 * p, p, "warm").await?;
    }
    let mut rates = vec![Vec::new(); SIDES.len()];
    let mut tasks: Vec<Vec<Laps>> = SIDES.iter().map(|_| Vec::new()).collect();
    for r in 0..ROUNDS {
        for (i, (side, parent)) in SIDES.iter().zip(&parents).enumerate() {
            let started = Instant::now();
            let done = round(&channel, &spec, side, parent, n, p, &format!("r{r}")).await?;
            rates[i].push(n as f64 / started.elapsed().as_secs_f64());
            tasks[i].extend(done);
        }
    }
    let left = leftovers(&channel, &address).await?;

    println!(
        "Task churn through containerd's API as the CRI drives it ({n} tasks, {p} at a time, \
         {ROUNDS} alternating rounds per runtime): snapshot prepare, container create, task \
         create, start, wait, task delete, snapshot remove, container delete"
    );
    println!();
    println!("| runtime | tasks/s (best round) | tasks/s (worst) | p50 ms | p99 ms | vs runc |");
    println!("|---|---:|---:|---:|---:|---:|");
    let runc_rate = best(&rates[0]);
    for (i, side) in SIDES.iter().enumerate() {
        let lat = sorted(tasks[i].iter().map(Laps::total));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            side.label,
            best(&rates[i]),
            rates[i].iter().copied().fold(f64::INFINITY, f64::min),
            pct(&lat, 50.0),
            pct(&lat, 99.0),
            best(&rates[i]) / runc_rate
        );
    }
    println!();
    println!("Where a task's time goes, p50 ms of each step");
    println!();
    println!("| step | runc | wasmpod |");
    println!("|---|---:|---:|");
    let steps: Vec<&str> = tasks[0]
        .first()
        .map(|t| t.laps.iter().map(|(step, _)| *step).collect())
        .unwrap_or_default();
    for step in steps {
        let of = |i: usize| {
            let ms = sorted(
                tasks[i]
                    .iter()
                    .flat_map(|t| t.laps.iter().filter(|(s, _)| *s == step).map(|(_, ms)| *ms)),
            );
            pct(&ms, 50.0)
        };
        println!("| {step} | {:.1} | {:.1} |", of(0), of(1));
    }
    if left.is_empty() {
        println!();
        println!("Left on the node after the churn: no shim, mount, cgroup or snapshot.");
        Ok(())
    } else {
        Err(format!("the churn left: {}", left.join("; ")).into())
    }
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

fn best(rates: &[f64]) -> f64 {
    rates.iter().copied().fold(0.0, f64::max)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs `n` tasks of `side`, `p` at a time: the ms of each.
async fn round(
    channel: &Channel,
    spec: &serde_json::Value,
    side: &Side,
    parent: &str,
    n: usize,
    p: usize,
    tag: &str,
) -> Result<Vec<Laps>> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..p {
        let (channel, next, spec) = (channel.clone(), next.clone(), spec.clone());
        let (runtime, image, args, parent) =
            (side.runtime, side.image, side.args, parent.to_owned());
        let prefix = format!(
            "churn-{}-{}-{tag}",
            std::process::id(),
            side.label.split(',').next().unwrap_or("x")
        );
        workers.spawn(async move {
            let mut ms = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, Box<dyn Error + Send + Sync>>(ms);
                }
                let id = format!("{prefix}-{i}");
                let task = Task {
                    channel: &channel,
                    id: &id,
                    runtime,
                    image,
                    parent: &parent,
                };
                let done = tokio::time::timeout(TASK_TIMEOUT, task.run(&spec, args))
                    .await
                    .map_err(|_| format!("{id}: not done within {TASK_TIMEOUT:?}").into())
                    .and_then(|done| done);
                match done {
                    Ok(laps) => ms.push(laps),
                    Err(e) => {
                        task.clean_up().await;
                        return Err(e);
                    }
                }
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(done) = workers.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// The ms of each step of a task, in order.
struct Laps {
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Laps {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        self.laps
            .push((step, (now - self.last).as_secs_f64() * 1000.0));
        self.last = now;
    }

    fn total(&self) -> f64 {
        self.laps.iter().map(|(_, ms)| ms).sum()
    }
}

/// One container's life, as the CRI runs it.
struct Task<'a> {
    channel: &'a Channel,
    id: &'a str,
    runtime: &'a str,
    image: &'a str,
    parent: &'a str,
}

fn ns<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("containerd-namespace", NAMESPACE.parse().expect("ASCII"));
    req
}

/// `message` under lease `lease` too, which keeps what it makes from
/// containerd's garbage collector until something references it.
fn leased<T>(message: T, lease: &str) -> Request<T> {
    let mut req = ns(message);
    req.metadata_mut()
        .insert("containerd-lease", lease.parse().expect("ASCII"));
    req
}

impl Task<'_> {
    /// The task's life: the ms of each step.
    async fn run(&self, template: &serde_json::Value, args: &[&str]) -> Result<Laps> {
        let id = self.id.to_owned();
        let mut laps = Laps::new();
        let mut leases = LeasesClient::new(self.channel.clone());
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mut containers = ContainersClient::new(self.channel.clone());
        let mut tasks = TasksClient::new(self.channel.clone());
        // As containerd's client makes a container: the new snapshot under
        // a lease until the container record holds it.
        leases
            .create(ns(CreateLeaseRequest {
                id: id.clone(),
                ..Default::default()
            }))
            .await?;
        let mounts = snapshots
            .prepare(leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                    parent: self.parent.into(),
                    ..Default::default()
                },
                &id,
            ))
            .await?
            .into_inner()
            .mounts;
        laps.lap("snapshot prepare (under a lease)");
        let mut spec = template.clone();
        spec["process"]["args"] = serde_json::json!(args);
        spec["linux"]["cgroupsPath"] = format!("/{NAMESPACE}/{id}").into();
        containers
            .create(leased(
                CreateContainerRequest {
                    container: Some(Container {
                        id: id.clone(),
                        image: self.image.into(),
                        runtime: Some(Runtime {
                            name: self.runtime.into(),
                            options: None,
                        }),
                        spec: Some(prost_types::Any {
                            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec"
                                .into(),
                            value: serde_json::to_vec(&spec)?,
                        }),
                        snapshotter: SNAPSHOTTER.into(),
                        snapshot_key: id.clone(),
                        ..Default::default()
                    }),
                },
                &id,
            ))
            .await?;
        leases
            .delete(ns(DeleteLeaseRequest {
                id: id.clone(),
                sync: false,
            }))
            .await?;
        laps.lap("container create");
        tasks
            .create(ns(CreateTaskRequest {
                container_id: id.clone(),
                rootfs: mounts,
                ..Default::default()
            }))
            .await?;
        laps.lap("task create (the shim starts)");
        tasks
            .start(ns(StartRequest {
                container_id: id.clone(),
                ..Default::default()
            }))
            .await?;
        laps.lap("task start");
        let status = tasks
            .wait(ns(WaitRequest {
                container_id: id.clone(),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .exit_status;
        laps.lap("wait for the exit");
        tasks
            .delete(ns(DeleteTaskRequest {
                container_id: id.clone(),
            }))
            .await?;
        laps.lap("task delete (the shim ends)");
        // The snapshot before the container, as containerd's client does:
        // once the record is gone the collector may take it first.
        snapshots
            .remove(ns(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.clone(),
            }))
            .await?;
        containers
            .delete(ns(DeleteContainerRequest { id: id.clone() }))
            .await?;
        laps.lap("snapshot remove, container delete");
        if status != 0 {
            return Err(format!("{id} exited with {status}").into());
        }
        Ok(laps)
    }
}

impl Task<'_> {
    /// What a failed task left, as far as it goes: nothing of it must
    /// outlive the run.
    async fn clean_up(&self) {
        let id = self.id.to_owned();
        let mut tasks = TasksClient::new(self.channel.clone());
        let _ = tasks
            .kill(ns(KillRequest {
                container_id: id.clone(),
                signal: 9,
                all: true,
                ..Default::default()
            }))
            .await;
        let _ = tasks
            .delete(ns(DeleteTaskRequest {
                container_id: id.clone(),
            }))
            .await;
        let _ = SnapshotsClient::new(self.channel.clone())
            .remove(ns(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.clone(),
            }))
            .await;
        let _ = ContainersClient::new(self.channel.clone())
            .delete(ns(DeleteContainerRequest { id: id.clone() }))
            .await;
        let _ = LeasesClient::new(self.channel.clone())
            .delete(ns(DeleteLeaseRequest { id, sync: false }))
            .await;
    }
}

/// containerd's default Linux spec (`ctr oci spec`), which each task
/// completes with its args and cgroup.
fn default_spec() -> Result<serde_json::Value> {
    let out = Command::new(var("WASMPOD_CTR"))
        .args(["oci", "spec"])
        .output()?;
    if !out.status.success() {
        return Err(format!("ctr oci spec: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The image's unpacked snapshot, a new container's parent: the chain of
/// its layers' diff IDs, from its config in containerd's content store.
async fn chain_id(channel: &Channel, image: &str) -> Result<String> {
    let target = ImagesClient::new(channel.clone())
        .get(ns(GetImageRequest { name: image.into() }))
        .await?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| format!("{image}: no target"))?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&read(channel, &target.digest).await?)?;
    if let Some(manifests) = manifest["manifests"].as_array() {
        // An index: the first manifest for this machine.
        let digest = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == oci_arch())
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| format!("{image}: no manifest for this machine"))?
            .to_owned();
        manifest = serde_json::from_slice(&read(channel, &digest).await?)?;
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| format!("{image}: manifest without config"))?;
    let config: serde_json::Value = serde_json::from_slice(&read(channel, config_digest).await?)?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| format!("{image}: config without diff_ids"))?;
    let mut chain: Option<String> = None;
    for diff in diff_ids {
        let diff = diff.as_str().ok_or("a diff_id that is not a string")?;
        chain = Some(match chain {
            None => diff.to_owned(),
            Some(parent) => format!("sha256:{:x}", Sha256::digest(format!("{parent} {diff}"))),
        });
    }
    chain.ok_or_else(|| format!("{image}: no layers").into())
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Pids of the shims (any runtime's) that containerd at `address` started
/// for containers whose id begins with `prefix`: each carries both in its
/// arguments.
fn shims_of(address: &str, prefix: &str) -> Vec<u32> {
    use wasmpod_integration::has_flag;
    wasmpod_integration::processes(|args| {
        args.first().is_some_and(|a| a.contains("containerd-shim"))
            && has_flag(args, "-address", |a| a == address)
            && has_flag(args, "-id", |id| id.starts_with(prefix))
    })
}

/// A blob of containerd's content store.
async fn read(channel: &Channel, digest: &str) -> Result<Vec<u8>> {
    let mut stream = ContentClient::new(channel.clone())
        .read(ns(ReadContentRequest {
            digest: digest.into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend(chunk.data);
    }
    Ok(bytes)
}

/// What the churn left: shims of this containerd, mounts and cgroups of
/// its tasks, snapshots in its namespace. Shims end just after their last
/// task's delete, so they get a moment.
async fn leftovers(channel: &Channel, address: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let shims = loop {
        let shims = shims_of(address, &format!("churn-{}-", std::process::id()));
        if shims.is_empty() || Instant::now() > deadline {
            break shims;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !shims.is_empty() {
        left.push(format!("shims {shims:?}"));
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains("churn-")).collect();
    if !ours.is_empty() {
        left.push(format!("mounts {ours:?}"));
    }
    for entry in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        let dir = entry.path().join(NAMESPACE);
        let inside: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !inside.is_empty() {
            left.push(format!("cgroups under {}: {inside:?}", dir.display()));
        }
    }
    let mut snapshots = SnapshotsClient::new(channel.clone())
        .list(ns(ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    while let Some(page) = snapshots.message().await? {
        for info in page.info {
            if info.name.starts_with("churn-") {
                left.push(format!("snapshot {}", info.name));
            }
        }
    }
    Ok(left)
}
