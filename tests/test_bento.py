"""``bentoml build`` packs the service, its code (no training code) and every declared model;
the built Bento, served from outside the repository, answers a request on every route."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from harness.local_server import REPOSITORY, LocalServer
from service import registry
from tests.every_route import check_every_route

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def bento(stored_models: dict) -> str:
    """The tag of a Bento built from the repository over the smoke-trained models."""
    built = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def test_the_bento_holds_the_serving_code_and_every_model(bento: str) -> None:
    name, version = bento.split(":")
    root = Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version
    info = yaml.safe_load((root / "bento.yaml").read_text())
    packed = {model["tag"].split(":")[0] for model in info["services"][0]["models"]}
    assert packed == {spec.name for spec in registry.model_specs()}
    sources = {path.relative_to(root / "src").parts[0] for path in (root / "src").rglob("*.py")}
    assert sources == {"service", "core"}  # no training code, no torch
    page = {path.name for path in (root / "src" / "service" / "ui").iterdir()}
    assert {"index.html", "app.js", "style.css"} <= page  # the try-it page (GET /ui)
    requirements = (root / "env" / "python" / "requirements.txt").read_text()
    assert "torch" not in requirements and "onnxruntime" in requirements


@pytest.fixture(scope="module")
def served_bento(bento: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    outside = tmp_path_factory.mktemp("elsewhere")
    with LocalServer(bento=bento, cwd=outside) as running:
        yield running.wait("/readyz", timeout=180)


def test_the_served_bento_answers_every_route(served_bento: LocalServer) -> None:
    check_every_route(served_bento.url)
    for path in ("/ui", "/ui/app.js", "/ui/style.css"):
        assert httpx.get(served_bento.url + path, timeout=10).status_code == 200, path
