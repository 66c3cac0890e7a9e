"""wasmpod end to end, as a cluster admin and a platform team use it: the
chart installed with `helm`, the examples applied with `kubectl`, a real
kubelet running them. Talks to the cluster only through helm, kubectl and
the API, and to the node only through the commands it is given, so the same
suite runs on this machine's cluster (test/e2e/run.sh) and on kind
(test/kind/run.sh).

The tests run in order (one cluster, one story): install, workloads,
upgrade, uninstall. Inputs, from the environment:

  KUBECONFIG                 the cluster
  WASMPOD_KUBECTL, _HELM     the programs (default: kubectl, helm on PATH)
  WASMPOD_E2E_VALUES         values files for the chart, separated by ':'
  WASMPOD_E2E_UPGRADE_TAG    the installer image tag `helm upgrade` moves to
                             (another build of the shim)
  WASMPOD_E2E_NODE           the node's name
  WASMPOD_E2E_NODE_CONFIG    its containerd config's path on the node
  WASMPOD_E2E_NODE_RUN       a command prefix that runs a command on the
                             node (empty: here; kind: docker exec NODE)
  WASMPOD_E2E_CRICTL         crictl on the node, with its runtime endpoint
  WASMPOD_E2E_POD_NET        1 if pod IPs are reachable from here
  WASMPOD_E2E_METRICS        1 if metrics-server serves `kubectl top`
"""

import json
import os
import shlex
import socket
import subprocess
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
CHART = os.path.join(ROOT, "charts", "wasmpod")
EXAMPLES = os.path.join(ROOT, "deploy", "examples")
NAMESPACE = "wasmpod-system"
RELEASE = "wasmpod"
READY_LABEL = "wasmpod.dev/ready"

KUBECTL = os.environ.get("WASMPOD_KUBECTL", "kubectl")
HELM = os.environ.get("WASMPOD_HELM", "helm")
NODE = os.environ["WASMPOD_E2E_NODE"]
NODE_CONFIG = os.environ["WASMPOD_E2E_NODE_CONFIG"]
NODE_RUN = shlex.split(os.environ.get("WASMPOD_E2E_NODE_RUN", ""))
CRICTL = shlex.split(os.environ["WASMPOD_E2E_CRICTL"])
VALUES = [v for v in os.environ.get("WASMPOD_E2E_VALUES", "").split(":") if v]
UPGRADE_TAG = os.environ["WASMPOD_E2E_UPGRADE_TAG"]
POD_NET = os.environ.get("WASMPOD_E2E_POD_NET") == "1"
METRICS = os.environ.get("WASMPOD_E2E_METRICS") == "1"


def run(argv, timeout=120, check=True, input=None):
    """Runs argv (bounded in time); its stdout, or raises with its output."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and out.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def kubectl(*args, timeout=120, check=True, input=None):
    return run([KUBECTL, *args], timeout=timeout, check=check, input=input)


def helm(*args, timeout=400):
    values = [arg for path in VALUES for arg in ("--values", path)]
    return run([HELM, *args, *values], timeout=timeout)


def on_node(*argv, timeout=60):
    return run([*NODE_RUN, *argv], timeout=timeout)


def example(name):
    return os.path.join(EXAMPLES, name)


def wait_until(what, predicate, timeout, interval=1.0):
    """Polls predicate until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def node_label():
    out = kubectl("get", "node", NODE, "-o", "jsonpath={.metadata.labels.wasmpod\\.dev/ready}")
    return out.stdout.strip()


def node_ready():
    out = kubectl("get", "node", NODE, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')
    return out.stdout.strip() == "True"


def node_events():
    out = kubectl(
        "get", "events", "-n", "default",
        "--field-selector", f"involvedObject.kind=Node,involvedObject.name={NODE}",
        "-o", "json",
    )
    return [(e["type"], e["reason"], e["message"]) for e in json.loads(out.stdout)["items"]]


def sandboxes():
    """The pod sandboxes the node's CRI holds, ready or not."""
    return on_node(*CRICTL, "pods", "-q").stdout.split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


class PortForward:
    """`kubectl port-forward TARGET LOCAL:REMOTE` for the with-block."""

    def __init__(self, target, remote):
        self.target, self.remote, self.local = target, remote, free_port()

    def __enter__(self):
        self.process = subprocess.Popen(
            [KUBECTL, "port-forward", self.target, f"{self.local}:{self.remote}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

        def listening():
            if self.process.poll() is not None:
                raise AssertionError(f"port-forward exited: {self.process.communicate()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.local)) == 0

        wait_until("kubectl port-forward listening", listening, 30, 0.2)
        return f"http://127.0.0.1:{self.local}"

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.communicate(timeout=10)


def ready_pods(selector):
    out = kubectl("get", "pods", "-l", selector, "-o", "json")
    pods = json.loads(out.stdout)["items"]
    ready = []
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            ready.append(pod)
    return ready


class EndToEnd(unittest.TestCase):
    """One story, in order; a step that fails stops the ones after it."""

    failed = False

    def setUp(self):
        if EndToEnd.failed:
            self.skipTest("an earlier step failed")

    def run(self, result=None):
        result = super().run(result)
        if result and (result.failures or result.errors):
            EndToEnd.failed = True
        return result

    @classmethod
    def setUpClass(cls):
        cls.config_before = on_node("cat", NODE_CONFIG).stdout

    def test_01_helm_install_puts_wasmpod_on_the_node(self):
        self.assertEqual(node_label(), "", "no label before the install")
        helm("install", RELEASE, CHART, "--namespace", NAMESPACE, "--create-namespace", "--wait", "--timeout", "5m")
        # The installer pod restarts containerd; the kubelet reconnects and
        # the installer labels the node once containerd runs the handler.
        wait_until("the node labelled ready", lambda: node_label() == "true", 180)
        self.assertTrue(node_ready(), "the node is Ready after containerd's restart")
        handler = kubectl("get", "runtimeclass", "wasmpod", "-o", "jsonpath={.handler}").stdout
        self.assertEqual(handler, "wasmpod")
        config = on_node("cat", NODE_CONFIG).stdout
        self.assertIn("io.containerd.wasmpod.v1", config)
        reasons = [reason for _, reason, _ in node_events()]
        self.assertIn("WasmpodInstalled", reasons)
        logs = kubectl("logs", "-n", NAMESPACE, "daemonset/wasmpod-node-installer").stdout
        self.assertIn("node labelled ready for Wasm pods", logs)

    def test_02_a_job_runs_a_wasm_command_to_completion(self):
        kubectl("apply", "-f", example("job.yaml"))
        kubectl("wait", "--for=condition=Complete", "job/hello-job", "--timeout=120s", timeout=130)
        logs = kubectl("logs", "job/hello-job").stdout
        self.assertIn("hello from wasm", logs)
        self.assertIn("from-a-job", logs)
        handler = kubectl("get", "pods", "-l", "job-name=hello-job", "-o", "jsonpath={.items[0].spec.runtimeClassName}")
        self.assertEqual(handler.stdout, "wasmpod")

    def test_03_a_wasi_http_deployment_serves_behind_its_probes(self):
        kubectl("apply", "-f", example("http-deployment.yaml"))
        kubectl("wait", "--for=condition=Available", "deployment/http", "--timeout=180s", timeout=190)
        pods = ready_pods("app=http")
        self.assertEqual(len(pods), 2)
        if POD_NET:
            for pod in pods:
                status, body = http_get(f"http://{pod['status']['podIP']}:8080/direct")
                self.assertEqual((status, body), (200, "hello from wasi:http /direct\n"))
        with PortForward("service/http", 80) as url:
            status, body = http_get(f"{url}/forwarded")
            self.assertEqual((status, body), (200, "hello from wasi:http /forwarded\n"))
        # The kubelet's probes: readiness passed (Ready), liveness keeps passing.
        time.sleep(6)
        for pod in ready_pods("app=http"):
            restarts = pod["status"]["containerStatuses"][0]["restartCount"]
            self.assertEqual(restarts, 0, pod["metadata"]["name"])
        logs = kubectl("logs", "-l", "app=http", "--tail=-1", "--prefix").stdout
        self.assertIn("handling GET /forwarded", logs)
        self.assertIn("handling GET /healthz", logs, "the readiness probe's requests")

    def test_04_kubectl_top_shows_the_node_and_the_kubelet_measures_the_pods(self):
        if not METRICS:
            self.skipTest("no metrics-server in this cluster (WASMPOD_E2E_METRICS)")

        def node_usage():
            out = kubectl("top", "node", NODE, "--no-headers", check=False)
            row = out.stdout.split()
            return len(row) == 5 and row[1].endswith("m") and row[3].endswith("Mi") and row

        wait_until("kubectl top node with numbers", node_usage, 90, 3)
        # What metrics-server reads from the kubelet, through the API. A pod
        # that has just started may read 0 until the kubelet's next
        # housekeeping: a pod ready within seconds can get here before it.
        def pod_memory():
            metrics = kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/metrics/resource").stdout
            found = {}
            for pod in ready_pods("app=http"):
                name = pod["metadata"]["name"]
                found[name] = [
                    float(line.split()[1])
                    for line in metrics.splitlines()
                    if line.startswith("pod_memory_working_set_bytes{") and f'pod="{name}"' in line
                ]
            return found

        def measured():
            found = pod_memory()
            return found and all(m and m[0] > 0 for m in found.values()) and found

        try:
            wait_until("the kubelet measures each http pod's memory", measured, 60, 2)
        except AssertionError:
            self.fail(f"pod working sets: {pod_memory()}")

    def test_04b_kubectl_top_pod_lists_the_wasm_pods(self):
        # On cgroup v1 the shim moves its main thread, and so the charge for
        # its memory, into the first guest's memory cgroup, where the
        # kubelet reads a container's memory.
        if not METRICS:
            self.skipTest("no metrics-server in this cluster (WASMPOD_E2E_METRICS)")

        def usage():
            out = kubectl("top", "pod", "-l", "app=http", "--no-headers", check=False)
            rows = [line.split() for line in out.stdout.splitlines()]
            good = [r for r in rows if len(r) == 3 and r[1].endswith("m") and r[2].endswith("Mi")]
            return len(good) == 2 and good

        rows = wait_until("kubectl top pod with numbers", usage, 90, 3)
        # metrics-server scrapes every 15 s or so: a pod measured before its
        # first housekeeping shows 0Mi until the next scrape.
        if any(int(memory[:-2]) == 0 for _, _, memory in rows):
            rows = wait_until(
                "kubectl top pod with memory in each",
                lambda: (r := usage()) and all(int(m[:-2]) > 0 for _, _, m in r) and r,
                60,
                3,
            )
        for name, _, memory in rows:
            self.assertGreater(int(memory[:-2]), 0, name)

    def test_05_kubectl_exec_says_wasm_containers_have_no_exec(self):
        pod = ready_pods("app=http")[0]["metadata"]["name"]
        out = kubectl("exec", pod, "--", "ls", check=False)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("not supported for Wasm containers", out.stderr)

    def test_06_a_runc_pod_runs_beside_them(self):
        kubectl("apply", "-f", example("hello-native.yaml"))
        wait_until(
            "hello-native Succeeded",
            lambda: kubectl("get", "pod", "hello-native", "-o", "jsonpath={.status.phase}").stdout == "Succeeded",
            120,
        )
        self.assertIn("from-runc", kubectl("logs", "hello-native").stdout)
        self.assertEqual(kubectl("get", "pod", "hello-native", "-o", "jsonpath={.spec.runtimeClassName}").stdout, "")

    def test_07_ten_replicas_become_ready(self):
        kubectl("scale", "deployment/http", "--replicas=10")
        wait_until("10 ready http pods", lambda: len(ready_pods("app=http")) == 10, 240, 2)

    def test_08_helm_upgrade_rolls_a_new_shim_under_running_pods(self):
        kubectl("scale", "deployment/http", "--replicas=2")
        wait_until("2 http pods", lambda: len(kubectl("get", "pods", "-l", "app=http", "-o", "name").stdout.split()) == 2, 120, 2)
        before = {p["metadata"]["uid"] for p in ready_pods("app=http")}
        self.assertEqual(len(before), 2)
        helm("upgrade", RELEASE, CHART, "--namespace", NAMESPACE, "--set", f"image.tag={UPGRADE_TAG}", "--wait", "--timeout", "5m")
        kubectl("rollout", "status", "-n", NAMESPACE, "daemonset/wasmpod-node-installer", "--timeout=180s", timeout=190)
        # Ready (the chart's readiness probe) only once the node is done.
        logs = kubectl("logs", "-n", NAMESPACE, "daemonset/wasmpod-node-installer").stdout
        self.assertIn("shim installed", logs, "the new installer put its own shim in")
        self.assertIn("done; staying until the pod is stopped", logs)
        self.assertIn(UPGRADE_TAG, kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=node-installer", "-o", "jsonpath={.items[*].spec.containers[0].image}").stdout)
        self.assertEqual(node_label(), "true")
        # The pods that ran before still run, and answer.
        after = {p["metadata"]["uid"] for p in ready_pods("app=http")}
        self.assertEqual(after, before, "no Wasm pod was restarted or replaced")
        with PortForward("service/http", 80) as url:
            self.assertEqual(http_get(f"{url}/after-upgrade")[0], 200)
        # A new pod starts on the new shim.
        kubectl("scale", "deployment/http", "--replicas=3")
        wait_until("3 ready http pods", lambda: len(ready_pods("app=http")) == 3, 120, 2)

    def test_09_deleting_the_pods_leaves_nothing_on_the_node(self):
        for name in ("http-deployment.yaml", "job.yaml", "hello-native.yaml"):
            kubectl("delete", "-f", example(name), "--wait=true", "--timeout=120s", timeout=130)
        installer = kubectl("get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].metadata.uid}").stdout.split()

        def only_the_installers():
            # The installer DaemonSet's sandbox stays, and nothing else.
            left = sandboxes()
            return len(left) == len(installer) and left

        wait_until("only the installer's sandbox on the node", only_the_installers, 120, 2)

    def test_10_helm_uninstall_takes_everything_out_and_the_node_stays_healthy(self):
        run([HELM, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m"], timeout=400)
        self.assertEqual(node_label(), "", "the label is gone")
        self.assertEqual(on_node("cat", NODE_CONFIG).stdout, self.config_before, "containerd's config is as before")
        reasons = [reason for _, reason, _ in node_events()]
        self.assertIn("WasmpodUninstalled", reasons)
        self.assertEqual(kubectl("get", "runtimeclass", "-o", "name").stdout.strip(), "")
        wait_until("the node Ready", node_ready, 60)
        kubectl("apply", "-f", example("hello-native.yaml"))
        wait_until(
            "a runc pod after the uninstall",
            lambda: kubectl("get", "pod", "hello-native", "-o", "jsonpath={.status.phase}").stdout == "Succeeded",
            120,
        )
        kubectl("delete", "-f", example("hello-native.yaml"), "--wait=true", "--timeout=60s", timeout=70)
        wait_until("no sandbox left", lambda: not sandboxes(), 60, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
