#!/usr/bin/env python3
"""Which functions of the shim a node runs, for the linker's layout.

A shim's code pages count in every pod's memory, and the kernel maps them
in 64 KiB fault-around windows: a few hot functions scattered over the
19 MB text keep most of it resident. shim/build.rs hands lld the list this
script writes (shim/symbol-order.txt), so that those functions sit together.

    test/hot-symbols.py FIXTURES_DIR      profile the shim in $WASMPOD_BIN, write the list
    test/hot-symbols.py --report BINARY   say how much of the list BINARY still has

Profiling puts a uprobe on every function of the release shim, runs
the workload (ctr runs of the test programs, one wasi:http pod through the
CRI) on a warm compiled-code cache, and keeps the functions that ran:
compilation, a cold start's work, stays out of the hot part. Needs root
and tracefs; takes about 40 minutes, most of it the kernel adding and
removing probes (it waits for an RCU grace period for each).
"""

import os
import subprocess
import sys
import time

from bench import BIN, Containerd  # test/bench.py, beside this script

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "shim"))
import symbol_order  # noqa: E402  shim/symbol_order.py: names without hashes
SHIM = os.path.join(BIN, "containerd-shim-wasmpod-v1")
ORDER = os.path.join(TOP, "shim/symbol-order.txt")
TRACEFS = next(
    (p for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
     if os.path.exists(os.path.join(p, "uprobe_events"))),
    None,
)
GROUP = "wasmpod_hot"
SUITE = "bookworm"
RUNTIME = "io.containerd.wasmpod.v1"
IMAGE = "docker.io/wasmpod/test-programs:latest"
# Below this share of listed functions found in the binary, the list is
# stale (the shim's code or its dependencies changed) and must be redone.
FRESH = 0.9
HEADER = """\
# Functions of containerd-shim-wasmpod-v1 that run on a node with a warm
# compiled-code cache, which lld places first (shim/build.rs), one a line:
# the demangled path without hashes, then (tab-separated) its size and the
# symbol it had, which shim/symbol_order.py maps to the names of the build
# at hand. Written by test/hot-symbols.py (`make hot-symbols`); a stale list
# costs memory, never correctness.
"""


def functions(binary):
    """(address, size, symbol, path) of the binary's functions, one an
    address, by address."""
    seen = {}
    for function in symbol_order.functions(binary):
        seen.setdefault(function[0], function)
    return [seen[addr] for addr in sorted(seen)]


def file_offset(binary):
    """Maps a code address to its offset in the file (uprobes want that)."""
    out = subprocess.run(["readelf", "-lW", binary],
                         check=True, capture_output=True, text=True).stdout
    segments = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            segments.append((int(f[2], 16), int(f[1], 16), int(f[5], 16)))

    def offset(addr):
        for vaddr, off, size in segments:
            if vaddr <= addr < vaddr + size:
                return addr - vaddr + off
        raise ValueError(f"0x{addr:x} is in no executable segment")
    return offset


def workload(c, fixtures):
    c.ctr("images", "import", os.path.join(fixtures, "programs.tar"))
    for program, args, succeeds in [
        ("/hello.component.wasm", ["a", "b"], True),
        ("/hello.wasm", ["a", "b"], True),
        ("/exit_code.component.wasm", ["3"], False),
        ("/trap.component.wasm", [], False),
    ]:
        done = c.ctr("run", "--rm", "--runtime", RUNTIME, IMAGE, "hot", program, *args,
                     check=False)
        if (done.returncode == 0) != succeeds:
            sys.exit(f"hot-symbols: {program} exited {done.returncode}: {done.stderr!r}")
    for program, signal in [("/sleep.component.wasm", "SIGTERM"),
                            ("/loop.component.wasm", "SIGKILL")]:
        c.ctr("run", "-d", "--runtime", RUNTIME, IMAGE, "hot", program, "60")
        c.ctr("task", "kill", "-s", signal, "hot")
        c.ctr("task", "wait", "hot", check=False)  # its status is the signal's
        # `ctr task wait` can return before containerd has recorded the exit
        # (a run of 2026-12-04, under 26,165 probes, failed here): retry,
        # bounded, and say why if it never goes.
        for _ in range(50):
            deleted = c.ctr("task", "delete", "hot", check=False)
            if deleted.returncode == 0:
                break
            time.sleep(0.1)
        else:
            sys.exit(f"hot-symbols: ctr task delete hot: {deleted.stderr!r}")
        c.ctr("container", "delete", "hot")
    subprocess.run([os.path.join(BIN, "cri-bench"), "--one-pod"],
                   check=True, env=dict(os.environ, WASMPOD_FIXTURES=fixtures, **c.env))


def write(path, text):
    with open(os.path.join(TRACEFS, path), "w") as f:
        f.write(text)


def remove_probes():
    """Disables and removes this script's probes, one a write. The kernel
    waits for an RCU grace period (about 20 ms here) for each, both to
    disable and to remove, and refused removing thousands as one group."""
    events = os.path.join(TRACEFS, "events", GROUP)
    if not os.path.exists(events):
        return
    print("hot-symbols: removing the probes (about 20 minutes)", file=sys.stderr)
    write(f"events/{GROUP}/enable", "0")
    fd = os.open(os.path.join(TRACEFS, "uprobe_events"), os.O_WRONLY | os.O_APPEND)
    try:
        for name in os.listdir(events):
            if os.path.isdir(os.path.join(events, name)):
                os.write(fd, f"-:{GROUP}/{name}\n".encode())
    finally:
        os.close(fd)


def profile(fixtures):
    if TRACEFS is None:
        sys.exit("hot-symbols: no tracefs with uprobe_events (mount -t tracefs none /sys/kernel/tracing)")
    c = Containerd(SUITE)  # a fresh one
    try:
        workload(c, fixtures)  # fills the compiled-code cache
        funcs = functions(SHIM)
        offset = file_offset(SHIM)
        print(f"hot-symbols: probing {len(funcs)} functions", file=sys.stderr)
        # One probe a write: the parser does not join lines across writes.
        fd = os.open(os.path.join(TRACEFS, "uprobe_events"), os.O_WRONLY | os.O_APPEND)
        try:
            for i, (addr, *_) in enumerate(funcs):
                os.write(fd, f"p:{GROUP}/f{i} {SHIM}:0x{offset(addr):x}\n".encode())
        finally:
            os.close(fd)
        write("tracing_on", "0")  # hits are counted without the ring buffer
        write(f"events/{GROUP}/enable", "1")
        workload(c, fixtures)
        hit = set()  # read while enabled: disabling takes minutes
        with open(os.path.join(TRACEFS, "uprobe_profile")) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[1].startswith("f") and fields[2] != "0":
                    hit.add(int(fields[1][1:]))
        # Address order: what ran together stays near what it calls.
        ran = [f for i, f in enumerate(funcs) if i in hit]
        with open(ORDER, "w") as f:
            f.write(HEADER)
            f.writelines(symbol_order.list_line(path, size, symbol)
                         for _, size, symbol, path in ran)
        print(f"hot-symbols: {len(ran)} functions ran; wrote {ORDER}", file=sys.stderr)
    finally:
        remove_probes()
        write("tracing_on", "1")
        c.stop()


def report(binary):
    """A stale list costs memory, not correctness: this says so and goes on.
    Functions are found by their paths, as shim/symbol_order.py finds them
    at link time, so a dependency bump that renames every symbol leaves the
    list fresh; changed code makes it stale."""
    listed = symbol_order.read_list(ORDER)
    funcs = functions(binary)
    paths = {path for *_, path in funcs}
    symbols = {symbol for _, _, symbol, _ in funcs}
    found = sum(path in paths for path, _, _ in listed)
    same = sum(symbol in symbols for _, _, symbol in listed if symbol)
    share = found / len(listed) if listed else 0.0
    print(f"hot-symbols: {found} of the {len(listed)} listed functions ({share:.0%}) are in "
          f"{binary} ({same} under the symbol they were profiled with)")
    # What the release link places first (shim/symbol_order.py resolves the
    # list the same way), and how far into the code 99% of its bytes lie:
    # about its own size when it was placed first, most of the code when
    # the link did not order it.
    placed = set(symbol_order.resolve(listed, funcs))
    start = min(a for a, *_ in funcs)
    hot = sorted((addr - start + size, size) for addr, size, symbol, _ in funcs if symbol in placed)
    if hot:
        total, reach, seen = sum(s for _, s in hot), 0, 0
        for end, size in hot:
            seen += size
            reach = end
            if seen >= 0.99 * total:
                break
        text = max(a + s for a, s, *_ in funcs) - start
        print(f"hot-symbols: the {len(hot)} functions placed first, {total / 2**20:.1f} MiB: 99% of "
              f"them within the first {reach / 2**20:.1f} MiB of the shim's {text / 2**20:.1f} MiB of code")
    if share < FRESH:
        print(f"hot-symbols: {ORDER} is stale: the shim's hot code is spread out "
              "(more resident text per shim); `make hot-symbols` redoes it")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(sys.argv[2])
    elif len(sys.argv) == 2:
        profile(os.path.abspath(sys.argv[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
