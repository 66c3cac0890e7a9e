//! `cri-bench [RUNS]`: the CRI part of `make bench`. Against the containerd
//! that test/containerd.sh started (its `env` in the environment, and
//! `WASMPOD_FIXTURES`), plays the kubelet for the wasi:http pod of
//! deploy/examples/http.yaml and for its native twin (test/cri/http.c)
//! under runc, and prints Markdown tables:
//!
//! - pod start to first successful HTTP response (RunPodSandbox, image
//!   check, CreateContainer, StartContainer, then GET / until it answers);
//! - requests per second with a bounded load from the node: a fixed number
//!   of keep-alive connections, each sending a fixed number of requests;
//! - memory of an idle HTTP pod: the wasmpod shim, and runc's shim with its
//!   pause and server processes;
//! - where the start's time goes: each CRI call, and the wait for the
//!   first answer after StartContainer.
//!
//! `cri-bench --density [N] [NATIVE]` instead starts idle wasi:http pods
//! until N (500) and the native twin until NATIVE (100), and prints the
//! memory per pod and the start latency at 100, 250 and N.
//!
//! `cri-bench --one-pod` instead runs the wasi:http pod once, through a few
//! requests and a stop, on a warm cache: the pod's part of the workload that
//! test/hot-symbols.py profiles.

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wasmpod_integration::http::{self, Connection};
use wasmpod_integration::kubelet::{Kubelet, RunningPod};
use wasmpod_integration::pod::Pod;
use wasmpod_integration::{cached_programs, var};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Keep-alive connections of the load.
const CONNECTIONS: usize = 4;
/// Requests each connection sends.
const REQUESTS_PER_CONNECTION: usize = 500;
/// Idle pods whose memory is averaged.
const IDLE_PODS: usize = 3;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Box::<dyn Error>::from)
        .and_then(|rt| match arg.as_deref() {
            Some("--one-pod") => rt.block_on(one_pod()),
            Some("--density") => {
                let mut counts = std::env::args().skip(2).map(|a| a.parse().ok());
                let wasm = counts.next().flatten().unwrap_or(500);
                let native = counts.next().flatten().unwrap_or(100);
                rt.block_on(density(wasm, native))
            }
            _ => rt.block_on(bench(arg.and_then(|r| r.parse().ok()).unwrap_or(10))),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The wasi:http pod of the examples, without its hostPort (every run
/// would otherwise add and remove iptables rules for runc and us alike).
fn wasm_pod(name: &str) -> Result<Pod> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/http.yaml");
    let mut pod = Pod::from_yaml(&std::fs::read_to_string(path)?)?;
    pod.metadata.name = name.into();
    for p in &mut pod.spec.containers[0].ports {
        p.host_port = None;
    }
    Ok(pod)
}

/// The same pod with the native server in an ordinary image, run by runc.
fn native_pod(name: &str) -> Result<Pod> {
    let mut pod = wasm_pod(name)?;
    pod.spec.runtime_class_name = None;
    pod.metadata.annotations.clear();
    let c = &mut pod.spec.containers[0];
    c.image = "docker.io/wasmpod/http-native:latest".into();
    c.command = vec!["/http".into()];
    c.resources = Default::default();
    Ok(pod)
}

fn import_images() -> Result<()> {
    for tar in ["pause.tar", "programs.tar", "http-native.tar"] {
        wasmpod_integration::import_fixture("k8s.io", tar)?;
    }
    Ok(())
}

fn addr(pod: &RunningPod) -> Result<SocketAddr> {
    Ok(SocketAddr::new(pod.ip.parse()?, 8080))
}

/// Runs `pod` and polls GET / until it answers 200: the pod and the ms
/// from RunPodSandbox to that answer.
async fn start(kubelet: &mut Kubelet, pod: &Pod) -> Result<(RunningPod, f64)> {
    let started = Instant::now();
    let running = kubelet.run(pod).await?;
    let to = addr(&running)?;
    let deadline = started + Duration::from_secs(60);
    loop {
        match http::get(to, "/", Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => break,
            _ if Instant::now() > deadline => {
                return Err(format!("{} never answered at {to}", pod.metadata.name).into());
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    Ok((running, started.elapsed().as_secs_f64() * 1000.0))
}

/// The ms of each step of pod starts, by step, in the order first seen.
#[derive(Default)]
struct Phases(Vec<(&'static str, Vec<f64>)>);

impl Phases {
    /// Adds the steps of `pod`, whose start took `total_ms` to the first
    /// 200; what is left after its CRI calls is the wait for that answer.
    fn add(&mut self, pod: &RunningPod, total_ms: f64) {
        let mut calls = 0.0;
        for (step, took) in &pod.startup {
            let ms = took.as_secs_f64() * 1000.0;
            calls += ms;
            self.push(step, ms);
        }
        self.push("until the first 200", total_ms - calls);
    }

    fn push(&mut self, step: &'static str, ms: f64) {
        match self.0.iter_mut().find(|(s, _)| *s == step) {
            Some((_, v)) => v.push(ms),
            None => self.0.push((step, vec![ms])),
        }
    }

    fn p50s(&self) -> Vec<(&'static str, f64)> {
        self.0.iter().map(|(s, v)| (*s, pct(v, 50.0))).collect()
    }
}

/// Sends `requests` GETs on each of `connections` keep-alive connections
/// to `to`: requests per second, and the p50 and p99 of one request's
/// latency in ms.
fn load(to: SocketAddr, connections: usize, requests: usize) -> Result<(f64, f64, f64)> {
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|i| {
            std::thread::spawn(move || -> std::io::Result<Vec<f64>> {
                let mut c = Connection::open(to, Duration::from_secs(30))?;
                let mut times = Vec::with_capacity(requests);
                for n in 0..requests {
                    let t = Instant::now();
                    let r = c.get(&format!("/load/{i}/{n}"), false)?;
                    if r.status != 200 {
                        return Err(std::io::Error::other(format!(
                            "status {}: {}",
                            r.status, r.body
                        )));
                    }
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(times)
            })
        })
        .collect();
    let mut times = Vec::new();
    for w in workers {
        times.extend(w.join().map_err(|_| "a load thread panicked")??);
    }
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, pct(&times, 50.0), pct(&times, 99.0)))
}

fn pct(values: &[f64], p: f64) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let k = (s.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (k.floor() as usize, (k.ceil() as usize).min(s.len() - 1));
    s[lo] + (s[hi] - s[lo]) * (k - lo as f64)
}

/// `Name: N kB` fields of /proc/PID/status or smaps_rollup, in KiB, from
/// one read: the kernel walks every mapping to produce smaps_rollup.
fn kib<const N: usize>(pid: u32, table: &str, fields: [&str; N]) -> Result<[u64; N]> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{table}"))?;
    let mut values = [0; N];
    for (value, field) in values.iter_mut().zip(fields) {
        *value = text
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("no {field} in /proc/{pid}/{table}"))?;
    }
    Ok(values)
}

/// Processes whose command line contains all of `words`.
fn pids_with(words: &[&str]) -> Vec<u32> {
    wasmpod_integration::processes(|args| {
        let line = args.join(" ");
        words.iter().all(|w| line.contains(w))
    })
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten();
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// Memory of the processes that hold one idle pod each, per pod: mean RSS
/// and PSS of its shim alone, and mean PSS and private memory (what
/// another such pod adds to the node) of the shim with its children.
struct PodMemory {
    shim_rss: f64,
    shim_pss: f64,
    all_pss: f64,
    all_private: f64,
    processes: f64,
}

/// Starts [`IDLE_PODS`] pods, has each answer once, lets them idle, and
/// measures the processes of `shim` (the binary's name) that serve them.
async fn idle_memory(
    kubelet: &mut Kubelet,
    make: fn(&str) -> Result<Pod>,
    label: &str,
    shim: &str,
) -> Result<PodMemory> {
    let mut pods = Vec::new();
    for i in 0..IDLE_PODS {
        pods.push(
            start(kubelet, &make(&format!("idle-{label}-{i}"))?)
                .await?
                .0,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let address = var("WASMPOD_ADDRESS");
    let shims = pids_with(&[shim, &address]);
    let measured = (|| -> Result<PodMemory> {
        if shims.len() != IDLE_PODS {
            return Err(format!("{} {shim} processes for {IDLE_PODS} pods", shims.len()).into());
        }
        let (mut rss, mut pss, mut all, mut private, mut processes) = (0, 0, 0, 0, 0);
        for &pid in &shims {
            let [vm_rss] = kib(pid, "status", ["VmRSS"])?;
            rss += vm_rss;
            // The tree starts with the shim itself.
            for (i, p) in tree(pid).into_iter().enumerate() {
                let [p_pss, clean, dirty] =
                    kib(p, "smaps_rollup", ["Pss", "Private_Clean", "Private_Dirty"])?;
                if i == 0 {
                    pss += p_pss;
                }
                all += p_pss;
                private += clean + dirty;
                processes += 1;
            }
        }
        let n = IDLE_PODS as f64;
        Ok(PodMemory {
            shim_rss: rss as f64 / n,
            shim_pss: pss as f64 / n,
            all_pss: all as f64 / n,
            all_private: private as f64 / n,
            processes: f64::from(processes) / n,
        })
    })();
    for p in &pods {
        kubelet.remove(p).await?;
    }
    measured
}

/// Waits until the cache at `dir`, emptied before, holds compiled code:
/// the ms it took.
fn until_cached(dir: &Path) -> Result<f64> {
    let since = Instant::now();
    loop {
        if cached_programs(dir) > 0 {
            return Ok(since.elapsed().as_secs_f64() * 1000.0);
        }
        if since.elapsed() > Duration::from_secs(180) {
            return Err("the first pod's optimised code was not cached within 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pod counts at which `--density` measures.
const DENSITY_MARKS: [usize; 3] = [100, 250, 500];
/// How long `--density` may spend starting the pods of one kind.
const DENSITY_BOUND: Duration = Duration::from_secs(900);

/// The node with `pods` idle HTTP pods of one kind running.
struct Crowd {
    pods: usize,
    /// Mean PSS of a pod's processes (shim and children), KiB.
    pss: f64,
    /// Mean private memory of a pod's processes, KiB.
    private: f64,
    /// Node memory in use (MemTotal - MemAvailable) over that before the
    /// first pod, per pod, KiB.
    node: f64,
    /// Pod start to first 200 of the pods started since the last mark, ms.
    p50: f64,
    p99: f64,
}

/// Where `--density` got for one kind.
struct Filled {
    crowds: Vec<Crowd>,
    answering: usize,
    started: usize,
    stopped: Option<String>,
}

fn node_used_kib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| format!("no {name} in /proc/meminfo"))
    };
    Ok(field("MemTotal")? - field("MemAvailable")?)
}

/// `cri-bench --density [N] [NATIVE]`: idle wasi:http pods started one
/// after another until N (500), each answering one request from the node,
/// measured at 100, 250 and N; then the native twin under runc up to
/// NATIVE (100) the same way; every pod asked once more at the end, then
/// all removed. Bounded: 15 minutes of starts per kind, a failed start ends
/// that kind's run where it got to.
async fn density(wasm_n: usize, native_n: usize) -> Result<()> {
    import_images()?;
    let mut kubelet =
        Kubelet::connect(&var("WASMPOD_ADDRESS"), Path::new(&var("WASMPOD_PODS_DIR"))).await?;
    // The pods below load the component's optimised code from the cache,
    // which the warm-up pod's compile fills (an empty cache first, so that
    // another program's entry is not taken for it).
    let cache = PathBuf::from(var("WASMPOD_WASM_CACHE"));
    std::fs::remove_dir_all(&cache).ok();
    let (pod, _) = start(&mut kubelet, &wasm_pod("density-warm")?).await?;
    kubelet.remove(&pod).await?;
    until_cached(&cache)?;
    let wasm = fill(
        &mut kubelet,
        wasm_pod,
        "wasm",
        "containerd-shim-wasmpod-v1",
        wasm_n,
    )
    .await?;
    let native = fill(
        &mut kubelet,
        native_pod,
        "native",
        "containerd-shim-runc-v2",
        native_n,
    )
    .await?;

    println!(
        "Density: idle HTTP pods started one after another through the CRI, each answering one \
         request from the node when started and again at the end; KiB per pod"
    );
    println!();
    println!(
        "| runtime | pods | PSS per pod | private per pod | node memory per pod | start p50 ms | start p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, filled) in [("wasmpod", &wasm), ("runc", &native)] {
        for c in &filled.crowds {
            println!(
                "| {label} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
                c.pods, c.pss, c.private, c.node, c.p50, c.p99
            );
        }
    }
    println!();
    for (label, filled) in [("wasmpod", &wasm), ("runc", &native)] {
        let ended = filled
            .stopped
            .as_deref()
            .map_or_else(|| "all started".to_owned(), |why| format!("stopped: {why}"));
        println!(
            "{label}: {} pods started ({ended}), {} answered again at the end.",
            filled.started, filled.answering
        );
    }
    Ok(())
}

/// Starts up to `n` pods made by `make`, measuring at the marks (and where
/// it stopped), then asks each once more and removes them all.
async fn fill(
    kubelet: &mut Kubelet,
    make: fn(&str) -> Result<Pod>,
    label: &str,
    shim: &str,
    n: usize,
) -> Result<Filled> {
    let before = node_used_kib()?;
    let address = var("WASMPOD_ADDRESS");
    let mut marks: Vec<usize> = DENSITY_MARKS.into_iter().filter(|&m| m < n).collect();
    marks.push(n);
    let (mut pods, mut ms, mut crowds) = (Vec::new(), Vec::new(), Vec::new());
    let mut stopped = None;
    let bound = Instant::now() + DENSITY_BOUND;
    let mut window = 0;
    while pods.len() < n {
        if Instant::now() > bound {
            stopped = Some(format!("{} s bound", DENSITY_BOUND.as_secs()));
        } else {
            match start(kubelet, &make(&format!("density-{label}-{}", pods.len()))?).await {
                Ok((pod, t)) => {
                    pods.push(pod);
                    ms.push(t);
                }
                Err(e) => stopped = Some(e.to_string()),
            }
        }
        if marks.contains(&pods.len()) || (stopped.is_some() && pods.len() > window) {
            // Let the last pods settle (first requests' garbage freed).
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (mut pss, mut private) = (0u64, 0u64);
            for pid in pids_with(&[shim, &address]) {
                for p in tree(pid) {
                    let [p_pss, clean, dirty] =
                        kib(p, "smaps_rollup", ["Pss", "Private_Clean", "Private_Dirty"])?;
                    pss += p_pss;
                    private += clean + dirty;
                }
            }
            let count = pods.len() as f64;
            let recent = &ms[window..];
            crowds.push(Crowd {
                pods: pods.len(),
                pss: pss as f64 / count,
                private: private as f64 / count,
                node: node_used_kib()?.saturating_sub(before) as f64 / count,
                p50: pct(recent, 50.0),
                p99: pct(recent, 99.0),
            });
            window = pods.len();
        }
        if stopped.is_some() {
            break;
        }
    }
    let answering = pods
        .iter()
        .filter(|p| {
            addr(p)
                .ok()
                .and_then(|to| http::get(to, "/", Duration::from_secs(5)).ok())
                .is_some_and(|r| r.status == 200)
        })
        .count();
    for p in &pods {
        kubelet.remove(p).await?;
    }
    Ok(Filled {
        crowds,
        answering,
        started: pods.len(),
        stopped,
    })
}

/// Requests that `--one-pod` sends.
const ONE_POD_REQUESTS: usize = 20;

async fn one_pod() -> Result<()> {
    import_images()?;
    let mut kubelet =
        Kubelet::connect(&var("WASMPOD_ADDRESS"), Path::new(&var("WASMPOD_PODS_DIR"))).await?;
    let (pod, ms) = start(&mut kubelet, &wasm_pod("one-pod")?).await?;
    let answered = addr(&pod).and_then(|to| load(to, 1, ONE_POD_REQUESTS));
    kubelet.remove(&pod).await?;
    answered?;
    println!("one pod: first 200 after {ms:.1} ms, then {ONE_POD_REQUESTS} answers");
    Ok(())
}

async fn bench(runs: usize) -> Result<()> {
    import_images()?;
    let mut kubelet =
        Kubelet::connect(&var("WASMPOD_ADDRESS"), Path::new(&var("WASMPOD_PODS_DIR"))).await?;

    // The first pod of each kind: the image's first unpack, and for Wasm
    // an empty compiled-code cache.
    let cache = PathBuf::from(var("WASMPOD_WASM_CACHE"));
    std::fs::remove_dir_all(&cache).ok();
    let (pod, wasm_first) = start(&mut kubelet, &wasm_pod("first-wasm")?).await?;
    kubelet.remove(&pod).await?;
    // A large server's first start runs baseline code while its optimised
    // code compiles; the warm runs below must find that in the cache.
    let tier_up = until_cached(&cache)?;
    let (pod, native_first) = start(&mut kubelet, &native_pod("first-native")?).await?;
    kubelet.remove(&pod).await?;

    let (mut wasm, mut native) = (Vec::new(), Vec::new());
    let (mut wasm_phases, mut native_phases) = (Phases::default(), Phases::default());
    for i in 0..runs {
        // Interleaved, so that drift on the machine hits both alike.
        let (pod, ms) = start(&mut kubelet, &native_pod(&format!("native-{i}"))?).await?;
        native.push(ms);
        native_phases.add(&pod, ms);
        kubelet.remove(&pod).await?;
        let (pod, ms) = start(&mut kubelet, &wasm_pod(&format!("wasm-{i}"))?).await?;
        wasm.push(ms);
        wasm_phases.add(&pod, ms);
        kubelet.remove(&pod).await?;
    }

    let mut rates = Vec::new();
    for (label, make) in [
        ("native", native_pod as fn(&str) -> Result<Pod>),
        ("wasm", wasm_pod),
    ] {
        let (pod, _) = start(&mut kubelet, &make(&format!("load-{label}"))?).await?;
        let measured = load(addr(&pod)?, CONNECTIONS, REQUESTS_PER_CONNECTION);
        if measured.is_err() {
            // What the server said about it.
            let logs = kubelet.logs(&pod, "web").unwrap_or_default();
            let why = logs.lines().rfind(|l| l.starts_with("wasmpod:"));
            eprintln!(
                "cri-bench: the {label} pod says: {}",
                why.unwrap_or("nothing")
            );
        }
        kubelet.remove(&pod).await?;
        rates.push(measured?);
    }

    let wasm_memory =
        idle_memory(&mut kubelet, wasm_pod, "wasm", "containerd-shim-wasmpod-v1").await?;
    let native_memory = idle_memory(
        &mut kubelet,
        native_pod,
        "native",
        "containerd-shim-runc-v2",
    )
    .await?;

    let base = pct(&native, 50.0);
    println!(
        "Through the CRI ({runs} runs each, interleaved): ms from RunPodSandbox to the first \
         200 answer from the pod IP; the wasi:http pod of deploy/examples/http.yaml (Python \
         handler, componentize-py) against the same server in C run by runc"
    );
    println!();
    println!("| what | p50 | p90 | p50 vs runc |");
    println!("|---|---:|---:|---:|");
    for (label, v) in [
        ("runc, native HTTP server", &native),
        ("wasmpod, wasi:http component, warm cache", &wasm),
    ] {
        println!(
            "| {label} | {:.1} | {:.1} | {:.2}x |",
            pct(v, 50.0),
            pct(v, 90.0),
            pct(v, 50.0) / base
        );
    }
    println!("| first runc pod (image unpacked) | {native_first:.1} | | |");
    println!("| first wasmpod pod (empty compiled-code cache) | {wasm_first:.1} | | |");
    println!(
        "| first wasmpod pod: its optimised code cached, after its first 200 | {tier_up:.1} | | |"
    );
    println!();
    println!(
        "Where the time goes: p50 ms of each CRI call, and of the wait from StartContainer's return to the first 200"
    );
    println!();
    println!("| step | runc | wasmpod |");
    println!("|---|---:|---:|");
    let wasm_p50s = wasm_phases.p50s();
    for (step, runc_ms) in native_phases.p50s() {
        let ours = wasm_p50s
            .iter()
            .find(|(s, _)| *s == step)
            .map_or_else(String::new, |(_, ms)| format!("{ms:.1}"));
        println!("| {step} | {runc_ms:.1} | {ours} |");
    }
    println!();
    println!(
        "Bounded load from the node to the pod IP: {CONNECTIONS} keep-alive connections x \
         {REQUESTS_PER_CONNECTION} GETs; wasmpod makes a fresh instance for every request"
    );
    println!();
    println!("| server | req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (label, (rate, p50, p99)) in [
        ("runc, native C", rates[0]),
        ("wasmpod, wasi:http", rates[1]),
    ] {
        println!("| {label} | {rate:.0} | {p50:.2} | {p99:.2} |");
    }
    println!();
    println!(
        "Memory per idle HTTP pod ({IDLE_PODS} pods, each answered once), KiB. PSS shares \
         each page among the processes that map it, so it falls as pods are added; private \
         memory is what one more pod costs the node"
    );
    println!();
    println!(
        "| runtime | shim RSS | shim PSS | PSS of the shim and its children | private memory of the shim and its children | processes |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, m) in [("wasmpod", &wasm_memory), ("runc", &native_memory)] {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            m.shim_rss, m.shim_pss, m.all_pss, m.all_private, m.processes
        );
    }
    Ok(())
}
