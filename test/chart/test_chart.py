"""The wasmpod Helm chart through Helm itself (Helm v4's Go SDK, from PyPI's
helm-python-sdk): lint, the schema's verdicts, and the objects `helm
template` renders with default and edge-pool values.

Run by `make test` (test/chart.sh); alone: python -m unittest test_chart.
"""

import copy
import os
import unittest

import helm_python as helm
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "wasmpod")
DIGEST = "sha256:" + "ab" * 32

EDGE = {
    "global": {"imageRegistry": "registry.edge.example:5000"},
    "image": {"digest": DIGEST},
    "imagePullSecrets": [{"name": "edge-pull"}],
    "runtimeClass": {
        "name": "wasm-edge",
        "nodeSelector": {"pool": "edge"},
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "node": {"layout": "k3s", "restart": "signal"},
    "installer": {
        "nodeSelector": {"pool": "edge"},
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                    ]
                }
            }
        },
        "maxUnavailable": "20%",
    },
}


def render(values=None):
    """The rendered objects by kind and name."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(values, name="wasmpod", namespace="wasmpod-system", is_install=True)
    objects = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if obj:
                objects[(obj["kind"], obj["metadata"]["name"])] = obj
    return objects


def pod_specs(objects):
    """Every pod the chart makes, hooks included."""
    for (kind, name), obj in objects.items():
        if kind in ("DaemonSet", "Deployment", "Job"):
            yield name, obj["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield name, obj["spec"]


def merged(values):
    out = copy.deepcopy(EDGE)
    for key, value in values.items():
        out.setdefault(key, {}).update(value)
    return out


class Lint(unittest.TestCase):
    def test_lint_finds_no_error_or_warning(self):
        for values in (None, EDGE):
            report = helm.lint(CHART, values, strict=True, kube_version="v1.37.0")
            self.assertEqual(report["errors"], [], report)
            serious = [m for m in report["messages"] if m["severity"] >= 2]
            self.assertEqual(serious, [], report)


class Schema(unittest.TestCase):
    def rejects(self, values, why):
        with helm.Chart.load(CHART) as chart:
            with self.assertRaises(helm.HelmError, msg=why):
                chart.validate_schema(values)

    def test_bad_values_are_rejected(self):
        self.rejects({"node": {"restart": "sighup"}}, "containerd does not reload on SIGHUP")
        self.rejects({"node": {"layout": "docker"}}, "unknown layout")
        self.rejects({"node": {"configVersion": 1}}, "the installer writes version 2 or 3")
        self.rejects({"node": {"healthTimeout": 1}}, "too short for any containerd to restart")
        self.rejects({"node": {"binDir": "usr/local/bin"}}, "a directory on the host is an absolute path")
        self.rejects({"node": {"containerdSocket": "run/c.sock"}}, "a socket is an absolute path")
        self.rejects({"image": {"digest": "latest"}}, "a digest is sha256:hex")
        self.rejects({"installer": {"maxUnavailable": 0}}, "0 would never roll")
        self.rejects({"installer": {"maxUnavailable": "150%"}}, "more than all nodes")
        self.rejects({"instaler": {}}, "a misspelt top-level key")
        self.rejects({"runtimeClass": {"overhead": {"memory": "lots"}}}, "not a quantity")
        self.rejects({"runtimeClass": {"tolerations": [{"key": "a", "effect": "Sometimes"}]}}, "bad effect")
        self.rejects({"uninstall": {"timeout": 0}}, "no time to uninstall a node")
        self.rejects({"nodePolicy": {"enabled": "yes"}}, "a boolean, not a string")
        self.rejects({"apiServer": {"host": "https://10.0.0.5"}}, "a host, not a URL")

    def test_good_values_pass(self):
        with helm.Chart.load(CHART) as chart:
            chart.validate_schema(EDGE)
            chart.validate_schema({"installer": {"maxUnavailable": 3}})


class Defaults(unittest.TestCase):
    def setUp(self):
        self.objects = render()

    def test_runtime_class(self):
        rc = self.objects[("RuntimeClass", "wasmpod")]
        self.assertEqual(rc["handler"], "wasmpod")
        self.assertEqual(rc["overhead"]["podFixed"], {"memory": "12Mi", "cpu": "10m"})
        self.assertEqual(rc["scheduling"]["nodeSelector"], {"wasmpod.dev/ready": "true"})
        self.assertNotIn("tolerations", rc["scheduling"])

    def test_installer_finds_the_layout_with_the_hosts_root_and_restarts_by_systemd(self):
        ds = self.objects[("DaemonSet", "wasmpod-node-installer")]
        spec = ds["spec"]["template"]["spec"]
        self.assertEqual(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1)
        container = spec["containers"][0]
        self.assertEqual(container["image"], "wasmpod/node-installer:0.1.0")
        self.assertEqual(container["command"], ["/wasmpod-node-installer"], "where the image holds it")
        self.assertIn("--restart=systemd", container["args"])
        self.assertNotIn("--layout=auto", container["args"])
        self.assertEqual(container["args"][-3:], ["--stay", "--ready-file=/run/wasmpod-installer/ready", "install"])
        # Ready only once the node is done, so that a rolling update waits.
        probe = container["readinessProbe"]["exec"]["command"]
        self.assertEqual(probe, ["/wasmpod-node-installer", "--ready-file=/run/wasmpod-installer/ready", "ready"])
        self.assertIn({"name": "ready", "mountPath": "/run/wasmpod-installer"}, container["volumeMounts"])
        self.assertTrue(spec["hostPID"])
        self.assertTrue(container["securityContext"]["privileged"])
        host_paths = [v for v in spec["volumes"] if "hostPath" in v]
        self.assertEqual(host_paths, [{"name": "host", "hostPath": {"path": "/", "type": "Directory"}}])
        others = [v for v in spec["volumes"] if "hostPath" not in v]
        self.assertEqual(others, [{"name": "ready", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}])
        self.assertNotIn("imagePullSecrets", spec)


    def test_installer_may_label_nodes_and_post_events_and_nothing_else(self):
        spec = self.objects[("DaemonSet", "wasmpod-node-installer")]["spec"]["template"]["spec"]
        account = spec["serviceAccountName"]
        self.assertEqual(account, "wasmpod-node-installer")
        self.assertTrue(spec["automountServiceAccountToken"])
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        self.assertEqual(env["NODE_NAME"]["valueFrom"], {"fieldRef": {"fieldPath": "spec.nodeName"}})
        self.assertEqual(self.objects[("ServiceAccount", account)]["metadata"]["namespace"], "wasmpod-system")
        cluster_role = self.objects[("ClusterRole", account)]
        self.assertEqual(cluster_role["rules"], [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}])
        role = self.objects[("Role", account + "-events")]
        self.assertEqual(role["metadata"]["namespace"], "default", "where node events live")
        self.assertEqual(role["rules"], [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}])
        for kind, ref in (("ClusterRoleBinding", account), ("RoleBinding", account + "-events")):
            binding = self.objects[(kind, ref)]
            self.assertEqual(binding["roleRef"]["name"], ref)
            self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": account, "namespace": "wasmpod-system"}])
        roles = [k for k in self.objects if k[0] in ("ClusterRole", "Role")]
        self.assertEqual(len(roles), 2, roles)


    def test_a_policy_narrows_the_node_patch_to_the_ready_label_of_the_pods_own_node(self):
        # What the policy lets through and refuses is tried against a real
        # API server by the installer's integration test; here, that it is
        # bound, matches the installer only, and only node updates.
        name = "wasmpod-node-installer"
        policy = self.objects[("ValidatingAdmissionPolicy", name)]["spec"]
        self.assertEqual(policy["failurePolicy"], "Fail")
        self.assertEqual(policy["matchConstraints"]["resourceRules"],
                         [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}])
        self.assertEqual([c["expression"] for c in policy["matchConditions"]],
                         ['request.userInfo.username == "system:serviceaccount:wasmpod-system:%s"' % name])
        self.assertEqual(len(policy["validations"]), 3)
        binding = self.objects[("ValidatingAdmissionPolicyBinding", name)]["spec"]
        self.assertEqual(binding, {"policyName": name, "validationActions": ["Deny"]})
        off = render({"nodePolicy": {"enabled": False}})
        self.assertFalse([k for k in off if k[0].startswith("ValidatingAdmissionPolicy")])


    def test_uninstall_hooks_undo_every_node_then_wait_for_the_labels_to_go(self):
        installer = self.objects[("DaemonSet", "wasmpod-node-installer")]
        uninstaller = self.objects[("DaemonSet", "wasmpod-node-uninstaller")]
        job = self.objects[("Job", "wasmpod-wait-nodes")]
        for obj, weight in ((uninstaller, "0"), (job, "1")):
            annotations = obj["metadata"]["annotations"]
            self.assertEqual(annotations["helm.sh/hook"], "pre-delete")
            self.assertEqual(annotations["helm.sh/hook-weight"], weight, "the nodes first, then the wait")
            self.assertEqual(annotations["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded")
        self.assertNotIn("annotations", installer["metadata"], "the installer is no hook")
        # The same pod on the same nodes, but for the command.
        install = copy.deepcopy(installer["spec"]["template"]["spec"])
        uninstall = copy.deepcopy(uninstaller["spec"]["template"]["spec"])
        self.assertEqual(install["containers"][0].pop("args")[-1], "install")
        self.assertEqual(uninstall["containers"][0].pop("args")[-1], "uninstall")
        self.assertEqual(install["containers"][0].pop("name"), "installer")
        self.assertEqual(uninstall["containers"][0].pop("name"), "uninstaller")
        self.assertEqual(install, uninstall)
        self.assertEqual(
            installer["spec"]["template"]["spec"]["containers"][0]["args"][:-1],
            uninstaller["spec"]["template"]["spec"]["containers"][0]["args"][:-1],
        )
        selector = uninstaller["spec"]["selector"]["matchLabels"]
        self.assertEqual(selector["app.kubernetes.io/component"], "node-uninstaller", "not the installer's pods")
        self.assertEqual(uninstaller["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"], "node-uninstaller")
        # The wait reads the API only: no host path, no root.
        spec = job["spec"]["template"]["spec"]
        self.assertEqual(job["spec"]["backoffLimit"], 0)
        self.assertEqual(job["spec"]["activeDeadlineSeconds"], 270)
        self.assertEqual(spec["restartPolicy"], "Never")
        self.assertEqual(spec["serviceAccountName"], "wasmpod-node-installer")
        self.assertNotIn("volumes", spec)
        self.assertNotIn("hostPID", spec)
        container = spec["containers"][0]
        self.assertEqual(container["args"], ["wait-nodes", "--timeout=240"])
        security = container["securityContext"]
        self.assertTrue(security["runAsNonRoot"])
        self.assertEqual(security["runAsUser"], 65534)
        self.assertEqual(security["capabilities"], {"drop": ["ALL"]})
        self.assertFalse(security["allowPrivilegeEscalation"])


class EdgePool(unittest.TestCase):
    def setUp(self):
        self.objects = render(EDGE)

    def test_runtime_class_schedules_on_ready_edge_nodes(self):
        rc = self.objects[("RuntimeClass", "wasm-edge")]
        self.assertEqual(rc["handler"], "wasmpod")
        self.assertEqual(rc["scheduling"]["nodeSelector"], {"pool": "edge", "wasmpod.dev/ready": "true"})
        self.assertEqual(rc["scheduling"]["tolerations"], EDGE["runtimeClass"]["tolerations"])

    def test_every_pod_pulls_from_the_mirror_by_digest_with_the_secret(self):
        pods = list(pod_specs(self.objects))
        self.assertTrue(pods)
        for name, spec in pods:
            self.assertEqual(spec["imagePullSecrets"], [{"name": "edge-pull"}], name)
            for container in spec.get("initContainers", []) + spec["containers"]:
                self.assertEqual(
                    container["image"], f"registry.edge.example:5000/wasmpod/node-installer@{DIGEST}", name
                )

    def test_installer_follows_the_pool_and_rolls_a_fifth_at_a_time(self):
        ds = self.objects[("DaemonSet", "wasmpod-node-installer")]
        spec = ds["spec"]["template"]["spec"]
        self.assertEqual(spec["nodeSelector"], {"pool": "edge"})
        self.assertEqual(spec["tolerations"], EDGE["installer"]["tolerations"])
        self.assertEqual(spec["affinity"], EDGE["installer"]["affinity"])
        self.assertEqual(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], "20%")

    def test_without_kube_proxy_every_pod_reaches_the_api_server_it_is_given(self):
        objects = render(merged({"installer": {"hostNetwork": True}, "apiServer": {"host": "10.0.0.5", "port": 16443}}))
        pods = list(pod_specs(objects))
        self.assertEqual(len(pods), 3, "installer, uninstaller, wait-nodes")
        for name, spec in pods:
            self.assertTrue(spec["hostNetwork"], name)
            self.assertEqual(spec["dnsPolicy"], "ClusterFirstWithHostNet", name)
            env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            self.assertEqual(env["KUBERNETES_SERVICE_HOST"], "10.0.0.5", name)
            self.assertEqual(env["KUBERNETES_SERVICE_PORT"], "16443", name)
        for name, spec in pod_specs(self.objects):
            self.assertNotIn("hostNetwork", spec, name)
            env = {e["name"] for e in spec["containers"][0].get("env", [])}
            self.assertNotIn("KUBERNETES_SERVICE_HOST", env, name)

    def test_the_uninstall_hooks_run_in_the_pool(self):
        for kind, name in (("DaemonSet", "wasmpod-node-uninstaller"), ("Job", "wasmpod-wait-nodes")):
            spec = self.objects[(kind, name)]["spec"]["template"]["spec"]
            self.assertEqual(spec["nodeSelector"], {"pool": "edge"}, name)
            self.assertEqual(spec["tolerations"], EDGE["installer"]["tolerations"], name)
            self.assertEqual(spec["affinity"], EDGE["installer"]["affinity"], name)
        objects = render(merged({"uninstall": {"timeout": 600}}))
        job = objects[("Job", "wasmpod-wait-nodes")]
        self.assertEqual(job["spec"]["template"]["spec"]["containers"][0]["args"], ["wait-nodes", "--timeout=600"])
        self.assertEqual(job["spec"]["activeDeadlineSeconds"], 630)

    def test_a_named_layout_and_a_signal_need_no_privilege_and_only_their_paths(self):
        spec = self.objects[("DaemonSet", "wasmpod-node-installer")]["spec"]["template"]["spec"]
        container = spec["containers"][0]
        self.assertIn("--layout=k3s", container["args"])
        self.assertIn("--restart=signal", container["args"])
        self.assertTrue(spec["hostPID"], "a signal needs containerd's pid")
        security = container["securityContext"]
        self.assertFalse(security["privileged"])
        self.assertFalse(security["allowPrivilegeEscalation"])
        self.assertEqual(security["capabilities"], {"drop": ["ALL"]})
        self.assertTrue(security["readOnlyRootFilesystem"])
        paths = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in spec["volumes"] if "hostPath" in v}
        self.assertEqual(
            paths,
            {
                "/var/lib/rancher/k3s/agent/etc/containerd": "DirectoryOrCreate",
                "/opt/wasmpod": "DirectoryOrCreate",
                "/usr/local/bin": "DirectoryOrCreate",
                "/run/k3s/containerd": "DirectoryOrCreate",
                "/etc/os-release": "File",
            },
        )
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        self.assertEqual(mounts, {"/host" + path for path in paths} | {"/run/wasmpod-installer"})

    def test_no_restart_needs_no_host_pids(self):
        objects = render(merged({"node": {"restart": "none", "layout": "containerd", "configPath": "/srv/c/config.toml"}}))
        spec = objects[("DaemonSet", "wasmpod-node-installer")]["spec"]["template"]["spec"]
        self.assertFalse(spec["hostPID"])
        args = spec["containers"][0]["args"]
        self.assertIn("--config=/srv/c/config.toml", args)
        self.assertIn("/srv/c", {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v})

    def test_a_socket_elsewhere_is_checked_there(self):
        objects = render(merged({"node": {"containerdSocket": "/var/run/ctd/ctd.sock", "healthTimeout": 120}}))
        spec = objects[("DaemonSet", "wasmpod-node-installer")]["spec"]["template"]["spec"]
        args = spec["containers"][0]["args"]
        self.assertIn("--containerd-socket=/var/run/ctd/ctd.sock", args)
        self.assertIn("--health-timeout=120", args)
        paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
        self.assertIn("/var/run/ctd", paths)
        self.assertNotIn("/run/k3s/containerd", paths)


if __name__ == "__main__":
    unittest.main()
