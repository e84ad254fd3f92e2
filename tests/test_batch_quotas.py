"""HTTP batch jobs have quotas (rows, output size, jobs per worker), score with the service's own
sessions and honour ``DLSERVE_MODELS``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from harness.http_checks import batch_job_answer
from harness.local_server import LocalServer
from service import registry
from service.batch import http as batch_http
from training.fraud.simulator import simulate_transactions

pytestmark = pytest.mark.http
ROUTE = "/v1/batch/jobs"


@pytest.fixture(scope="module")
def server(stored_models: dict) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_BATCH_MAX_ROWS": "1000",
        "DLSERVE_BATCH_MAX_OUTPUT_BYTES": "16384",
        "DLSERVE_BATCH_DIR": tempfile.mkdtemp(prefix="dlserve-quota-jobs-"),
    }
    with LocalServer(env=env) as running:
        yield running.wait("/readyz")


def _job(server: LocalServer, rows: int, model: str = "fraud") -> tuple[str, httpx.Response]:
    """Submit ``rows`` simulated transactions; the task id and its final answer."""
    content = simulate_transactions(rows, seed=4).to_csv(index=False).encode()
    files = {"file": ("rows.csv", content, "text/csv")}
    submitted = httpx.post(
        server.url + ROUTE + "/submit", files=files, data={"model": model}, timeout=30
    )
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    return task_id, batch_job_answer(server, task_id)


def _sessions_opened(server: LocalServer) -> int:
    return Path(server._log).read_text(errors="replace").count("opened model.onnx")


def test_a_job_within_its_quotas_scores_on_the_served_session(server: LocalServer) -> None:
    opened = _sessions_opened(server)
    _, answer = _job(server, 100)
    assert answer.status_code == 200, answer.text
    assert answer.json()["scored"] == 100
    assert _sessions_opened(server) == opened  # no model copy loaded for the job


@pytest.mark.parametrize(
    ("rows", "limit"),
    [(1500, "more than 1000 rows"), (1000, "output passed 16384 bytes")],
)
def test_a_job_past_a_quota_gets_413_naming_it(server: LocalServer, rows: int, limit: str) -> None:
    _, answer = _job(server, rows)
    assert answer.status_code == 413, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == ["body", "file"] and limit in detail["msg"]
    assert "DLSERVE_BATCH_MAX_" in detail["msg"]


def test_a_model_left_out_by_dlserve_models_is_refused(server: LocalServer) -> None:
    _, answer = _job(server, 10, model="sentiment")
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == ["body", "model"] and "not enabled (DLSERVE_MODELS)" in detail["msg"]


def test_a_job_beyond_the_worker_places_gets_429(tmp_path: Path) -> None:
    served = SimpleNamespace(settings=registry.settings_from_env(), ready=lambda name: None)
    held = 0
    while batch_http.take_job_place(served.settings) is None:  # every place taken by other jobs
        held += 1
    try:
        status, body = batch_http.run_upload(tmp_path / "rows.csv", "fraud", "0" * 32, served)
    finally:
        for _ in range(held):
            batch_http.release_job_place()
    assert held == served.settings.batch_max_jobs + served.settings.batch_max_queued
    assert status == 429 and "(DLSERVE_BATCH_MAX_JOBS running" in body["error"]
