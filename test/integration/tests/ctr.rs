//! The shim driven by a real containerd through `ctr`, as a user would.
//!
//! Run by `make test` (test/integration.sh), which starts a private
//! containerd and sets the `WASMPOD_*` variables; `cargo test` alone skips
//! these tests with the reason below.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmpod_integration::{RUNTIME, text, unique, var};

const NAMESPACE: &str = "wasmpod-test";
const IMAGE: &str = "docker.io/wasmpod/test-programs:latest";

struct Env {
    ctr: PathBuf,
    address: String,
    state: PathBuf,
    wasm_cache: PathBuf,
    log: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let env = Env {
            ctr: var("WASMPOD_CTR").into(),
            address: var("WASMPOD_ADDRESS"),
            state: var("WASMPOD_STATE").into(),
            wasm_cache: var("WASMPOD_WASM_CACHE").into(),
            log: var("WASMPOD_CONTAINERD_LOG").into(),
        };
        let programs = Path::new(&var("WASMPOD_FIXTURES")).join("programs.tar");
        let out = ctr_in(
            &env,
            &["images", "import", programs.to_str().expect("utf-8 path")],
        );
        assert!(out.status.success(), "import failed: {}", text(&out.stderr));
        env
    })
}

fn ctr_in(env: &Env, args: &[&str]) -> Output {
    Command::new(&env.ctr)
        .args(["-a", &env.address, "-n", NAMESPACE])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ctr runs")
}

fn ctr(args: &[&str]) -> Output {
    ctr_in(env(), args)
}

/// `ctr run --rm` of `program` with `args`; `flags` go before the image.
fn run_with(flags: &[&str], program: &str, args: &[&str]) -> Output {
    let stem = program.trim_start_matches('/').split('.').next();
    let id = unique(stem.filter(|s| !s.is_empty()).unwrap_or("root"));
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME];
    argv.extend_from_slice(flags);
    argv.extend_from_slice(&[IMAGE, &id, program]);
    argv.extend_from_slice(args);
    ctr(&argv)
}

fn run(program: &str, args: &[&str]) -> Output {
    run_with(&[], program, args)
}

/// Starts `ctr run --rm` in the background and returns once the task runs.
fn spawn_running(program: &str) -> (String, Child) {
    spawn_running_with(&[], program)
}

/// As [`spawn_running`], with `flags` before the image.
#[allow(
    clippy::zombie_processes,
    reason = "the caller waits for the child it gets"
)]
fn spawn_running_with(flags: &[&str], program: &str) -> (String, Child) {
    let env = env();
    let id = unique("bg");
    let mut child = Command::new(&env.ctr)
        .args([
            "-a",
            &env.address,
            "-n",
            NAMESPACE,
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
        ])
        .args(flags)
        .args([IMAGE, &id, program])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = text(&ctr(&["tasks", "ls"]).stdout);
        if tasks
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING"))
        {
            return (id, child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("ctr exits");
            panic!("task {id} never ran:\n{tasks}\nctr: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(id: &str, signal: &str) {
    let out = ctr(&["tasks", "kill", "-s", signal, id]);
    assert!(out.status.success(), "kill {signal}: {}", text(&out.stderr));
}

fn status(out: &Output) -> i32 {
    out.status.code().expect("ctr exited, not signalled")
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn component_prints_its_args_and_env() {
    let out = run_with(
        &["--env", "GREETING=hi from ctr"],
        "/hello.component.wasm",
        &["a b", "c"],
    );
    assert_eq!(status(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from wasm\nargv[0]=/hello.component.wasm\nargv[1]=a b\nargv[2]=c\nGREETING=hi from ctr\n"
    );
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn preview1_module_runs_with_the_image_env() {
    let out = run("/hello.wasm", &["x"]);
    assert_eq!(status(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from wasm\nargv[0]=/hello.wasm\nargv[1]=x\nGREETING=hi\n"
    );
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn python_component_runs() {
    let out = run("/python.component.wasm", &["one"]);
    assert_eq!(status(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from python\nargv=/python.component.wasm one\nGREETING=hi\n"
    );
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn exit_status_is_the_guests() {
    // Preview 1 modules exit with any status, as native processes do. The
    // preview 1 adapter that makes components of them maps every non-zero
    // status to `wasi:cli/exit.exit(err)`, which is 1.
    for (program, code, expected) in [
        ("/exit_code.wasm", 0, 0),
        ("/exit_code.wasm", 3, 3),
        ("/exit_code.wasm", 255, 255),
        ("/exit_code.wasm", 256, 0),
        ("/exit_code.component.wasm", 0, 0),
        ("/exit_code.component.wasm", 3, 1),
    ] {
        let out = run(program, &[&code.to_string()]);
        assert_eq!(
            status(&out),
            expected,
            "{program} {code}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), format!("exiting with {code}\n"));
    }
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn trap_gives_134_and_a_wasm_backtrace() {
    for program in ["/trap.wasm", "/trap.component.wasm"] {
        let out = run(program, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(status(&out), 134, "{program}: {stderr}");
        assert_eq!(text(&out.stdout), "about to trap\n");
        assert!(stderr.starts_with("wasmpod: the guest trapped"), "{stderr}");
        assert!(stderr.contains("wasm backtrace"), "{stderr}");
        assert!(stderr.contains("wasmpod_fixture_crash"), "{stderr}");
        assert!(stderr.contains("unreachable"), "{stderr}");
    }
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn kill_ends_a_spinning_guest() {
    for (signal, code) in [("SIGKILL", 137), ("SIGTERM", 143)] {
        let (id, child) = spawn_running("/loop.component.wasm");
        kill(&id, signal);
        let out = child.wait_with_output().expect("ctr exits");
        assert_eq!(status(&out), code, "{signal}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "spinning\n");
    }
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn kill_ends_a_guest_blocked_in_the_host() {
    for (program, signal, code) in [
        ("/sleep.wasm", "SIGKILL", 137),
        ("/sleep.component.wasm", "SIGTERM", 143),
        ("/sleep.component.wasm", "SIGINT", 130),
    ] {
        let (id, child) = spawn_running(program);
        kill(&id, signal);
        let out = child.wait_with_output().expect("ctr exits");
        assert_eq!(
            status(&out),
            code,
            "{program} {signal}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn signals_that_do_not_end_a_process_are_refused() {
    let (id, child) = spawn_running("/sleep.component.wasm");
    let out = ctr(&["tasks", "kill", "-s", "SIGSTOP", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not supported for Wasm containers"),
        "{}",
        text(&out.stderr)
    );
    kill(&id, "SIGKILL");
    assert_eq!(status(&child.wait_with_output().expect("ctr exits")), 137);
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn a_guest_thread_holds_no_root_and_reaches_only_its_own_files() {
    // The test build's shim probes from the guest's walled thread before
    // the guest runs (shim/src/sandbox.rs), one stderr line per attempt.
    let out = run_with(
        &["--env", "WASMPOD_SANDBOX_PROBE=1"],
        "/hello.component.wasm",
        &[],
    );
    assert_eq!(status(&out), 0, "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("hello from wasm\n"));
    let stderr = text(&out.stderr);
    let landlock = !std::fs::read_to_string(&env().log)
        .expect("containerd log")
        .contains("no Landlock (not in this kernel)");
    // The filter and the dropped capabilities answer EPERM, Landlock EACCES.
    let mut walls = vec![
        ("mount", "EPERM"),
        ("ptrace the parent process", "EPERM"),
        ("setuid 1234", "EPERM"),
        ("raise CAP_SYS_ADMIN", "EPERM"),
        ("tcp connect", "EPERM"),
    ];
    if landlock {
        walls.extend([("open /etc/passwd", "EACCES"), ("tcp bind", "EACCES")]);
    }
    for (what, errno) in walls {
        let line = format!("probe {what}: denied ({errno}");
        assert!(
            stderr.lines().any(|l| l.starts_with(&line)),
            "{line}... not in the guest's stderr:\n{stderr}"
        );
    }
    assert!(
        count_in_log("guest threads run behind") > 0,
        "containerd's log does not say which walls are in force"
    );
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn a_forbidden_system_call_stops_the_guest_with_159_not_the_shim() {
    // The probe makes mount(2) on the guest's own thread, as a guest that
    // broke out of Wasm might: the call fails and the guest is stopped.
    let out = run_with(
        &["--env", "WASMPOD_SANDBOX_PROBE=violate"],
        "/sleep.component.wasm",
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(status(&out), 159, "stderr: {stderr}");
    let line = format!(
        "wasmpod: the guest made system call {}, which its sandbox does not allow",
        nix::libc::SYS_mount
    );
    assert!(stderr.contains(&line), "{line} not in:\n{stderr}");
    // The shim reported the exit and logged why; the next guest runs.
    assert!(count_in_log("guest stopped: it made a system call its sandbox does not allow") > 0);
    hello("after a forbidden system call");
    assert_node_is_clean();
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn reads_a_file_from_its_working_directory() {
    for program in ["/read_file.wasm", "/read_file.component.wasm"] {
        let out = run(program, &[]);
        assert_eq!(status(&out), 0, "{program}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hello from a file in the image\n");
        // The image is all the guest sees: the host's files are not there.
        let out = run(program, &["/etc/hostname"]);
        assert_ne!(status(&out), 0, "{program}");
        assert!(text(&out.stderr).contains("cannot open /etc/hostname"));
    }
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn writes_100_mib_to_stdout() {
    let out = run("/flood.component.wasm", &["100"]);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 100 << 20);
    assert!(out.stdout.iter().all(|&b| b == b'x' || b == b'\n'));
    assert_eq!(text(&out.stderr), "wrote 100 MiB\n");
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn takes_ten_thousand_args() {
    let args: Vec<String> = (0..10_000).map(|i| format!("arg{i:05}")).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("/count_args.wasm", &args);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "args=10000 bytes=80000\n");
    // The preview 1 adapter copies arguments into a fixed arena and traps
    // when they do not fit: the guest fails with a message, the node is fine.
    let out = run("/count_args.component.wasm", &args);
    assert_eq!(status(&out), 134, "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("wasmpod: the guest trapped"));
    let out = run("/count_args.component.wasm", &args[..100]);
    assert_eq!(text(&out.stdout), "args=100 bytes=800\n");
}

/// A CRI pod through ctr: the sandbox container runs nothing and holds
/// until stopped, and every container of the pod is served by one shim.
#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn containers_of_one_pod_share_one_shim_and_its_sandbox_holds() {
    let pod = unique("pod");
    let sandbox_id = format!("io.kubernetes.cri.sandbox-id={pod}");
    let (sandbox, sandbox_ctr) = spawn_running_with(
        &[
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
            "--annotation",
            &sandbox_id,
        ],
        "/not-even-read.wasm",
    );
    let (guest, guest_ctr) = spawn_running_with(
        &[
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            &sandbox_id,
        ],
        "/sleep.component.wasm",
    );
    assert_eq!(our_shims(&env().address).len(), 1, "one shim for the pod");
    let tasks = text(&ctr(&["tasks", "ls"]).stdout);
    let pid = |id: &str| {
        tasks
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    };
    assert_eq!(
        pid(&sandbox),
        pid(&guest),
        "both tasks live in the same shim:\n{tasks}"
    );

    // A short-lived container of the pod comes and goes; the pod stays up.
    let out = run_with(&["--annotation", &sandbox_id], "/hello.component.wasm", &[]);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    assert_eq!(our_shims(&env().address).len(), 1);

    kill(&guest, "SIGKILL");
    assert_eq!(
        status(&guest_ctr.wait_with_output().expect("ctr exits")),
        137
    );
    // Like the pause process, the sandbox ends cleanly on SIGTERM.
    kill(&sandbox, "SIGTERM");
    assert_eq!(
        status(&sandbox_ctr.wait_with_output().expect("ctr exits")),
        0
    );
    assert_node_is_clean();
}

/// Bad programs fail `ctr run` with a message that says why, and leave no
/// task, container state or mount behind.
#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn bad_entrypoints_are_refused_clearly() {
    for (program, expected) in [
        (
            "/data.txt",
            "is neither a WebAssembly module or component nor a Linux binary or script",
        ),
        ("/truncated.wasm", "is not a valid WebAssembly component"),
        (
            "/unknown-world.component.wasm",
            "cannot run here: wasmpod runs WASI preview 2 command components",
        ),
        (
            "/missing.wasm",
            "entrypoint /missing.wasm was not found in the container image",
        ),
        ("/", "is not a regular file"),
    ] {
        let out = run(program, &[]);
        let stderr = text(&out.stderr);
        assert_ne!(status(&out), 0, "{program} ran");
        assert!(stderr.contains(expected), "{program}: {stderr}");
    }
    assert_node_is_clean();
}

/// `ctr run --rm` of `args` in the native fixture image `archive`
/// (`image`) under wasmpod.
fn run_native(archive: &str, image: &str, args: &[&str]) -> Output {
    let fixture = Path::new(&var("WASMPOD_FIXTURES")).join(archive);
    let out = ctr(&["images", "import", fixture.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "import failed: {}", text(&out.stderr));
    let id = unique("native");
    let mut argv = vec![
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--env",
        "GREETING=native",
    ];
    argv.extend_from_slice(&[image, &id]);
    argv.extend_from_slice(args);
    ctr(&argv)
}

/// A Linux program where Wasm is expected runs as runc would run it, with
/// its arguments, environment, output and exit status, and leaves nothing.
#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn a_linux_binary_runs_through_runc() {
    let hello = run_native(
        "hello-native.tar",
        "docker.io/wasmpod/hello-native:latest",
        &["/hello", "a b"],
    );
    assert_eq!(status(&hello), 0, "{}", text(&hello.stderr));
    assert_eq!(
        text(&hello.stdout),
        "hello from wasm\nargv[0]=/hello\nargv[1]=a b\nGREETING=native\n",
        "the C program's own words, natively"
    );
    let failed = run_native(
        "sidecar.tar",
        "docker.io/wasmpod/sidecar:latest",
        &["/sidecar", "write", "/no/such/dir/file", "x"],
    );
    assert_eq!(status(&failed), 1, "{}", text(&failed.stderr));
    assert!(
        text(&failed.stderr).contains("/no/such/dir/file: No such file or directory"),
        "{}",
        text(&failed.stderr)
    );
    assert_node_is_clean();
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn reactors_run_their_default_export_or_the_one_named_after_hash() {
    // As `wasmtime run` runs them: `_initialize` (which runs the C
    // constructors, hence 42) and then the default export, or the export
    // that the entrypoint names after `#` (a component's without
    // `_initialize`, which the component runs when it is instantiated).
    for (program, expected_status, expected_stdout) in [
        (
            "/library.wasm",
            0,
            "default export ran after _initialize (42)\n",
        ),
        (
            "/library.wasm#greet",
            0,
            "greet ran after _initialize (42)\n",
        ),
        (
            "/library.component.wasm#greet",
            0,
            "greet ran after _initialize (42)\n",
        ),
        // A `result` export that returns its error fails, as wasi:cli/run.
        ("/library.component.wasm#fail", 1, ""),
        // The name after `#` is not part of the program's argv[0].
        (
            "/hello.wasm#_start",
            0,
            "hello from wasm\nargv[0]=/hello.wasm\nGREETING=hi\n",
        ),
    ] {
        let out = run(program, &[]);
        assert_eq!(
            (status(&out), text(&out.stdout).as_str()),
            (expected_status, expected_stdout),
            "{program}: {}",
            text(&out.stderr)
        );
    }
    for (program, expected) in [
        (
            "/library.wasm#add",
            "the module's export `add` takes parameters",
        ),
        (
            "/library.wasm#nosuch",
            "the module exports no function `nosuch`",
        ),
        (
            "/library.component.wasm#add",
            "the component's export `add` takes parameters",
        ),
        (
            "/library.component.wasm",
            "cannot run here: wasmpod runs WASI preview 2 command components",
        ),
    ] {
        let out = run(program, &[]);
        let stderr = text(&out.stderr);
        assert_ne!(status(&out), 0, "{program} ran");
        assert!(stderr.contains(expected), "{program}: {stderr}");
    }
    assert_node_is_clean();
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn compiled_code_is_cached_and_a_corrupt_entry_is_recompiled() {
    hello("first run");
    // The image's layers do not change, so the second run recalls the
    // digest the first one computed.
    let recalled_before = count_in_log("digest recalled for the image layers");
    hello("second run");
    assert!(count_in_log("digest recalled for the image layers") > recalled_before);
    let artifacts: Vec<PathBuf> = std::fs::read_dir(&env().wasm_cache)
        .expect("the cache directory exists after a run")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert!(!artifacts.is_empty(), "no compiled code was cached");
    for artifact in &artifacts {
        let mut bytes = std::fs::read(artifact).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(artifact, &bytes).expect("corrupt");
    }
    let corrupt_before = count_in_log("discarded a corrupt compiled-code cache entry");
    hello("run with a corrupt cache");
    assert!(count_in_log("discarded a corrupt compiled-code cache entry") > corrupt_before);
    hello("run after the repair");
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn a_full_read_only_or_truncated_cache_costs_a_compile_never_a_start() {
    let cache = env().wasm_cache.clone();
    std::fs::create_dir_all(&cache).expect("cache directory");
    let clear = || {
        for entry in cache_files(&cache) {
            std::fs::remove_file(entry).expect("remove a cache file");
        }
    };
    let logged = |needle: &str, before: usize, what: &str| {
        assert!(
            count_in_log(needle) > before,
            "{what}: the log does not say {needle:?}"
        );
    };

    clear();
    {
        let _full = Overlay::tmpfs(&cache, "size=64k,mode=0700");
        let before = count_in_log("No space left on device");
        hello("with the cache full");
        logged("No space left on device", before, "a full cache");
        assert_eq!(
            cache_files(&cache),
            Vec::<PathBuf>::new(),
            "a failed write left files"
        );
    }
    clear();
    {
        let _read_only = Overlay::read_only(&cache);
        let before = count_in_log("Read-only file system");
        hello("with the cache read-only");
        logged("Read-only file system", before, "a read-only cache");
    }
    hello("with the cache writable again");
    let cached = cache_files(&cache);
    assert!(
        cached
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "cwasm")),
        "the next good start cached nothing: {cached:?}"
    );

    // A guest running from a cache entry (the second start of its
    // program loads what the first compiled) while every entry is cut
    // in half under it.
    let (id, child) = spawn_running("/loop.component.wasm");
    kill(&id, "SIGKILL");
    child.wait_with_output().expect("ctr exits");
    let (id, child) = spawn_running("/loop.component.wasm");
    for entry in cache_files(&cache) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&entry)
            .expect("open a cache entry");
        let len = file.metadata().expect("stat").len();
        file.set_len(len / 2).expect("truncate a cache entry");
    }
    let before = count_in_log("discarded a corrupt compiled-code cache entry");
    hello("with every entry truncated");
    logged(
        "discarded a corrupt compiled-code cache entry",
        before,
        "a truncated cache",
    );
    let before = count_in_log("discarded a corrupt compiled-code cache entry");
    hello("after the repair");
    assert_eq!(
        count_in_log("discarded a corrupt compiled-code cache entry"),
        before,
        "the entry was not repaired"
    );
    // What the cut costs: the running guest's shim dies of SIGBUS when it
    // next reads the missing part: the trap the kill raises looks up its
    // metadata, or the guest's own code sat in the cut half and it died
    // before the kill came (then ctr's --rm has already removed it). The
    // cache never cuts an entry (it replaces by rename, in a root-only
    // directory), so only a node's root does this; the shim's death is the
    // kind a node survives (a_killed_shim_... in pods.rs).
    let out = ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    assert!(
        out.status.success() || text(&out.stderr).contains("not found"),
        "kill SIGKILL: {}",
        text(&out.stderr)
    );
    let out = child.wait_with_output().expect("ctr exits");
    assert_ne!(status(&out), 0, "the guest running from a truncated entry");
    assert_eq!(
        count_in_log(&format!("cleaning up after shim disconnected\" id={id} ")),
        1,
        "containerd did not clean up after the shim"
    );
    assert_node_is_clean();
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn after_a_node_crash_the_next_containerd_cleans_up_and_runs() {
    // A crash: containerd and the shims SIGKILLed under running guests,
    // their bundles, rootfs mounts and cgroups left as they were.
    let crashed: Vec<String> = (0..2).map(|_| unique("crashed")).collect();
    for id in &crashed {
        let out = ctr(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            IMAGE,
            id,
            "/sleep.component.wasm",
        ]);
        assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    }
    let shims = our_shims(&env().address);
    assert_eq!(shims.len(), 2, "one shim a container: {shims:?}");
    wasmpod_integration::stop_containerd(nix::sys::signal::Signal::SIGKILL);
    for pid in shims {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill a shim");
    }

    // The next containerd finds the bundles with no shim behind them and
    // runs each one's `delete`, which unmounts and removes what it left.
    wasmpod_integration::start_containerd();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = text(&ctr(&["tasks", "ls"]).stdout);
        if !crashed.iter().any(|id| tasks.contains(id.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "tasks still listed:\n{tasks}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &crashed {
        let out = ctr(&["containers", "rm", id]);
        assert!(
            out.status.success(),
            "containers rm {id}: {}",
            text(&out.stderr)
        );
    }
    assert_node_is_clean();
    hello("after the crash");
    // The container's cgroups went with the delete (cgroupsPath
    // /wasmpod-test/ID under every controller ctr sets).
    for id in &crashed {
        for controller in ["cpu", "memory", "pids"] {
            let cgroup = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(NAMESPACE)
                .join(id);
            assert!(!cgroup.exists(), "{} was left", cgroup.display());
        }
    }
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn after_a_reboot_the_same_containers_start_again() {
    // A reboot: containerd and the shims die, and what lived in memory goes
    // with them: containerd's state directory (bundles, fifos), the rootfs
    // mounts, the containers' cgroups. Containerd's root (containers,
    // snapshots, images) and wasmpod's cache stay, and so do the shims'
    // socket files, which live outside the state directory.
    let ids: Vec<String> = (0..2).map(|_| unique("rebooted")).collect();
    for id in &ids {
        let out = ctr(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            IMAGE,
            id,
            "/sleep.component.wasm",
        ]);
        assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    }
    let shims = our_shims(&env().address);
    assert_eq!(shims.len(), 2, "one shim a container: {shims:?}");
    wasmpod_integration::stop_containerd(nix::sys::signal::Signal::SIGKILL);
    for pid in shims {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill a shim");
    }
    let state = &env().state;
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .expect("mounts")
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(state))
        .collect();
    // Innermost first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in &mounts {
        nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH)
            .unwrap_or_else(|e| panic!("unmount {mount}: {e}"));
    }
    for entry in std::fs::read_dir(state).expect("state dir") {
        let path = entry.expect("entry").path();
        std::fs::remove_dir_all(&path)
            .or_else(|_| std::fs::remove_file(&path))
            .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }
    // The guests' threads were in these; with every process gone they are
    // empty, and after a reboot they would not exist.
    for id in &ids {
        for controller in ["cpu", "memory", "pids"] {
            let cgroup = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(NAMESPACE)
                .join(id);
            if cgroup.exists() {
                std::fs::remove_dir(&cgroup)
                    .unwrap_or_else(|e| panic!("remove {}: {e}", cgroup.display()));
            }
        }
    }

    wasmpod_integration::start_containerd();
    let containers = text(&ctr(&["containers", "ls", "-q"]).stdout);
    let tasks = text(&ctr(&["tasks", "ls"]).stdout);
    for id in &ids {
        assert!(
            containers.contains(id.as_str()),
            "{id} was forgotten:\n{containers}"
        );
        assert!(!tasks.contains(id.as_str()), "{id} has a task:\n{tasks}");
    }
    // The same container starts again: a new bundle and rootfs mount, and a
    // shim that finds the dead one's socket file in its place.
    let again = &ids[0];
    let out = ctr(&["tasks", "start", "-d", again]);
    assert!(
        out.status.success(),
        "start {again} again: {}",
        text(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = text(&ctr(&["tasks", "ls"]).stdout);
        if tasks
            .lines()
            .any(|l| l.starts_with(again.as_str()) && l.contains("RUNNING"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{again} is not running:\n{tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    kill(again, "SIGKILL");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&ctr(&["tasks", "ls"]).stdout)
        .lines()
        .any(|l| l.starts_with(again.as_str()) && l.contains("STOPPED"))
    {
        assert!(Instant::now() < deadline, "{again} did not stop on SIGKILL");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ctr(&["tasks", "delete", again]);
    assert!(out.status.success(), "tasks delete: {}", text(&out.stderr));
    for id in &ids {
        let out = ctr(&["containers", "rm", id]);
        assert!(
            out.status.success(),
            "containers rm {id}: {}",
            text(&out.stderr)
        );
    }
    assert_node_is_clean();
    hello("after the reboot");
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn a_thousand_tasks_eight_at_a_time_end_as_they_should_and_leave_nothing() {
    // A thousand on the newest containerd; two hundred on the older two,
    // which the other tests cover already, keep `make test` short.
    let tasks: usize = if var("WASMPOD_SUITE") == "forky" {
        1000
    } else {
        200
    };
    const PARALLEL: usize = 8;
    let fifos_before = fifo_dirs();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= tasks {
                        break;
                    }
                    if let Err(e) = churn_one(n) {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("task {n}: {e}"));
                    }
                }
            });
        }
    });
    let took = started.elapsed();
    eprintln!(
        "{tasks} tasks, {PARALLEL} at a time: {:.1} s, {:.1} tasks/s",
        took.as_secs_f64(),
        tasks as f64 / took.as_secs_f64()
    );
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {tasks} went wrong, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    assert_node_is_clean();
    assert_eq!(
        fifo_dirs(),
        fifos_before,
        "ctr's fifo directories were left"
    );
    for controller in ["cpu", "memory", "pids"] {
        let parent = Path::new("/sys/fs/cgroup").join(controller).join(NAMESPACE);
        let left: Vec<String> = std::fs::read_dir(&parent)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("churn-"))
            .collect();
        assert!(
            left.is_empty(),
            "cgroups left under {}: {left:?}",
            parent.display()
        );
    }
}

/// One task of the churn, chosen by `n`: an exit 0, an exit status, a trap,
/// a SIGKILL of a guest blocked in the host, a SIGTERM of a spinning one.
/// Each is bounded: a `ctr` that has not ended after a minute is a hang.
fn churn_one(n: usize) -> Result<(), String> {
    let id = format!("churn-{}-{n}", std::process::id());
    let (program, args, signal, expected) = match n % 5 {
        0 => ("/hello.wasm", &[][..], None, 0),
        1 => ("/exit_code.wasm", &["7"][..], None, 7),
        2 => ("/trap.wasm", &[][..], None, 134),
        3 => ("/sleep.wasm", &[][..], Some("SIGKILL"), 137),
        _ => ("/loop.wasm", &[][..], Some("SIGTERM"), 143),
    };
    let env = env();
    let mut child = Command::new(&env.ctr)
        .args([
            "-a",
            &env.address,
            "-n",
            NAMESPACE,
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
        ])
        .args([IMAGE, &id, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ctr: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    if let Some(signal) = signal {
        // Signalled once it runs, as a kubelet stops a started container
        // (a kill between create and start would end it before `ctr run`
        // starts it, and ctr would fail on that).
        loop {
            let tasks = text(&ctr(&["tasks", "ls"]).stdout);
            if tasks
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING"))
            {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return Err(format!("never ran:\n{tasks}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = ctr(&["tasks", "kill", "-s", signal, &id]);
        if !out.status.success() {
            let _ = child.kill();
            return Err(format!("kill {signal}: {}", text(&out.stderr)));
        }
    }
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{program} hung"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    match status.code() {
        Some(code) if code == expected => Ok(()),
        code => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            Err(format!(
                "{program}: status {code:?}, not {expected}: {stderr}"
            ))
        }
    }
}

/// The directories of ctr's fifos (one per `ctr run`).
fn fifo_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/run/containerd/fifo")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

fn hello(what: &str) {
    let out = run("/hello.component.wasm", &[]);
    assert_eq!(status(&out), 0, "{what}: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("hello from wasm\n"), "{what}");
}

/// The compiled-code cache's files (its entries, and any temp file a write
/// left), sorted; not the `digests` directory beside them.
fn cache_files(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache)
        .expect("the cache directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// A mount over a directory for part of a test, unmounted on drop.
struct Overlay(PathBuf);

impl Overlay {
    fn tmpfs(dir: &Path, options: &str) -> Self {
        mount(&["-t", "tmpfs", "-o", options, "wasmpod-test"], dir);
        Self(dir.to_owned())
    }

    fn read_only(dir: &Path) -> Self {
        let dir_arg = dir.to_str().expect("utf-8 path");
        mount(&["--bind", dir_arg], dir);
        let overlay = Self(dir.to_owned());
        mount(&["-o", "remount,bind,ro"], dir);
        overlay
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("mount runs");
    assert!(
        out.status.success(),
        "mount {args:?}: {}",
        text(&out.stderr)
    );
}

fn count_in_log(needle: &str) -> usize {
    std::fs::read_to_string(&env().log)
        .expect("containerd log")
        .matches(needle)
        .count()
}

#[test]
#[ignore = "needs a private containerd: run `make test`"]
fn fifty_runs_in_a_row_leave_nothing_behind() {
    for i in 0..50 {
        let out = run("/hello.component.wasm", &[&i.to_string()]);
        assert_eq!(status(&out), 0, "run {i}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&format!("argv[1]={i}\n")),
            "run {i} exited 0 without its output; stdout: {:?}, stderr: {:?}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    assert_node_is_clean();
}

/// No shim of this containerd runs, nothing is mounted under its state
/// directory and no task bundle is left.
fn assert_node_is_clean() {
    let env = env();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shims = our_shims(&env.address);
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
            .expect("mounts")
            .lines()
            .filter(|l| l.contains(env.state.to_str().expect("utf-8")))
            .map(str::to_owned)
            .collect();
        let bundles: Vec<PathBuf> = std::fs::read_dir(
            env.state
                .join("io.containerd.runtime.v2.task")
                .join(NAMESPACE),
        )
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
        if shims.is_empty() && mounts.is_empty() && bundles.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: shims {shims:?}, mounts {mounts:?}, bundles {bundles:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn our_shims(address: &str) -> Vec<u32> {
    wasmpod_integration::shims(|args| args.iter().any(|a| a == address))
}
