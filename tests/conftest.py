"""Shared fixtures: a private BentoML model store holding every area's smoke-trained models, and
a real ``bentoml serve`` process on a free port (``harness.local_server``).

The store location must be set before bentoml is first imported, hence the environment is
prepared at import time of this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.user_env  # noqa: F401  (captures the operator's store before the override below)
from harness.local_server import LocalServer

SCRATCH = Path(tempfile.mkdtemp(prefix="dlserve-tests-"))
os.environ["BENTOML_HOME"] = str(SCRATCH / "bentoml")
os.environ["DLSERVE_REPORTS"] = str(SCRATCH / "reports")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# No gRPC server for the service run in this process (its stubs would share protobuf's default
# pool with tritonclient.grpc's, service/grpc_api/__init__.py); each LocalServer gets its own.
os.environ["DLSERVE_GRPC_PORT"] = "0"
# Passive OpenMP waiting, as `python -m training` sets it: spinning threads collapse when other
# processes share the cores (the smoke runs train in this process).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def stored_models() -> dict[str, dict]:
    """Smoke-train every declared training area (in dependency order) into the private store;
    return each registered model's stored metadata by name."""
    from core.model_store import read_stored_model
    from training.areas import SMOKE_PRESET, training_areas
    from training.cli import main

    stored = {}
    for area in training_areas().values():
        assert main([area.name, "--preset", SMOKE_PRESET, "--register", "--quiet"]) == 0
        stored |= {name: read_stored_model(f"{name}:latest")[0] for name in area.models}
    return stored


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``toy-sum`` and ``toy-counter`` in the private store (``tests.toy_models``)."""
    from tests.toy_models import register_toy_models

    register_toy_models(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def fraud_model(stored_models: dict[str, dict]) -> dict:
    """Stored metadata of the smoke-trained fraud scorer."""
    return stored_models["fraud-scorer"]


@pytest.fixture(scope="session")
def image_model(stored_models: dict[str, dict]) -> dict:
    """Stored metadata of the smoke-trained image classifier."""
    return stored_models["image-classifier"]


@pytest.fixture(scope="session")
def sentiment_models(stored_models: dict[str, dict]) -> dict[str, dict]:
    """Stored metadata of the smoke-trained sentiment models, by request name."""
    return {kind: stored_models[f"sentiment-{kind}"] for kind in ("rnn", "transformer")}


@pytest.fixture(scope="session")
def text_model(stored_models: dict[str, dict]) -> dict:
    """Stored metadata of the smoke-trained text generator."""
    return stored_models["text-generator"]


@pytest.fixture(scope="session")
def embedder_model(stored_models: dict[str, dict]) -> dict:
    """Stored metadata of the exported (smoke-preset) sentence embedder."""
    return stored_models["text-embedder"]


@pytest.fixture(scope="session")
def server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    """A real HTTP server over the private store with every model loaded and ready."""
    with LocalServer() as running:
        yield running.wait("/readyz")
