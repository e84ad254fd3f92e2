"""Render the Kustomize layout under ``deploy/k8s/`` without kubectl: the features the files
use, applied as kustomize applies them. Anything else in a kustomization file is refused, so a
new feature cannot be silently ignored. ``tests/test_deploy_k8s.py`` compares this renderer
with the real ``kubectl kustomize`` wherever one is installed.

Supported: ``resources`` (files and folders), ``components`` (``kind: Component`` folders),
``patches`` (strategic-merge files, or JSON6902 with a ``target``), ``images``.
Strategic merge follows Kubernetes' patch strategy for the fields used here: lists of
containers, env, volumes and image pull secrets merge by name (volume mounts by mountPath,
container ports by containerPort), new items first as kustomize does; every other list is
replaced; ``null`` deletes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "patches", "images"}
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize DIRECTORY`` would print (in resource order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise ValueError(f"{directory}: kustomization keys this renderer lacks: {unknown}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else load_documents(path))
    for entry in kustomization.get("components", []):
        component = (directory / entry).resolve()
        spec = yaml.safe_load((component / "kustomization.yaml").read_text())
        if spec.get("kind") != "Component":
            raise ValueError(f"{component} is not a kind: Component")
        objects = apply(component, spec, objects)
    return apply(directory, kustomization, objects)


def apply(directory: Path, kustomization: dict, objects: list[dict]) -> list[dict]:
    """A kustomization's (or component's) own transformations: patches, then images."""
    objects = copy.deepcopy(objects)
    if set(kustomization) - KUSTOMIZATION_KEYS:
        raise ValueError(f"{directory}: unsupported keys {set(kustomization) - KUSTOMIZATION_KEYS}")
    if kustomization.get("kind") == "Component":
        for entry in kustomization.get("resources", []):
            objects.extend(load_documents(directory / entry))
    for patch in kustomization.get("patches", []):
        body = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
        documents = [doc for doc in yaml.safe_load_all(body) if doc]
        if isinstance(documents[0], list):  # JSON6902
            for obj in select(objects, patch["target"]):
                json6902(obj, documents[0])
            continue
        for document in documents:
            target = {"kind": document["kind"], "name": document["metadata"]["name"]}
            matched = select(objects, patch.get("target", target))
            if not matched:
                raise ValueError(f"{directory}: patch {target} matches nothing")
            for obj in matched:
                merged = strategic_merge(obj, document)
                obj.clear()
                obj.update(merged)
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in pod_containers(obj):
                set_image(container, image)
    return objects


def select(objects: list[dict], target: dict) -> list[dict]:
    def matches(obj: dict) -> bool:
        return all(
            (obj["metadata"]["name"] if key == "name" else obj.get(key)) == value
            for key, value in target.items()
            if key in ("kind", "name")
        )

    return [obj for obj in objects if matches(obj)]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    key = MERGE_KEYS.get(field)
    if isinstance(base, list) and isinstance(patch, list) and key:
        merged = [copy.deepcopy(item) for item in base]
        added = []
        for item in patch:
            same = [i for i, old in enumerate(merged) if old.get(key) == item.get(key)]
            if same:
                merged[same[0]] = strategic_merge(merged[same[0]], item)
            else:
                added.append(copy.deepcopy(item))
        return added + merged  # kustomize puts a patch's new items first
    return copy.deepcopy(patch)


def json6902(obj: dict, operations: list[dict]) -> None:
    for operation in operations:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in operation["path"][1:].split("/")
        ]
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if operation["op"] in ("add", "replace"):
            if isinstance(node, list):
                index = len(node) if last == "-" else int(last)
                if operation["op"] == "add":
                    node.insert(index, operation["value"])
                else:
                    node[index] = operation["value"]
            else:
                node[last] = operation["value"]
        elif operation["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise ValueError(f"JSON6902 op {operation['op']} not supported")


def pod_templates(obj: dict) -> list[dict]:
    """Every pod template of a workload, RayJob head and worker groups included."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [spec["template"]]
    if obj["kind"] == "RayJob":
        cluster = spec["rayClusterSpec"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        return [group["template"] for group in groups]
    return []


def pod_containers(obj: dict) -> list[dict]:
    return [
        container
        for template in pod_templates(obj)
        for key in ("initContainers", "containers")
        for container in template["spec"].get(key, [])
    ]


def set_image(container: dict, image: dict) -> None:
    name, _, tag = container["image"].partition(":")
    if "@" in name or name != image["name"]:
        return
    name = image.get("newName", name)
    if "digest" in image:
        container["image"] = f"{name}@{image['digest']}"
    else:
        container["image"] = (
            f"{name}:{image.get('newTag', tag)}" if image.get("newTag", tag) else name
        )
