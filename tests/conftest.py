"""Shared fixtures: a private BentoML model store holding a smoke-trained fraud model, and a
real ``bentoml serve`` process on a free port (``service.local_server``).

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

from service.local_server import LocalServer

SCRATCH = Path(tempfile.mkdtemp(prefix="dlserve-tests-"))
os.environ["BENTOML_HOME"] = str(SCRATCH / "bentoml")
os.environ["DLSERVE_REPORTS"] = str(SCRATCH / "reports")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def fraud_model() -> dict:
    """Train the smoke preset into the private store once; return its stored metadata."""
    from service.model_store import read_stored_model
    from training.cli import main

    assert main(["fraud", "--preset", "smoke", "--register", "--quiet"]) == 0
    metadata, _ = read_stored_model("fraud-scorer:latest")
    return metadata


@pytest.fixture(scope="session")
def server(fraud_model: dict) -> Iterator[LocalServer]:
    """A real HTTP server over the private store, up and ready."""
    with LocalServer() as running:
        yield running.wait("/readyz")
