"""Write the two custom-resource schemas the deploy tests validate against (kubernetes-validate
has schemas for built-in kinds only). Run once by hand; the JSON files are committed.

    python tests/deploy_schemas/vendor.py SERVICEMONITOR_CRD.yaml RAYJOB_CRD.yaml

Inputs (Apache-2.0): prometheus-operator v0.93.0
``example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml`` and KubeRay
v1.7.0 ``ray-operator/config/crd/bases/ray.io_rayjobs.yaml``. Each output is the CRD version's
``openAPIV3Schema`` without descriptions; in the RayJob's, each pod template is reduced to
``{"type": "object"}`` because the test validates those against Kubernetes' own
``PodTemplateSpec`` schema of the pinned version (stricter and smaller than the CRD's copy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
POD_TEMPLATE_FIELDS = ("template", "submitterPodTemplate")


def _strip(node: object) -> object:
    if isinstance(node, dict):
        return {key: _strip(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def _cut_pod_templates(node: object) -> object:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "properties":
                value = {
                    name: {"type": "object"}
                    if name in POD_TEMPLATE_FIELDS and "spec" in sub.get("properties", {})
                    else _cut_pod_templates(sub)
                    for name, sub in value.items()
                }
            else:
                value = _cut_pod_templates(value)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_cut_pod_templates(item) for item in node]
    return node


def schema(crd_file: str, version: str, source: str, cut: bool = False) -> dict:
    crd = yaml.safe_load(Path(crd_file).read_text())
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    body = _strip(served["schema"]["openAPIV3Schema"])
    if cut:
        body = _cut_pod_templates(body)
    return {"$comment": f"{source}; written by tests/deploy_schemas/vendor.py", **body}


def main() -> None:
    servicemonitor, rayjob = sys.argv[1:3]
    outputs = {
        "servicemonitor-monitoring-v1.json": schema(
            servicemonitor, "v1", "prometheus-operator v0.93.0 ServiceMonitor CRD (Apache-2.0)"
        ),
        "rayjob-ray-v1.json": schema(
            rayjob, "v1", "KubeRay v1.7.0 RayJob CRD (Apache-2.0), pod templates cut", cut=True
        ),
    }
    for name, body in outputs.items():
        (HERE / name).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
