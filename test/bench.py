#!/usr/bin/env python3
"""`make bench`: wasmpod against runc, in one run of one private containerd.

Measures wall time of `ctr run --rm` for the hello component through wasmpod
(cold: empty compiled-code cache; warm: cached) and for the same program
built natively and run by runc; the shim's memory; and how long a SIGKILL
takes to end a guest spinning in a loop. Then, on a containerd that unpacks
Wasm artifacts, pull-to-running of a 5 MB component from the local registry
and cold/warm starts of artifacts. Then, pods through the CRI: start to first
HTTP response, req/s and idle memory of a wasi:http pod against its native
twin under runc (test/integration/src/bin/cri-bench.rs). Then task churn
through containerd's API (test/integration/src/bin/churn.rs), and last the
density of idle HTTP pods (cri-bench --density). Prints Markdown
tables.

    test/bench.py FIXTURES_DIR [--suite bookworm] [--artifact-suite forky] [--runs 30]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def paths():
    """test/paths.sh's variables: where the build and its caches are."""
    out = subprocess.run([os.path.join(HERE, "paths.sh")], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


# The binaries measured: the shipped (release) ones under `make bench`.
BIN = paths()["WASMPOD_BIN"]
REGISTRY = os.path.join(HERE, "registry.sh")
RUNTIME = "io.containerd.wasmpod.v1"
NS = "bench"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


class Containerd:
    def __init__(self, suite):
        self.suite = suite
        script = os.path.join(HERE, "containerd.sh")
        self.script = script
        subprocess.run([script, "stop", suite], check=True)
        subprocess.run([script, "start", suite], check=True)
        # What test/containerd.sh says to talk to it, for child processes too.
        self.env = dict(line.split("=", 1) for line in sh(script, "env", suite).stdout.split())
        self.ctr_bin, self.sock = self.env["WASMPOD_CTR"], self.env["WASMPOD_ADDRESS"]
        self.wasm_cache = self.env["WASMPOD_WASM_CACHE"]
        self.log = self.env["WASMPOD_CONTAINERD_LOG"]

    def ctr(self, *args, check=True):
        return subprocess.run(
            [self.ctr_bin, "-a", self.sock, "-n", NS, *args],
            check=check, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )

    def stop(self):
        subprocess.run([self.script, "stop", self.suite], check=True)


def timed_run(c, name, runtime_args, image, argv):
    start = time.perf_counter()
    out = c.ctr("run", "--rm", *runtime_args, image, name, *argv)
    elapsed = (time.perf_counter() - start) * 1000
    if "hello from wasm" not in out.stdout:
        sys.exit(f"unexpected output from {image}: {out.stdout!r} {out.stderr!r}")
    return elapsed


def pct(values, p):
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def shim_pids(sock):
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "containerd-shim-wasmpod-v1" in cmd and sock in cmd:
            pids.append(pid)
    return pids


def proc_kib(pid, table, field):
    """A `Field: N kB` value from /proc/PID/status or /proc/PID/smaps_rollup."""
    with open(f"/proc/{pid}/{table}") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def text_kib(pid):
    """Resident KiB of the shim binary's executable mappings: what the
    symbol order (shim/symbol-order.txt) keeps small."""
    total, in_text = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                in_text = "x" in fields[1] and fields[-1].endswith("/containerd-shim-wasmpod-v1")
            elif in_text and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def spawn_guest(c, name, program):
    """`ctr run --rm` of a test program in the background."""
    return subprocess.Popen(
        [c.ctr_bin, "-a", c.sock, "-n", NS, "run", "--rm", "--runtime", RUNTIME,
         "docker.io/wasmpod/test-programs:latest", name, program],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )


def running(c, name, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in c.ctr("tasks", "ls").stdout.splitlines():
            if line.startswith(name) and "RUNNING" in line:
                return
        time.sleep(0.01)
    sys.exit(f"{name} never ran")


def shim_memory(c, cold):
    """VmHWM/VmRSS (KiB) of the shim holding one sleeping component guest."""
    if cold:
        shutil.rmtree(c.wasm_cache, ignore_errors=True)
    name = f"mem-{'cold' if cold else 'warm'}"
    proc = spawn_guest(c, name, "/sleep.component.wasm")
    running(c, name)
    time.sleep(0.2)
    (pid,) = shim_pids(c.sock)
    hwm, rss = proc_kib(pid, "status", "VmHWM"), proc_kib(pid, "status", "VmRSS")
    text = text_kib(pid)
    c.ctr("tasks", "kill", "-s", "SIGKILL", name)
    proc.wait(timeout=30)
    return hwm, rss, text


def pods_memory(c, pods):
    """Mean PSS and private memory (KiB) per shim with `pods` guests running,
    one shim each: what one more pod costs the node."""
    procs, names = [], [f"pod-{i}" for i in range(pods)]
    for name in names:
        procs.append(spawn_guest(c, name, "/sleep.component.wasm"))
    for name in names:
        running(c, name)
    time.sleep(0.2)
    pids = shim_pids(c.sock)
    if len(pids) != pods:
        sys.exit(f"expected {pods} shims, found {len(pids)}")
    pss = sum(proc_kib(p, "smaps_rollup", "Pss") for p in pids) / pods
    private = sum(proc_kib(p, "smaps_rollup", "Private_Dirty") for p in pids) / pods
    for name, proc in zip(names, procs):
        c.ctr("tasks", "kill", "-s", "SIGKILL", name)
        proc.wait(timeout=30)
    return pss, private


def shim_kill_ms(log_path, names):
    """From the shim's own log: 'container killed' to 'container exited'."""
    stamps = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            for event in ("container killed", "container exited"):
                if event in line:
                    for name in names:
                        if f"id={name} " in line or line.rstrip().endswith(f"id={name}"):
                            ts = line.split()[0]
                            stamps.setdefault(name, {})[event] = ts
    out = []
    for name in names:
        ev = stamps.get(name, {})
        if len(ev) == 2:
            t = [time.mktime(time.strptime(v[:19], "%Y-%m-%dT%H:%M:%S")) + float("0." + v[20:-1])
                 for v in (ev["container killed"], ev["container exited"])]
            out.append((t[1] - t[0]) * 1000)
    return out


def kill_latency(c, runs):
    """ms from `ctr tasks kill -s SIGKILL` returning to the task being STOPPED."""
    out = []
    for i in range(runs):
        name = f"kill-{i}"
        proc = spawn_guest(c, name, "/loop.component.wasm")
        running(c, name)
        start = time.perf_counter()
        c.ctr("tasks", "kill", "-s", "SIGKILL", name)
        proc.wait(timeout=30)
        out.append((time.perf_counter() - start) * 1000)
        if proc.returncode != 137:
            sys.exit(f"loop guest exited {proc.returncode}, expected 137")
    return out


class Artifacts:
    """Runs images the way the CRI does: a container created through
    containerd's API (`ctr run` refuses the Wasm artifact's config type),
    then `ctr task start`, which returns when the guest exits."""

    def __init__(self, c):
        self.c = c
        self.create = os.path.join(BIN, "create-container")
        self.spec = json.loads(c.ctr("oci", "spec").stdout)
        self.spec_dir = os.path.join(os.path.dirname(c.wasm_cache), "bench-specs")
        os.makedirs(self.spec_dir, exist_ok=True)

    def run(self, name, image, argv, expect):
        """ms from creating the container to the guest's exit."""
        spec = dict(self.spec, process=dict(self.spec["process"], args=argv))
        path = os.path.join(self.spec_dir, name + ".json")
        with open(path, "w") as f:
            json.dump(spec, f)
        start = time.perf_counter()
        sh(self.create, self.c.sock, NS, name, image, path)
        out = self.c.ctr("task", "start", name, check=False)
        elapsed = (time.perf_counter() - start) * 1000
        self.c.ctr("task", "rm", "-f", name, check=False)
        self.c.ctr("containers", "rm", name)
        if out.returncode != 0 or expect not in out.stdout:
            sys.exit(f"{image} failed ({out.returncode}): {out.stdout!r} {out.stderr!r}")
        return elapsed

    def pull_to_running(self, name, image, argv, expect, layer):
        """ms from `ctr images pull` of an image the node does not have
        (nor its compiled code) to the guest's exit."""
        self.c.ctr("images", "rm", "--sync", image, check=False)
        held = [line.split()[0] for line in self.c.ctr("content", "ls").stdout.splitlines()[1:]]
        if layer in held:
            sys.exit(f"{layer} is still in the content store; the pull would not be measured")
        shutil.rmtree(self.c.wasm_cache, ignore_errors=True)
        start = time.perf_counter()
        self.c.ctr("images", "pull", "--plain-http", image)
        pulled = (time.perf_counter() - start) * 1000
        return pulled + self.run(name, image, argv, expect)


def artifact_bench(fixtures, suite, runs):
    """Pushes the hello and the 5 MB component with `wasmpod push` to a
    private registry and measures them through containerd `suite`."""
    cli = os.path.join(BIN, "wasmpod")
    subprocess.run([REGISTRY, "stop", "plain"], check=True)
    subprocess.run([REGISTRY, "start", "plain"], check=True)
    try:
        addr = sh(REGISTRY, "addr", "plain").stdout.strip()
        files = {"hello": os.path.join(fixtures, "rootfs/hello.component.wasm"),
                 "big": os.path.join(fixtures, "big.component.wasm")}
        refs, layers = {}, {}
        for name, path in files.items():
            ref = f"{addr}/bench/{name}:1"
            sh(cli, "push", path, ref, "--plain-http")
            refs[name] = ref
            layers[name] = json.loads(sh(cli, "inspect", path, "--json").stdout)["digest"]
        big_mib = os.path.getsize(files["big"]) / (1 << 20)
        c = Containerd(suite)
        try:
            version = sh(c.ctr_bin, "--version").stdout.split()[2]
            a = Artifacts(c)
            hello = (refs["hello"], ["hello"], "hello from wasm")
            # With an argument the big program exits at once: its start alone.
            big = (refs["big"], ["big", "start-only"], "none called")
            big_run = (refs["big"], ["big"], "checksum")
            slow_runs = max(5, runs // 3)
            pulls = [a.pull_to_running(f"pull-{i}", *big, layers["big"]) for i in range(slow_runs)]
            cold, warm, warm_run, hello_warm = [], [], [], []
            c.ctr("images", "pull", "--plain-http", refs["hello"])
            a.run("hello-warmup", *hello)
            for i in range(slow_runs):
                shutil.rmtree(c.wasm_cache, ignore_errors=True)
                cold.append(a.run(f"cold-{i}", *big))
            for i in range(runs):
                warm.append(a.run(f"warm-{i}", *big))
                hello_warm.append(a.run(f"hello-{i}", *hello))
                warm_run.append(a.run(f"warm-run-{i}", *big_run))
        finally:
            c.stop()
    finally:
        subprocess.run([REGISTRY, "stop", "plain"], check=True)

    print()
    print(f"containerd {version} (Debian {suite}); Wasm artifacts pushed with `wasmpod push` "
          f"to a local registry; times are wall-clock ms from creating the container "
          f"(through containerd's API, as the CRI does) to the guest's exit")
    print()
    print("| what | runs | p50 | p90 |")
    print("|---|---:|---:|---:|")
    size = f"{big_mib:.1f} MiB component"
    for label, v in ((f"pull-to-running, {size}, nothing on the node", pulls),
                     (f"start, {size}, cold cache (compiles)", cold),
                     (f"start, {size}, warm cache", warm),
                     ("start, hello component artifact, warm cache", hello_warm),
                     (f"run, {size} calling all of its code, warm cache", warm_run)):
        print(f"| {label} | {len(v)} | {pct(v, 50):.1f} | {pct(v, 90):.1f} |")
    print(f"| warm start: {size} minus hello (p50) | | "
          f"{pct(warm, 50) - pct(hello_warm, 50):+.1f} | |")


def tool_on(fixtures, suite, argv):
    """Runs one of the bench tools against a containerd of `suite` started
    for it: that containerd's version and what the tool printed."""
    c = Containerd(suite)
    try:
        env = dict(os.environ, WASMPOD_FIXTURES=fixtures, **c.env)
        version = sh(c.ctr_bin, "--version").stdout.split()[2]
        out = subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]],
                             env=env, capture_output=True, text=True)
    finally:
        c.stop()
    if out.returncode != 0:
        sys.exit(f"{argv[0]} failed: {out.stdout}{out.stderr}")
    return version, out.stdout


def cri_bench(fixtures, suite, runs):
    """Pods through containerd's CRI: the wasi:http example pod against its
    native twin under runc (cri-bench prints the tables)."""
    version, out = tool_on(fixtures, suite, ["cri-bench", str(runs)])
    print()
    print(f"containerd {version} (Debian {suite}), its CRI plugin and a CNI bridge.", end=" ")
    print(out, end="")


def churn_bench(fixtures, suite, tasks, parallel):
    """Task churn through containerd's API: hello under wasmpod against
    its native twin under runc (the churn tool prints the tables and fails
    if anything of the churn is left on the node)."""
    version, out = tool_on(fixtures, suite, ["churn", str(tasks), str(parallel)])
    print()
    print(f"containerd {version} (Debian {suite}).", end=" ")
    print(out, end="")


def density_bench(fixtures, suite, pods, native):
    """Idle wasi:http pods until `pods`, and native twins until `native`,
    each answering (cri-bench --density prints the tables)."""
    version, out = tool_on(fixtures, suite, ["cri-bench", "--density", str(pods), str(native)])
    print()
    print(f"containerd {version} (Debian {suite}).", end=" ")
    print(out, end="")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures")
    ap.add_argument("--suite", default=os.environ.get("BENCH_SUITE", "bookworm"))
    ap.add_argument("--artifact-suite", default=os.environ.get("BENCH_ARTIFACT_SUITE", "forky"),
                    help="a containerd (1.7.7 or later) that unpacks Wasm artifacts")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "30")))
    a = ap.parse_args()

    c = Containerd(a.suite)
    try:
        for tar in ("hello.tar", "hello-native.tar", "programs.tar"):
            c.ctr("images", "import", os.path.join(a.fixtures, tar))
        version = sh(c.ctr_bin, "--version").stdout.split()[2]
        wasm_img, native_img = "docker.io/wasmpod/hello:latest", "docker.io/wasmpod/hello-native:latest"
        wasm = ["--runtime", RUNTIME]
        # Warm both paths once (image unpack, page cache) before measuring.
        timed_run(c, "warmup-runc", [], native_img, ["/hello"])
        timed_run(c, "warmup-wasm", wasm, wasm_img, ["/hello.wasm"])

        runc, cold, warm = [], [], []
        for i in range(a.runs):
            # Interleave so drift on the machine hits all three alike.
            runc.append(timed_run(c, f"runc-{i}", [], native_img, ["/hello"]))
            shutil.rmtree(c.wasm_cache, ignore_errors=True)
            cold.append(timed_run(c, f"cold-{i}", wasm, wasm_img, ["/hello.wasm"]))
            warm.append(timed_run(c, f"warm-{i}", wasm, wasm_img, ["/hello.wasm"]))
        hwm_cold, _, _ = shim_memory(c, cold=True)
        hwm_warm, rss_warm, text_warm = shim_memory(c, cold=False)
        kill_runs = max(5, a.runs // 3)
        kills = kill_latency(c, kill_runs)
        inner_kills = shim_kill_ms(c.log, [f"kill-{i}" for i in range(kill_runs)])
        pod_pss, pod_private = pods_memory(c, 5)
    finally:
        c.stop()

    base = pct(runc, 50)
    print()
    print(f"shim under test: {os.path.join(BIN, 'containerd-shim-wasmpod-v1')} "
          f"(Cargo profile {os.path.basename(BIN)})")
    print()
    print(f"containerd {version} (Debian {a.suite}), {a.runs} runs each, "
          f"{os.cpu_count()} CPUs; times are wall-clock ms of `ctr run --rm`")
    print()
    print("| what | p50 | p90 | p50 vs runc |")
    print("|---|---:|---:|---:|")
    for label, v in (("runc, native static hello", runc),
                     ("wasmpod, hello component, cold cache", cold),
                     ("wasmpod, hello component, warm cache", warm)):
        print(f"| {label} | {pct(v, 50):.1f} | {pct(v, 90):.1f} | {pct(v, 50) / base:.2f}x |")
    print(f"| SIGKILL of a spinning guest until ctr returns | {pct(kills, 50):.1f} | {pct(kills, 90):.1f} | |")
    if inner_kills:
        print(f"| SIGKILL of a spinning guest inside the shim (its log) | {pct(inner_kills, 50):.2f} | {pct(inner_kills, 90):.2f} | |")
    print()
    print("| shim memory, one running guest | KiB |")
    print("|---|---:|")
    print(f"| peak RSS (VmHWM), warm cache | {hwm_warm} |")
    print(f"| RSS while running, warm cache | {rss_warm} |")
    print(f"| of it, the shim's own code (resident text) | {text_warm} |")
    print(f"| peak RSS (VmHWM), cold cache (compiles) | {hwm_cold} |")
    print(f"| per pod with 5 pods running: PSS (shared code split between shims) | {pod_pss:.0f} |")
    print(f"| per pod with 5 pods running: private dirty memory | {pod_private:.0f} |")

    artifact_bench(a.fixtures, a.artifact_suite, a.runs)
    cri_bench(a.fixtures, a.suite, max(5, a.runs // 3))
    churn_bench(a.fixtures, a.suite, int(os.environ.get("BENCH_CHURN_TASKS", "200")), 4)
    density_bench(a.fixtures, a.suite, int(os.environ.get("BENCH_DENSITY_PODS", "500")), 100)


if __name__ == "__main__":
    main()
