"""Renders the chart for the integration tests:

    python render.py VALUES_JSON             the pod the DaemonSet would start
                                             on a node, as a Pod manifest, to
                                             run through the CRI as the kubelet
                                             would
    python render.py VALUES_JSON TEMPLATE... these templates as Helm renders
                                             them (e.g. rbac.yaml), to apply
"""

import json
import os
import sys

import helm_python as helm
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "wasmpod")

values = json.loads(sys.argv[1])
with helm.Chart.load(CHART) as chart:
    chart.validate_schema(values)
    manifests = chart.render(values, name="wasmpod", namespace="wasmpod-system", is_install=True)
if len(sys.argv) > 2:
    sys.stdout.write("\n---\n".join(manifests["wasmpod/templates/" + name] for name in sys.argv[2:]))
    sys.exit(0)
daemonset = yaml.safe_load(manifests["wasmpod/templates/daemonset.yaml"])
template = daemonset["spec"]["template"]
pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": daemonset["metadata"]["name"] + "-node",
        "namespace": daemonset["metadata"]["namespace"],
        "labels": template["metadata"]["labels"],
    },
    "spec": template["spec"],
}
yaml.safe_dump(pod, sys.stdout)
