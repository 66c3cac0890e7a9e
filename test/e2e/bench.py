"""Pod start through the real kubelet, Wasm against the native twin under
runc (test/e2e/run.sh SUITE --bench; `make bench` runs it): the time from
`kubectl apply` to Ready of one pod, and of a Deployment of 10 replicas,
each the same HTTP server behind the same httpGet readiness probe.

Times are taken here, around kubectl, so each includes the same kubectl and
API round trips both ways; the probe's period (1 s) bounds how soon the
kubelet can see a pod Ready, for both. Prints a Markdown table. Same inputs
as e2e.py; bounded: a fixed number of rounds, each with a timeout.
"""

import copy
import os
import statistics
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (its helpers and environment)

ROUNDS_ONE = int(os.environ.get("WASMPOD_BENCH_ROUNDS", "7"))
ROUNDS_TEN = 3


def deployment(kind, replicas):
    """The http example's Deployment, for `kind` wasm or native."""
    with open(e2e.example("http-deployment.yaml")) as f:
        doc = next(d for d in yaml.safe_load_all(f) if d["kind"] == "Deployment")
    doc = copy.deepcopy(doc)
    name = f"bench-{kind}"
    doc["metadata"]["name"] = name
    doc["spec"]["replicas"] = replicas
    doc["spec"]["selector"]["matchLabels"] = {"app": name}
    pod = doc["spec"]["template"]
    pod["metadata"]["labels"] = {"app": name}
    container = pod["spec"]["containers"][0]
    container["readinessProbe"]["periodSeconds"] = 1
    if kind == "native":
        del pod["spec"]["runtimeClassName"]
        container["image"] = "docker.io/wasmpod/http-native:latest"
        container["command"] = ["/http"]
    return yaml.safe_dump(doc)


def time_to_ready(kind, replicas):
    """Seconds from `kubectl apply` to `replicas` Ready pods; then removes them."""
    manifest = deployment(kind, replicas)
    start = time.monotonic()
    e2e.kubectl("apply", "-f", "-", input=manifest)
    e2e.wait_until(
        f"{replicas} ready {kind} pods",
        lambda: len(e2e.ready_pods(f"app=bench-{kind}")) == replicas,
        180,
        0.05,
    )
    elapsed = time.monotonic() - start
    e2e.kubectl("delete", "-f", "-", "--wait=true", "--timeout=120s", input=manifest, timeout=130)
    e2e.wait_until(
        f"{kind} pods gone",
        lambda: not e2e.kubectl("get", "pods", "-l", f"app=bench-{kind}", "-o", "name").stdout.strip(),
        120,
    )
    return elapsed


def cached(cache):
    """The whole entries (code and checksum) of the node's compiled-code
    cache."""
    names = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    return {n for n in names if n.endswith(".cwasm") and n[: -len(".cwasm")] + ".sum" in names}


def main():
    print(f"== installing the chart ({', '.join(e2e.VALUES)})", file=sys.stderr)
    e2e.helm("install", e2e.RELEASE, e2e.CHART, "--namespace", e2e.NAMESPACE, "--create-namespace", "--wait", "--timeout", "5m")
    e2e.wait_until("the node labelled ready", lambda: e2e.node_label() == "true", 180)
    try:
        # The first Wasm pod on this node compiles the component; the rest
        # load the node's cache, as they would in production.
        # The installer's canary has an entry in the cache already.
        cache = os.path.join(os.environ["WASMPOD_KUBE_NODE_DIR"], "wasm-cache")
        before = cached(cache)
        applied = time.monotonic()
        cold = time_to_ready("wasm", 1)
        # It answered on baseline code; its optimised code compiles in the
        # background, and the warm rounds below must find it cached.
        ready = applied + cold
        e2e.wait_until(
            "the first pod's optimised code in the node's cache",
            lambda: cached(cache) - before,
            180,
            0.1,
        )
        tier_up = time.monotonic() - ready
        results = {}
        for kind in ("wasm", "native"):
            time_to_ready(kind, 1)  # the image pulled, caches warm
            one = [time_to_ready(kind, 1) for _ in range(ROUNDS_ONE)]
            ten = [time_to_ready(kind, 10) for _ in range(ROUNDS_TEN)]
            results[kind] = (one, ten)
            print(f"{kind}: one {one}, ten {ten}", file=sys.stderr)
    finally:
        e2e.run([e2e.HELM, "uninstall", e2e.RELEASE, "--namespace", e2e.NAMESPACE, "--wait", "--timeout", "5m"], timeout=400)

    def p50(xs):
        return statistics.median(xs)

    w1, w10 = (p50(x) for x in results["wasm"])
    n1, n10 = (p50(x) for x in results["native"])
    print(f"| through the kubelet (apply to Ready) | wasmpod | runc (native C) | ratio |")
    print(f"|---|---:|---:|---:|")
    print(f"| one pod, p50 of {ROUNDS_ONE} | {w1:.2f} s | {n1:.2f} s | {w1 / n1:.2f}x |")
    print(f"| Deployment of 10 replicas, p50 of {ROUNDS_TEN} | {w10:.2f} s | {n10:.2f} s | {w10 / n10:.2f}x |")
    print(f"| the first Wasm pod on the node (baseline code, Winch) | {cold:.2f} s | | |")
    print(f"| its optimised code cached, after the pod was Ready | {tier_up:.2f} s | | |")


if __name__ == "__main__":
    main()
