"""The add-an-area recipe (docs/ARCHITECTURE.md, "Adding an area") is true: in a copy of the
repository, an example area written with exactly the files and edits the recipe names
(``tests/recipe_area/``: a linear regressor that adds up four numbers) trains with the training
CLI, passes the registry, README and deploy tests, is served on its route, ``/v1/models`` and
``/v2``, and is in the rendered Deployment's ConfigMap; nothing else in the copy changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.local_server import LocalServer
from tests.deploy_k8s import K8S, render

pytestmark = pytest.mark.http
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(__file__).parent / "recipe_area"
AREA, MODEL, ROUTE = "sums", "sum-regressor", "/v1/sums"
README_ROW = (
    f"| {AREA} | `{MODEL}` | batched | `POST {ROUTE}` | `python -m training {AREA}` "
    f"| [card](docs/models/{MODEL}.md) |"
)
EVERY_ROUTE_ENTRY = f'''        "{ROUTE}": (
            {{"json": {{"rows": [[1.0, 2.0, 3.0, 4.0]]}}}},
            lambda a: len(a["totals"]) == 1,
        ),
'''


def recipe_paths() -> set[str]:
    """The files the recipe's numbered steps name, ``<area>`` and ``<model>`` filled in."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("\n## Adding an area\n", 1)[1].split("\n## ", 1)[0]
    named = set()
    for line in re.findall(r"^\d+\. (.*)$", section, flags=re.M):
        named |= set(re.findall(r"`([^`\s]+\.(?:py|md|yaml))`", line.split(":")[0]))
    return {path.replace("<area>", AREA).replace("<model>", MODEL) for path in named}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: the anchor of the recipe's edit moved"
    path.write_text(text.replace(old, new))


def follow_the_recipe(copy: Path) -> None:
    """The example's new files, and the recipe's three edits."""
    for source in EXAMPLE.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts:
            target = copy / source.relative_to(EXAMPLE)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    readme = copy / "README.md"
    table_end = "| [card](docs/models/text-embedder.md) |\n"
    edit(readme, table_end, table_end + README_ROW + "\n")
    configmap = copy / "deploy" / "k8s" / "base" / "configmap.yaml"
    models = re.search(r"DLSERVE_MODELS: (\S+)\n", configmap.read_text())
    assert models is not None
    edit(configmap, models.group(0), f"DLSERVE_MODELS: {models.group(1)},{AREA}\n")
    edit(
        copy / "tests" / "every_route.py",
        "    }\n\n\ndef check_every_route",
        EVERY_ROUTE_ENTRY + "    }\n\n\ndef check_every_route",
    )


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def changed_files(copy: Path, originals: list[str]) -> set[str]:
    """Paths of ``copy`` that are new or differ from the repository's."""
    files = {
        str(path.relative_to(copy))
        for path in copy.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    return {
        name
        for name in files
        if name not in originals or (copy / name).read_bytes() != (ROOT / name).read_bytes()
    }


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The repository's tracked files with the recipe followed."""
    copy = tmp_path_factory.mktemp("recipe") / "dlserve"
    originals = tracked_files()
    for name in originals:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, copy / name)
    follow_the_recipe(copy)
    assert changed_files(copy, originals) == recipe_paths()
    yield copy


def run_in(copy: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),
        "BENTOML_HOME": str(home),
        "DLSERVE_REPORTS": str(home / "reports"),
    }
    return subprocess.run(
        [sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_recipe_names_every_file_an_area_needs() -> None:
    assert recipe_paths() == {
        f"models/{AREA}.py",
        f"training/{AREA}/__init__.py",
        f"training/{AREA}/train.py",
        f"service/areas/{AREA}.py",
        f"docs/models/{MODEL}.md",
        "README.md",
        "deploy/k8s/base/configmap.yaml",
        "tests/every_route.py",
    }


def test_an_area_added_by_the_recipe_trains_passes_and_is_served(
    copy: Path, tmp_path: Path
) -> None:
    home = tmp_path / "bentoml"
    trained = run_in(copy, home, "-m", "training", AREA, "--preset", "smoke", "--register")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    checks = run_in(
        copy,
        home,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_registry.py",
        "tests/test_deploy_k8s.py::test_the_configmap_serves_every_declared_area",
        "tests/test_docs.py::test_every_relative_link_in_the_docs_points_to_a_file",
    )
    assert checks.returncode == 0, checks.stdout[-3000:]
    env = {"PYTHONPATH": str(copy), "BENTOML_HOME": str(home), "DLSERVE_MODELS": AREA}
    with LocalServer(env, cwd=copy) as server:
        server.wait("/readyz")
        answer = httpx.post(server.url + ROUTE, json={"rows": [[1, 2, 3, 4], [-5, 0, 5, 10]]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["totals"] == pytest.approx([10.0, 10.0], abs=0.5)
        listed = httpx.get(server.url + "/v1/models").json()["models"]
        assert [(m["name"], m["status"]) for m in listed] == [(MODEL, "ready")]
        v2 = httpx.get(f"{server.url}/v2/models/{MODEL}/ready")
        assert v2.status_code == 200
    configmaps = [
        o for o in render(copy / K8S.relative_to(ROOT) / "cpu") if o["kind"] == "ConfigMap"
    ]
    assert AREA in configmaps[0]["data"]["DLSERVE_MODELS"].split(",")
