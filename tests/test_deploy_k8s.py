"""The Kustomize layout under deploy/k8s: rendered (tests/deploy_k8s.py, checked against the
real ``kubectl kustomize`` where one is installed), every object validated against the
schemas of Kubernetes KUBERNETES_VERSION (kubernetes-validate, strict: unknown fields fail;
the ServiceMonitor and RayJob custom resources against their CRDs' schemas), and the
Deployment's contract with the image, the service's settings and the Prometheus rules."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service import registry
from service.config import split_names
from tests.deploy_dockerfile import parse, stage
from tests.deploy_k8s import K8S, pod_templates, render
from tests.needs import require, require_tools

KUBERNETES_VERSION = "1.33.0"
ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = Path(__file__).parent / "deploy_schemas"
CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("ray.io/v1", "RayJob"): "rayjob-ray-v1.json",
}
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


def overlay_with_models_volume(tmp_path: Path, overlay: str) -> Path:
    """A user's overlay: ``overlay`` plus the models-volume component, as docs/DEPLOY.md says."""
    folder = tmp_path / f"{overlay}-models-volume"
    folder.mkdir()
    relative = os.path.relpath(K8S, folder)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{relative}/{overlay}"],
                "components": [f"{relative}/models-volume"],
            }
        )
    )
    return folder


@pytest.fixture(params=["cpu", "gpu", "cpu+models-volume", "gpu+models-volume", "batch"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    name = request.param
    if name.endswith("+models-volume"):
        return overlay_with_models_volume(tmp_path, name.split("+")[0])
    return K8S / name


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_renderer_agrees_with_kubectl_kustomize(layout: Path) -> None:
    require_tools("kubectl")
    result = subprocess.run(
        ["kubectl", "kustomize", str(layout)], capture_output=True, text=True, timeout=60
    )
    require("unknown command" not in result.stderr, "this kubectl has no kustomize")
    assert result.returncode == 0, result.stderr
    real = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    key = lambda obj: (obj["kind"], obj["metadata"]["name"])  # noqa: E731
    assert sorted(real, key=key) == sorted(render(layout), key=key)


def strict(schema: object) -> object:
    """Unknown fields rejected, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def validate(obj: dict) -> None:
    name = CUSTOM_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if name is None:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        return
    schema = strict(json.loads((SCHEMAS / name).read_text()))
    jsonschema.Draft7Validator(schema).validate(obj)
    for index, template in enumerate(pod_templates(obj)):  # cut from the CRD schema
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "template": template}
        pod_template["metadata"] = {"name": f"{obj['metadata']['name']}-{index}"}
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)


def quantities(obj: dict) -> list[str]:
    values = []
    for template in pod_templates(obj):
        for item in template["spec"]["containers"]:
            for kind in ("requests", "limits"):
                values += [str(v) for v in item.get("resources", {}).get(kind, {}).values()]
    return values


def test_every_object_validates(layout: Path) -> None:
    objects = render(layout)
    assert objects
    for obj in objects:
        try:
            validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']}: {list(error.path)}: {error.message}"
            )
        assert all(QUANTITY.match(value) for value in quantities(obj)), quantities(obj)


@pytest.mark.parametrize(
    "mutation",
    [
        lambda objs: container(by_kind(objs)["Deployment"])["securityContext"].update(
            readOnlyRoot=True
        ),
        lambda objs: by_kind(objs)["ServiceMonitor"]["spec"]["endpoints"][0].update(
            scrapeEvery="15s"
        ),
        lambda objs: by_kind(objs)["HorizontalPodAutoscaler"]["spec"].update(minReplicas="two"),
    ],
)
def test_validation_catches_mistakes(mutation) -> None:
    objects = copy.deepcopy(render(K8S / "cpu"))
    mutation(objects)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        for obj in objects:
            validate(obj)


def test_rayjob_pod_templates_are_validated() -> None:
    rayjob = by_kind(render(K8S / "batch"))["RayJob"]
    broken = copy.deepcopy(rayjob)
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "imagePullPolice"
    ] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


# ---- the Deployment's contract ----


def image_env() -> dict[str, str]:
    return stage("runtime").env()


def writable_paths(deployment: dict) -> dict[str, dict]:
    """mountPath -> volume of every emptyDir the server container mounts."""
    spec = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    return {
        mount["mountPath"]: volumes[mount["name"]]
        for mount in container(deployment)["volumeMounts"]
        if "emptyDir" in volumes[mount["name"]]
    }


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_deployment_is_safe_and_drains(overlay: str) -> None:
    objects = by_kind(render(K8S / overlay))
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    server = container(deployment)
    # security: the image's fixed UID, nothing writable but emptyDirs, no privilege
    uid = next(a.split("=")[1] for a in stage("runtime").all("ARG") if a.startswith("UID="))
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert server["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    env = image_env()
    home = env["BENTOML_HOME"]
    config = objects["ConfigMap"]["data"]
    assert set(writable_paths(deployment)) == {
        f"{home}/tmp",
        f"{home}/prometheus_multiproc_dir",
        config["DLSERVE_BATCH_DIR"],
        "/tmp",
    }
    assert Path(env["BENTOML_RESULT_STORE"]).parent == Path(config["DLSERVE_BATCH_DIR"])
    # probes on the image's HTTP port; gRPC on the port the settings name
    http, grpc = (int(port) for port in stage("runtime").all("EXPOSE")[0].split())
    assert server["ports"] == [
        {"name": "http", "containerPort": http, "protocol": "TCP"},
        {"name": "grpc", "containerPort": grpc, "protocol": "TCP"},
    ]
    assert int(objects["ConfigMap"]["data"]["DLSERVE_GRPC_PORT"]) == grpc
    assert server["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = server["startupProbe"]
    assert startup["httpGet"]["path"] == "/livez"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180, "model loading"
    # draining: preStop wait + the service's request timeout fit in the grace period
    pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) >= 5
    request_timeout = service_request_timeout()
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + request_timeout
    strategy = deployment["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    # settings from the ConfigMap; the image and models follow the overlay
    assert server["envFrom"] == [
        {"configMapRef": {"name": objects["ConfigMap"]["metadata"]["name"]}}
    ]
    assert server["image"] == f"registry.example.com/dlserve:{overlay}"
    assert server["resources"]["requests"] == server["resources"]["limits"]
    assert int(config["DLSERVE_WORKERS"]) <= int(server["resources"]["requests"]["cpu"])


def service_request_timeout() -> int:
    """BentoML's request timeout of the served class (``traffic`` of ``@bentoml.service``)."""
    code = "from service.service import DLServe; print(DLServe.config['traffic']['timeout'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def test_gpu_overlay_requires_a_gpu_and_cuda() -> None:
    gpu = by_kind(render(K8S / "gpu"))
    cpu = by_kind(render(K8S / "cpu"))
    pod = gpu["Deployment"]["spec"]["template"]["spec"]
    assert container(gpu["Deployment"])["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["ConfigMap"]["data"]["DLSERVE_PROVIDER"] == "cuda"
    assert cpu["ConfigMap"]["data"]["DLSERVE_PROVIDER"] == "cpu"
    cpu_pod = cpu["Deployment"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(cpu_pod)
    assert stage("base-gpu").env()["DLSERVE_PROVIDER"] == "cuda"


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_models_volume_mounts_where_the_image_keeps_its_store(tmp_path: Path, overlay: str) -> None:
    plain = by_kind(render(K8S / overlay))["Deployment"]
    mounted = by_kind(render(overlay_with_models_volume(tmp_path, overlay)))["Deployment"]
    models = f"{image_env()['BENTOML_HOME']}/models"
    mounts = {m["mountPath"]: m for m in container(mounted)["volumeMounts"]}
    assert mounts[models]["readOnly"] is True
    assert models not in {m["mountPath"] for m in container(plain)["volumeMounts"]}
    volumes = {v["name"]: v for v in mounted["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[models]["name"]]["persistentVolumeClaim"]["readOnly"] is True
    # the other writable paths stay as they were (strategic merge by name / mountPath)
    assert writable_paths(mounted) == writable_paths(plain)
    # the Dockerfile's models stage copies exactly that folder into the image
    copies = stage("runtime").all("COPY")
    assert f"--from=models {models} {models}" in copies


def test_service_monitor_pdb_hpa_policy_select_the_deployment() -> None:
    objects = by_kind(render(K8S / "cpu"))
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == selector
    service_labels = objects["Service"]["metadata"]["labels"]
    assert (
        objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items()
        <= service_labels.items()
    )
    http_port, grpc_port = objects["Service"]["spec"]["ports"]
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == http_port["name"] and endpoint["path"] == "/metrics"
    ports = container(objects["Deployment"])["ports"]
    assert [p["targetPort"] for p in (http_port, grpc_port)] == [p["name"] for p in ports]
    assert grpc_port["appProtocol"] == "grpc"
    # the NetworkPolicy opens the container ports only (API and /metrics share HTTP's), and
    # only HTTP's to Prometheus
    ingress = objects["NetworkPolicy"]["spec"]["ingress"]
    allowed = {p["port"] for rule in ingress for p in rule["ports"]}
    assert allowed == {p["containerPort"] for p in ports}
    scrape = next(rule for rule in ingress if "monitoring" in json.dumps(rule["from"]))
    assert [p["port"] for p in scrape["ports"]] == [ports[0]["containerPort"]]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] < hpa["minReplicas"]
    pods_metric = next(m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods")
    adapter = yaml.safe_load((ROOT / "deploy" / "prometheus" / "adapter-rules.yaml").read_text())
    assert pods_metric in {rule["name"]["as"] for rule in adapter["rules"]}


def settings_error(env: dict[str, str]) -> str | None:
    """The service's settings read from ``env`` in a clean process: None or the error."""
    code = (
        "from service.registry import settings_from_env\n"
        "try:\n    settings_from_env()\nexcept Exception as exc:\n    print(exc)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DLSERVE_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip() or None


def test_configmap_names_real_settings_with_valid_values() -> None:
    for overlay in ("cpu", "gpu"):
        data = by_kind(render(K8S / overlay))["ConfigMap"]["data"]
        assert settings_error(dict(data)) is None
    data = by_kind(render(K8S / "cpu"))["ConfigMap"]["data"]
    # each variable is really read: a bad value is refused, naming it
    for name in sorted(data):
        error = settings_error({**data, name: "-5x"})
        assert error and name in error, name


def test_the_configmap_serves_every_declared_area() -> None:
    """DLSERVE_MODELS lists the registry's areas: a new area is served by the Deployment (its
    models are exported by deploy/docker/export-models.sh from the same list)."""
    for overlay in ("cpu", "gpu"):
        data = by_kind(render(K8S / overlay))["ConfigMap"]["data"]
        served = split_names(data["DLSERVE_MODELS"])
        assert sorted(served) == sorted(registry.all_areas(())) and len(set(served)) == len(served)


def test_batch_job_runs_from_the_image() -> None:
    objects = by_kind(render(K8S / "batch"))
    job = objects["Job"]
    pod = job["spec"]["template"]["spec"]
    (batch,) = pod["containers"]
    assert "command" not in batch, "keep the image's tini ENTRYPOINT"
    assert batch["args"][:3] == ["python", "-m", "service.batch"]
    assert (ROOT / "service" / "batch" / "__main__.py").exists()
    assert batch["image"].startswith("registry.example.com/dlserve:cpu")
    assert image_env()["PYTHONPATH"] == stage("runtime").all("WORKDIR")[0] == "/opt/dlserve"
    assert batch["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    mounts = {m["mountPath"] for m in batch["volumeMounts"]}
    assert {"/tmp", f"{image_env()['BENTOML_HOME']}/tmp"} <= mounts
    for arg in batch["args"]:
        if arg.startswith(("--input=", "--output=")):
            assert any(arg.split("=", 1)[1].startswith(m + "/") for m in mounts - {"/tmp"})
    rayjob = objects["RayJob"]
    assert rayjob["spec"]["entrypoint"].startswith("python -m service.batch --engine ray")
    for template in pod_templates(rayjob):
        (ray,) = template["spec"]["containers"]
        assert ray["image"] == "registry.example.com/dlserve:cpu-ray"
        assert template["spec"]["securityContext"]["runAsUser"] == 10001
    global_args, _ = parse()
    assert global_args["BATCH_ENGINE"] == "local"
