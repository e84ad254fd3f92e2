"""Shared fixtures: a private BentoML model store holding a smoke-trained fraud model, and a
real ``bentoml serve`` process on a free port (``tests.local_server``).

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

from tests.local_server import LocalServer

SCRATCH = Path(tempfile.mkdtemp(prefix="dlserve-tests-"))
os.environ["BENTOML_HOME"] = str(SCRATCH / "bentoml")
os.environ["DLSERVE_REPORTS"] = str(SCRATCH / "reports")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# Passive OpenMP waiting, as `python -m training` sets it: spinning threads collapse when other
# processes share the cores (the smoke runs train in this process).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)


# Every served model, smoke-trained into the private store once per test session:
# model store name -> training CLI arguments. A new area adds its line here.
SMOKE_RUNS = {
    "fraud-scorer": ["fraud", "--preset", "smoke", "--register", "--quiet"],
    "image-classifier": ["image", "--preset", "smoke", "--register", "--quiet"],
    # One run registers both sentiment models; identical arguments are trained once.
    "sentiment-rnn": ["sentiment", "--preset", "smoke", "--register", "--quiet"],
    "sentiment-transformer": ["sentiment", "--preset", "smoke", "--register", "--quiet"],
    "text-generator": ["text", "--preset", "smoke", "--register", "--quiet"],
}


@pytest.fixture(scope="session")
def stored_models() -> dict[str, dict]:
    """Train every model of ``SMOKE_RUNS``; return each one's stored metadata by name."""
    from core.model_store import read_stored_model
    from training.cli import main

    stored, done = {}, []
    for name, arguments in SMOKE_RUNS.items():
        if arguments not in done:
            assert main(arguments) == 0
            done.append(arguments)
        stored[name] = read_stored_model(f"{name}:latest")[0]
    return stored


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
def server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    """A real HTTP server over the private store with every model loaded and ready."""
    with LocalServer() as running:
        yield running.wait("/readyz")
