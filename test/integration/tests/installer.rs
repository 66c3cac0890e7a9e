//! The node installer's output read by a real containerd: the suite's
//! `containerd config dump` of each config the installer wrote must show
//! the wasmpod runtime, and none after the uninstall. Also keeps the
//! installer's committed fixtures honest: they must be what this
//! containerd's `config default` prints and what its package ships.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmpod_integration::kubelet::Kubelet;
use wasmpod_integration::pod::Pod;
use wasmpod_integration::{ok, text, var};

fn containerd() -> PathBuf {
    Path::new(&var("WASMPOD_CTR")).with_file_name("containerd")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../installer/tests/configs")
}

/// `containerd --version`'s version, e.g. `1.7.24`.
fn version() -> String {
    let out = ok(
        &Command::new(containerd())
            .arg("--version")
            .output()
            .expect("runs"),
        "containerd --version",
    );
    let field = out.split_whitespace().nth(2).unwrap_or_default();
    field
        .trim_start_matches('v')
        .split(['~', '+', '-'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What `containerd config dump` says of the wasmpod runtime in `config`:
/// its table's lines, or `None` without one.
fn dumped_runtime(config: &Path) -> Option<String> {
    let out = Command::new(containerd())
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .expect("runs");
    let dump = ok(&out, "containerd config dump");
    let mut lines = dump
        .lines()
        .skip_while(|l| !l.trim_end().ends_with("containerd.runtimes.wasmpod]"));
    let header = lines.next()?;
    let keys: Vec<&str> = lines
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect();
    Some(format!("{header}\n{}", keys.join("\n")))
}

fn installer(host: &Path, args: &[&str]) {
    let out = Command::new(var("WASMPOD_INSTALLER"))
        .arg("--host-root")
        .arg(host)
        .args(["--restart", "none"])
        .args(args)
        .output()
        .expect("runs");
    ok(&out, &format!("wasmpod-node-installer {args:?}"));
    eprintln!("{}", text(&out.stderr));
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn committed_configs_are_this_containerds_own() {
    let version = version();
    let path = fixtures().join(format!("containerd-{version}-default.toml"));
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; add this containerd's `config default` there",
            path.display()
        )
    });
    let out = Command::new(containerd())
        .args(["config", "default"])
        .output()
        .expect("runs");
    assert_eq!(
        ok(&out, "containerd config default"),
        committed,
        "{} is stale",
        path.display()
    );
    let packaged = containerd().with_file_name("../../etc/containerd/config.toml");
    let packaged = std::fs::read_to_string(&packaged).expect("the package's config");
    let committed = std::fs::read_to_string(fixtures().join("debian-package.toml")).expect("read");
    assert_eq!(packaged, committed, "Debian's packaged config changed");
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn containerd_reads_what_the_installer_wrote() {
    let version = version();
    let image = tempfile::tempdir().expect("tempdir");
    let shim = image.path().join("containerd-shim-wasmpod-v1");
    std::fs::copy(
        Path::new(&var("WASMPOD_INSTALLER")).with_file_name("containerd-shim-wasmpod-v1"),
        &shim,
    )
    .expect("copy the shim");
    let inputs = [
        format!("containerd-{version}-default.toml"),
        "debian-package.toml".to_owned(),
        // No config at all: the installer writes a version 2 one.
        String::new(),
    ];
    for input in inputs {
        let host = tempfile::tempdir().expect("tempdir");
        let config = host.path().join("etc/containerd/config.toml");
        std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
        if !input.is_empty() {
            std::fs::copy(fixtures().join(&input), &config).expect("copy");
        }
        if config.exists() {
            assert_eq!(dumped_runtime(&config), None, "{input}: no runtime before");
        }
        installer(
            host.path(),
            &["install", "--shim", shim.to_str().expect("utf-8")],
        );
        let runtime = dumped_runtime(&config)
            .unwrap_or_else(|| panic!("containerd {version} does not see the wasmpod runtime in what the installer made of {input:?}"));
        for wanted in [
            "runtime_type = 'io.containerd.wasmpod.v1'",
            "runtime_path = '/opt/wasmpod/bin/containerd-shim-wasmpod-v1'",
            "pod_annotations = ['wasmpod.dev/*']",
            "container_annotations = ['wasmpod.dev/*']",
        ] {
            let double = wanted.replace('\'', "\"");
            assert!(
                runtime.contains(wanted) || runtime.contains(&double),
                "containerd {version}, {input:?}: no `{wanted}` in\n{runtime}"
            );
        }
        installer(host.path(), &["uninstall"]);
        if config.exists() {
            assert_eq!(
                dumped_runtime(&config),
                None,
                "{input}: the runtime is gone after uninstall"
            );
        }
    }
}

/// A containerd of the suite's own for the installer to change, restarted
/// by a supervisor thread whenever it exits, as systemd's `Restart=always`
/// would; stopped (and its bridge and directory removed) when dropped.
struct Supervised {
    dir: PathBuf,
    bridge: Option<String>,
    stop: Arc<AtomicBool>,
    pid: Arc<AtomicI32>,
    starts: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    /// Starts `containerd ARGS` with the suite's binaries first on PATH and
    /// no wasmpod shim on it: the CRI can only find the shim through the
    /// `runtime_path` the installer writes.
    fn start(dir: &Path, bridge: Option<String>, args: Vec<String>) -> Self {
        Self::start_with_path(dir, bridge, args, None)
    }

    /// As [`Self::start`], with `extra` first on containerd's PATH.
    fn start_with_path(
        dir: &Path,
        bridge: Option<String>,
        args: Vec<String>,
        extra: Option<&Path>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let pid = Arc::new(AtomicI32::new(0));
        let starts = Arc::new(AtomicUsize::new(0));
        let log = dir.join("containerd.log");
        let extra = extra
            .map(|p| format!("{}:", p.display()))
            .unwrap_or_default();
        let path = format!(
            "{extra}{}:/usr/sbin:/usr/bin:/sbin:/bin",
            containerd().parent().expect("bin").display()
        );
        let cache = dir.join("wasm-cache");
        let thread = {
            let (stop, pid, starts) = (stop.clone(), pid.clone(), starts.clone());
            std::thread::spawn(move || {
                // Bounded: a containerd that keeps dying is a failure, not a
                // loop. A second between starts, as systemd's RestartSec.
                while !stop.load(Ordering::SeqCst) && starts.load(Ordering::SeqCst) < 150 {
                    let out = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .expect("log");
                    let mut child = Command::new(containerd())
                        .args(&args)
                        .env("PATH", &path)
                        .env("WASMPOD_CACHE_DIR", &cache)
                        .stdin(Stdio::null())
                        .stdout(out.try_clone().expect("log"))
                        .stderr(out)
                        .spawn()
                        .expect("containerd starts");
                    pid.store(child.id() as i32, Ordering::SeqCst);
                    starts.fetch_add(1, Ordering::SeqCst);
                    let _ = child.wait();
                    pid.store(0, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        Self {
            dir: dir.to_owned(),
            bridge,
            stop,
            pid,
            starts,
            thread: Some(thread),
        }
    }

    fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    /// Waits for `ctr version` to answer on `socket`.
    fn wait_up(&self, socket: &Path) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let out = Command::new(var("WASMPOD_CTR"))
                .arg("-a")
                .arg(socket)
                .arg("version")
                .output();
            if out.is_ok_and(|o| o.status.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "containerd did not come up on {}: {}",
            socket.display(),
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let pid = self.pid.load(Ordering::SeqCst);
        if pid > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "delete", bridge]).output();
        }
        // The CRI's sandbox mounts go with the pods; anything left is a leak
        // the pod tests report, so a failed removal here stays visible.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn suite() -> String {
    var("WASMPOD_SUITE")
}

/// A fresh private directory for this test's containerd.
fn private_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/run/wasmpod-test/{}-{name}", suite()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// The installer on this node's own root, restarting by signal unless
/// `args` say how.
fn run_installer(args: &[&str]) -> std::process::Output {
    run_installer_with(args, &[])
}

/// As [`run_installer`], with `env` added to its environment.
fn run_installer_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let restart = if args.contains(&"--restart") {
        &[][..]
    } else {
        &["--restart", "signal"][..]
    };
    let out = Command::new(var("WASMPOD_INSTALLER"))
        .args([
            "--host-root",
            "/",
            "--layout",
            "containerd",
            "--health-timeout",
            "30",
        ])
        .args(restart)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    eprintln!("installer {args:?}: {}\n{}", out.status, text(&out.stderr));
    out
}

/// Imports image archive `tar` into the CRI's namespace of the containerd
/// on `socket`.
fn import_for_cri(socket: &Path, tar: &Path) {
    let out = Command::new(var("WASMPOD_CTR"))
        .arg("-a")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(tar)
        .output()
        .expect("ctr runs");
    ok(&out, "ctr images import");
}

/// Runs `deploy/examples/hello.yaml` (RuntimeClass `wasmpod`) to its exit
/// and removes it: it must exit 0 and log its greeting.
async fn hello_pod_runs(kubelet: &mut Kubelet) {
    let running = kubelet
        .run(&Pod::example("hello.yaml"))
        .await
        .expect("the hello pod runs");
    let (name, id) = running.containers[0].clone();
    let status = kubelet
        .wait_exited(&name, &id, Duration::from_secs(60))
        .await
        .expect("exits");
    let logs = kubelet.logs(&running, &name).expect("logs");
    kubelet.remove(&running).await.expect("removed");
    assert_eq!(status.exit_code, 0, "{logs}");
    assert!(logs.contains("hello from wasm"), "{logs}");
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A containerd with its CRI, CNI bridge and the pause and hello images,
/// from Debian's packaged config with paths of its own under
/// `/run/wasmpod-test/SUITE-NAME` (no wasmpod in it), under a supervisor.
struct CriNode {
    containerd: Supervised,
    dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    original: String,
    bin_dir: PathBuf,
}

/// Starts a [`CriNode`]; `net` (0-9) picks its bridge's subnet.
fn cri_node(name: &str, tag: char, net: u8) -> CriNode {
    let dir = private_dir(name);
    let bridge = format!("wp-{}-{tag}", suite());
    let suite_net = match suite().as_str() {
        "bookworm" => 1,
        "trixie" => 2,
        _ => 3,
    };
    let subnet = format!("10.88.{}{suite_net}.0/24", 7 + net);
    let socket = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    // Debian's packaged config, with this test's own paths: no wasmpod in it.
    let original = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\n[grpc]\n  address = \"{s}\"\n\n[ttrpc]\n  address = \"{s}.ttrpc\"\n\n\
         [plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    sandbox_image = \"wasmpod.test/pause:1\"\n    restrict_oom_score_adj = true\n    \
         stream_server_address = \"127.0.0.1\"\n    stream_server_port = \"0\"\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      \
         bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"{d}/cni\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{d}/opt\"\n",
        d = dir.display(),
        s = socket.display()
    );
    std::fs::write(&config, &original).expect("write config");
    std::fs::create_dir_all(dir.join("cni")).expect("mkdir");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("wasmpod-{}-{name}", suite()),
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": dir.join("ipam")}
        }]
    });
    std::fs::write(dir.join("cni/10-installer.conflist"), conflist.to_string()).expect("write");
    // containerd 1.6's CRI finds shims on its PATH only (the installer's
    // --bin-dir link); 1.7 and 2.x get no such link on theirs, so they
    // must use the runtime_path the installer writes.
    let bin_dir = dir.join("bin");
    let on_path = version().starts_with("1.6").then_some(bin_dir.as_path());
    let containerd = Supervised::start_with_path(
        &dir,
        Some(bridge),
        vec!["--config".into(), config.display().to_string()],
        on_path,
    );
    containerd.wait_up(&socket);
    for tar in ["pause.tar", "hello.tar"] {
        import_for_cri(&socket, &Path::new(&var("WASMPOD_FIXTURES")).join(tar));
    }
    CriNode {
        containerd,
        dir,
        socket,
        config,
        original,
        bin_dir,
    }
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn a_running_containerd_gets_the_runtime_runs_a_wasm_pod_and_loses_it_again() {
    let CriNode {
        containerd,
        dir,
        socket,
        config,
        original,
        bin_dir,
    } = cri_node("installer", 'i', 0);
    let install_dir = dir.join("opt-wasmpod");
    let shim = Path::new(&var("WASMPOD_INSTALLER")).with_file_name("containerd-shim-wasmpod-v1");
    let install = [
        "--config",
        config.to_str().expect("utf-8"),
        "--install-dir",
        install_dir.to_str().expect("utf-8"),
        "--bin-dir",
        bin_dir.to_str().expect("utf-8"),
        "install",
        "--shim",
        shim.to_str().expect("utf-8"),
    ];

    let out = run_installer(&install);
    ok(&out, "install");
    let log = text(&out.stderr);
    assert!(
        log.contains("containerd is healthy and lists the wasmpod runtime")
            && log.contains("a test Wasm container ran through the wasmpod runtime"),
        "{log}"
    );
    assert_eq!(
        containerd.starts(),
        2,
        "restarted once, by the installer's SIGTERM"
    );
    assert_eq!(
        namespaces(&socket),
        ["k8s.io"],
        "the test container's namespace is gone again"
    );

    // A Wasm pod through the CRI handler the installer added: the shim is
    // only reachable through the runtime_path it wrote.
    block_on(async {
        let pods = dir.join("pods");
        let mut kubelet = Kubelet::connect(socket.to_str().expect("utf-8"), &pods)
            .await
            .expect("CRI");
        hello_pod_runs(&mut kubelet).await;
    });

    // Again: nothing to change, no restart.
    ok(&run_installer(&install), "install again");
    assert_eq!(
        containerd.starts(),
        2,
        "a second run does not restart containerd"
    );

    let uninstall = [
        "--config",
        config.to_str().expect("utf-8"),
        "--install-dir",
        install_dir.to_str().expect("utf-8"),
        "--bin-dir",
        bin_dir.to_str().expect("utf-8"),
        "uninstall",
    ];
    let out = run_installer(&uninstall);
    ok(&out, "uninstall");
    assert!(text(&out.stderr).contains("containerd is healthy without the wasmpod runtime"));
    assert_eq!(containerd.starts(), 3, "restarted once more");
    assert_eq!(
        std::fs::read_to_string(&config).expect("read"),
        original,
        "the config is as it was"
    );
    assert!(!install_dir.exists(), "the shim and the record are gone");
    assert!(
        bin_dir
            .join("containerd-shim-wasmpod-v1")
            .symlink_metadata()
            .is_err(),
        "the PATH link is gone"
    );
}

/// The namespaces of the containerd on `socket`.
fn namespaces(socket: &Path) -> Vec<String> {
    let out = Command::new(var("WASMPOD_CTR"))
        .arg("-a")
        .arg(socket)
        .args(["namespaces", "ls", "-q"])
        .output()
        .expect("ctr runs");
    ok(&out, "ctr namespaces ls");
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn a_shim_that_cannot_run_a_guest_is_rolled_back() {
    // The config is one containerd takes and its CRI lists the handler,
    // but the shim is an executable of the node's machine that is no shim:
    // only running a container through it shows that.
    let CriNode {
        containerd,
        dir,
        socket,
        config,
        original,
        bin_dir,
    } = cri_node("broken-shim", 'b', 3);
    let broken = dir.join("not-a-shim");
    std::fs::copy("/bin/true", &broken).expect("copy");
    let install_dir = dir.join("opt-wasmpod");
    let install = |shim: &Path| {
        run_installer(&[
            "--config",
            config.to_str().expect("utf-8"),
            "--install-dir",
            install_dir.to_str().expect("utf-8"),
            "--bin-dir",
            bin_dir.to_str().expect("utf-8"),
            "install",
            "--shim",
            shim.to_str().expect("utf-8"),
        ])
    };
    let out = install(&broken);
    assert!(!out.status.success(), "the install must fail");
    let log = text(&out.stderr);
    assert!(
        log.contains("lists the `wasmpod` runtime")
            && log.contains("a test Wasm container did not run through it")
            && log.contains("was put back"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("read"),
        original,
        "the config is as it was"
    );
    assert_eq!(
        containerd.starts(),
        3,
        "restarted with the change and without it"
    );
    containerd.wait_up(&socket);
    assert_eq!(namespaces(&socket), ["k8s.io"], "no test container is left");

    // The same shim as an upgrade of a working one: the config is already
    // right and nothing restarts, but the link goes back to the shim before.
    let good = Path::new(&var("WASMPOD_INSTALLER")).with_file_name("containerd-shim-wasmpod-v1");
    ok(&install(&good), "install the real shim");
    let link = install_dir.join("bin/containerd-shim-wasmpod-v1");
    let working = std::fs::read_link(&link).expect("the shim link");
    let out = install(&broken);
    assert!(!out.status.success(), "the upgrade must fail");
    let log = text(&out.stderr);
    assert!(
        log.contains("a test Wasm container did not run through it")
            && log.contains(&format!("points at {} again", working.display())),
        "{log}"
    );
    assert_eq!(std::fs::read_link(&link).expect("link"), working);
    assert_eq!(
        containerd.starts(),
        4,
        "only the real shim's install restarted containerd"
    );
    block_on(async {
        let mut kubelet = Kubelet::connect(socket.to_str().expect("utf-8"), &dir.join("pods"))
            .await
            .expect("CRI");
        hello_pod_runs(&mut kubelet).await;
    });
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn a_config_containerd_will_not_take_is_rolled_back() {
    // A node whose containerd runs on its defaults (a config with no keys),
    // and the wrong config version asked for: 1.6 ignores a version 3
    // file's CRI keys, 1.7 refuses to start, 2.x drops a version 1 file's.
    // Each way the CRI lacks the handler, and the installer must put the
    // node back as it was.
    let dir = private_dir("rollback");
    let socket = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    let original = "# this node's containerd runs on its defaults\n";
    std::fs::write(&config, original).expect("write");
    let wrong = if version().starts_with('1') { "3" } else { "1" };
    // containerd's default opt plugin path; removed after if this made it.
    let opt = Path::new("/opt/containerd");
    let opt_was_there = opt.exists();
    let containerd = Supervised::start(
        &dir,
        None,
        [
            "--config",
            &config.display().to_string(),
            "--address",
            &socket.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--root".into(), dir.join("root").display().to_string()])
        .chain(["--state".into(), dir.join("state").display().to_string()])
        .collect(),
    );
    containerd.wait_up(&socket);
    let install_dir = dir.join("opt-wasmpod");
    let bin_dir = dir.join("bin");
    let shim = Path::new(&var("WASMPOD_INSTALLER")).with_file_name("containerd-shim-wasmpod-v1");
    let out = run_installer(&[
        "--config",
        config.to_str().expect("utf-8"),
        "--config-version",
        wrong,
        "--containerd-socket",
        socket.to_str().expect("utf-8"),
        "--install-dir",
        install_dir.to_str().expect("utf-8"),
        "--bin-dir",
        bin_dir.to_str().expect("utf-8"),
        "install",
        "--shim",
        shim.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success(), "the install must fail");
    let log = text(&out.stderr);
    assert!(
        log.contains("was put back") && log.contains("is healthy again"),
        "{log}\n{}",
        containerd.log()
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("read"),
        original,
        "the config is as it was"
    );
    // 1.7 keeps failing to start until the config is back; the others run.
    assert!(
        containerd.starts() >= 3,
        "restarted with the change and again without it"
    );
    containerd.wait_up(&socket);

    // The same change left unchecked (restart none), then finished by a run
    // that restarts: it is rolled back as well, to the config before it.
    let args = |restart: &'static str| {
        vec![
            "--restart".to_owned(),
            restart.to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
            "--config-version".to_owned(),
            wrong.to_owned(),
            "--containerd-socket".to_owned(),
            socket.display().to_string(),
            "--install-dir".to_owned(),
            install_dir.display().to_string(),
            "--bin-dir".to_owned(),
            bin_dir.display().to_string(),
            "install".to_owned(),
            "--shim".to_owned(),
            shim.display().to_string(),
        ]
    };
    let none: Vec<String> = args("none");
    let none: Vec<&str> = none.iter().map(String::as_str).collect();
    ok(&run_installer(&none), "install without a restart");
    assert_ne!(std::fs::read_to_string(&config).expect("read"), original);
    let signal: Vec<String> = args("signal");
    let signal: Vec<&str> = signal.iter().map(String::as_str).collect();
    let out = run_installer(&signal);
    assert!(!out.status.success(), "the resumed install must fail");
    let log = text(&out.stderr);
    assert!(
        log.contains("not yet seen healthy") && log.contains("was put back"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("read"),
        original,
        "the config is as it was"
    );
    containerd.wait_up(&socket);
    drop(containerd);
    if !opt_was_there {
        let _ = std::fs::remove_dir_all(opt);
    }
}

/// The installer process running `install` for host config `config`, seen
/// in the node's /proc: (pid, its /proc/PID/status).
fn installer_process(config: &Path) -> Option<(i32, String)> {
    let wanted = format!("--config={}", config.display());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args.first()? == b"/wasmpod-node-installer"
                && args.contains(&wanted.as_bytes())
                && args.contains(&&b"install"[..]);
            ours.then(|| {
                Some((
                    pid,
                    std::fs::read_to_string(entry.path().join("status")).ok()?,
                ))
            })?
        })
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn the_charts_installer_pod_installs_into_the_containerd_it_runs_on() {
    let node = cri_node("daemonset", 'd', 1);
    // The installer's image, FROM scratch: its static build and the shim.
    let image = node.dir.join("node-installer.tar");
    let out = Command::new(var("WASMPOD_INSTALLER_STATIC"))
        .arg("image")
        .arg("--shim")
        .arg(Path::new(&var("WASMPOD_INSTALLER")).with_file_name("containerd-shim-wasmpod-v1"))
        .args([
            "--reference",
            "docker.io/wasmpod/node-installer:test",
            "--output",
        ])
        .arg(&image)
        .output()
        .expect("runs");
    ok(&out, "wasmpod-node-installer image");
    import_for_cri(&node.socket, &image);
    // The DaemonSet's pod as Helm renders it for a node whose containerd
    // reads the test's config and is restarted by its supervisor.
    let install_dir = node.dir.join("opt-wasmpod");
    let values = serde_json::json!({
        "image": {"repository": "wasmpod/node-installer", "tag": "test", "pullPolicy": "Never"},
        "node": {
            "layout": "containerd",
            "configPath": node.config,
            "restart": "signal",
            "installDir": install_dir,
            "binDir": node.bin_dir,
            "containerdSocket": node.socket,
            "healthTimeout": 30,
        },
    });
    let out = Command::new(var("WASMPOD_PYTHON"))
        .arg(var("WASMPOD_CHART_RENDER"))
        .arg(values.to_string())
        .output()
        .expect("python runs");
    let manifest = ok(&out, "render the chart");
    let pod = Pod::from_yaml(&manifest).expect("the DaemonSet's pod");
    assert!(
        pod.spec.host_pid,
        "the signal restart needs the node's pids"
    );

    block_on(async {
        let pods = node.dir.join("pods");
        let mut kubelet = Kubelet::connect(node.socket.to_str().expect("utf-8"), &pods)
            .await
            .expect("CRI");
        let installer = kubelet.run(&pod).await.expect("the installer pod runs");
        let (name, _) = installer.containers[0].clone();
        // Its log, read as `kubectl logs` reads it, says when it is done.
        let start = Instant::now();
        let log = loop {
            let log = kubelet.logs(&installer, &name).unwrap_or_default();
            if log.contains("done; staying until the pod is stopped") {
                break log;
            }
            assert!(
                !log.contains("wasmpod-node-installer:")
                    && start.elapsed() < Duration::from_secs(90),
                "the installer pod did not finish: {log}\n{}",
                node.containerd.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            log.contains("containerd is healthy and lists the wasmpod runtime"),
            "{log}"
        );
        assert_eq!(
            node.containerd.starts(),
            2,
            "restarted once, by the pod's SIGTERM"
        );
        // It did that as root with no capability and no way to gain one.
        let (pid, status) = installer_process(&node.config).expect("the installer stays running");
        let field = |name: &str| wasmpod_integration::status_field(&status, name);
        assert_eq!(field("CapEff:"), "0000000000000000", "pid {pid}: {status}");
        assert_eq!(field("CapBnd:"), "0000000000000000", "pid {pid}: {status}");
        assert_eq!(field("NoNewPrivs:"), "1", "pid {pid}: {status}");
        assert!(field("Uid:").starts_with('0'), "pid {pid}: {status}");

        // containerd was restarted under the kubelet: a new connection, and
        // a Wasm pod through the handler the installer pod added.
        let mut kubelet = Kubelet::connect(node.socket.to_str().expect("utf-8"), &pods)
            .await
            .expect("CRI after the restart");
        hello_pod_runs(&mut kubelet).await;

        // Stopped as the DaemonSet's pod would be: SIGTERM, exit 0.
        kubelet
            .remove(&installer)
            .await
            .expect("installer pod removed");
        assert!(
            installer_process(&node.config).is_none(),
            "the installer exited"
        );
    });

    // The uninstall hook's pod runs this same binary (the e2e suite has
    // helm run it); here it takes wasmpod out from the node.
    let out = run_installer(&[
        "--config",
        node.config.to_str().expect("utf-8"),
        "--install-dir",
        install_dir.to_str().expect("utf-8"),
        "--bin-dir",
        node.bin_dir.to_str().expect("utf-8"),
        "uninstall",
    ]);
    ok(&out, "uninstall");
    assert_eq!(
        std::fs::read_to_string(&node.config).expect("read"),
        node.original
    );
}

/// `kubectl ARGS` as the test control plane's admin (test/k8s/cluster.sh),
/// with `input` on its stdin.
fn kubectl(args: &[&str], input: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(var("WASMPOD_KUBECTL"))
        .args(args)
        .env("KUBECONFIG", var("KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("kubectl's stdin");
    }
    drop(stdin);
    child.wait_with_output().expect("kubectl runs")
}

/// The value of the ready label on node `node`, if it has one.
fn ready_label(node: &str) -> Option<String> {
    let out = kubectl(
        &[
            "get",
            "node",
            node,
            "-o",
            r#"jsonpath={.metadata.labels.wasmpod\.dev/ready}"#,
        ],
        None,
    );
    let value = ok(&out, "kubectl get node").trim().to_owned();
    (!value.is_empty()).then_some(value)
}

/// The events on node `node`, a line each: `TYPE REASON: MESSAGE`.
fn node_events(node: &str) -> String {
    let selector = format!("involvedObject.kind=Node,involvedObject.name={node}");
    let out = kubectl(
        &[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &selector,
            "-o",
            r#"jsonpath={range .items[*]}{.type} {.reason}: {.message}{"\n"}{end}"#,
        ],
        None,
    );
    ok(&out, "kubectl get events")
}

#[test]
#[ignore = "needs the suite's containerd and the test control plane: run `make test`"]
fn the_node_is_labelled_ready_only_while_its_containerd_runs_the_shim() {
    let node_name = format!("wasmpod-{}-edge", suite());
    // The chart's own RBAC, as Helm renders it: the installer may do what
    // it must with no more than that.
    let out = Command::new(var("WASMPOD_PYTHON"))
        .arg(var("WASMPOD_CHART_RENDER"))
        .args(["{}", "rbac.yaml", "nodepolicy.yaml"])
        .output()
        .expect("python runs");
    let rbac = ok(&out, "render the chart's RBAC and node policy");
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: wasmpod-system}\n";
    ok(
        &kubectl(&["apply", "-f", "-"], Some(namespace)),
        "create the namespace",
    );
    ok(
        &kubectl(&["apply", "-f", "-"], Some(&rbac)),
        "apply the RBAC",
    );
    // Node objects with no kubelet behind them: only labels matter here.
    let other_node = format!("{node_name}-other");
    for node in [&node_name, &other_node] {
        let _ = kubectl(&["delete", "node", node, "--ignore-not-found"], None);
    }
    let selector = format!("involvedObject.name={node_name}");
    let _ = kubectl(
        &[
            "delete",
            "events",
            "-n",
            "default",
            "--field-selector",
            &selector,
        ],
        None,
    );
    for node in [&node_name, &other_node] {
        let manifest = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n");
        ok(
            &kubectl(&["create", "-f", "-"], Some(&manifest)),
            "create the node",
        );
    }
    // The installer's pod, bound to the node (no kubelet runs it): its
    // token names the node, as a projected token in the real pod does.
    let pod = "wasmpod-node-installer-test";
    let _ = kubectl(
        &[
            "delete",
            "pod",
            "-n",
            "wasmpod-system",
            pod,
            "--ignore-not-found",
        ],
        None,
    );
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: wasmpod-system}}\n\
         spec:\n  nodeName: {node_name}\n  serviceAccountName: wasmpod-node-installer\n  \
         containers: [{{name: installer, image: wasmpod.test/none:1}}]\n"
    );
    ok(
        &kubectl(&["create", "-f", "-"], Some(&manifest)),
        "create the pod",
    );

    // The pod's service account as the kubelet would mount it.
    let account = tempfile::tempdir().expect("tempdir");
    let token = kubectl(
        &[
            "create",
            "token",
            "wasmpod-node-installer",
            "-n",
            "wasmpod-system",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
        ],
        None,
    );
    let token = ok(&token, "kubectl create token").trim().to_owned();
    std::fs::write(account.path().join("token"), &token).expect("write the token");
    std::fs::copy(var("WASMPOD_KUBE_CA"), account.path().join("ca.crt")).expect("copy the CA");
    let api = var("WASMPOD_KUBE_API");
    let (host, port) = api
        .trim_start_matches("https://")
        .rsplit_once(':')
        .expect("host:port");
    let in_pod = [
        ("KUBERNETES_SERVICE_HOST", host),
        ("KUBERNETES_SERVICE_PORT", port),
        ("NODE_NAME", node_name.as_str()),
    ];
    let account_arg = account.path().to_str().expect("utf-8");
    let wait_nodes = |timeout: &str| {
        let out = Command::new(var("WASMPOD_INSTALLER"))
            .args([
                "--service-account",
                account_arg,
                "wait-nodes",
                "--timeout",
                timeout,
            ])
            .envs(in_pod.iter().copied())
            .output()
            .expect("runs");
        eprintln!("wait-nodes: {}\n{}", out.status, text(&out.stderr));
        out
    };

    // RBAC lets the installer patch any node; the chart's policy lets it
    // change only the ready label of its own. The policy takes effect a
    // moment after it is made, so each try is a server-side dry run, which
    // goes through admission but changes nothing if it is let through.
    let as_installer = |args: &[&str]| {
        let out = Command::new(var("WASMPOD_KUBECTL"))
            .args([
                "--kubeconfig",
                "/dev/null",
                "--server",
                &api,
                "--token",
                &token,
            ])
            .args(["--certificate-authority", &var("WASMPOD_KUBE_CA")])
            .args(args)
            .output()
            .expect("kubectl runs");
        text(&out.stderr)
    };
    let refused = |args: &[&str], why: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut dry_run = args.to_vec();
            dry_run.push("--dry-run=server");
            let error = as_installer(&dry_run);
            if error.contains(why) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{args:?} must be refused with {why:?}: {error}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    refused(
        &["label", "node", &other_node, "wasmpod.dev/ready=true"],
        &format!("may change only the node its pod runs on ({node_name}), not {other_node}"),
    );
    refused(
        &[
            "label",
            "node",
            &node_name,
            "wasmpod.dev/ready=true",
            "edge=false",
        ],
        "may change only the wasmpod.dev/ready label, not edge",
    );
    refused(
        &["taint", "node", &node_name, "edge=true:NoSchedule"],
        "may change only a node's labels",
    );
    assert_eq!(ready_label(&other_node), None);
    assert_eq!(ready_label(&node_name), None);

    let node = cri_node("labels", 'l', 2);
    let install_dir = node.dir.join("opt-wasmpod");
    let shim = Path::new(&var("WASMPOD_INSTALLER")).with_file_name("containerd-shim-wasmpod-v1");
    let common = [
        "--service-account",
        account_arg,
        "--config",
        node.config.to_str().expect("utf-8"),
        "--install-dir",
        install_dir.to_str().expect("utf-8"),
        "--bin-dir",
        node.bin_dir.to_str().expect("utf-8"),
    ];
    let install = |shim: &str| {
        let mut args = common.to_vec();
        args.extend(["install", "--shim", shim]);
        run_installer_with(&args, &in_pod)
    };

    // A failed install: a Warning on the node saying why, and no label.
    let out = install("/nonexistent/containerd-shim-wasmpod-v1");
    assert!(!out.status.success(), "an install without a shim fails");
    assert_eq!(ready_label(&node_name), None);
    let events = node_events(&node_name);
    assert!(
        events.contains("Warning WasmpodInstallFailed: ") && events.contains("/nonexistent"),
        "{events}"
    );

    let out = install(shim.to_str().expect("utf-8"));
    ok(&out, "install");
    assert_eq!(
        node.containerd.starts(),
        2,
        "restarted once, by the installer's SIGTERM"
    );
    assert_eq!(
        ready_label(&node_name).as_deref(),
        Some("true"),
        "labelled once containerd lists the runtime: {}",
        text(&out.stderr)
    );
    let events = node_events(&node_name);
    assert!(events.contains("Normal WasmpodInstalled: "), "{events}");

    // The uninstall hook's wait names the node that still has the label.
    let out = wait_nodes("1");
    assert!(!out.status.success(), "a labelled node keeps it waiting");
    let log = text(&out.stderr);
    assert!(log.contains(&format!("{node_name} (true)")), "{log}");

    let mut uninstall = common.to_vec();
    uninstall.push("uninstall");
    ok(&run_installer_with(&uninstall, &in_pod), "uninstall");
    assert_eq!(ready_label(&node_name), None, "the label is gone");
    let events = node_events(&node_name);
    assert!(events.contains("Normal WasmpodUninstalled: "), "{events}");
    ok(&wait_nodes("30"), "wait-nodes with no labelled node");
    assert_eq!(
        std::fs::read_to_string(&node.config).expect("read"),
        node.original
    );

    for node in [&node_name, &other_node] {
        ok(&kubectl(&["delete", "node", node], None), "delete the node");
    }
    ok(
        &kubectl(&["delete", "pod", "-n", "wasmpod-system", pod], None),
        "delete the pod",
    );
}
