"""Batch jobs over HTTP: the task routes at ``/v1/batch/jobs`` (submit, status, get, files)."""

from __future__ import annotations

import io
import os
import time
import uuid
from typing import Any

import httpx
import pandas as pd
import pytest

from harness.http_checks import batch_job_answer
from harness.local_server import LocalServer
from service.batch.http import FILES, jobs_dir
from training.fraud.simulator import simulate_transactions

pytestmark = pytest.mark.http
ROUTE = "/v1/batch/jobs"


def _submit(server: LocalServer, content: bytes, name: str, model: str = "fraud") -> httpx.Response:
    files = {"file": (name, content, "application/octet-stream")}
    return httpx.post(
        server.url + ROUTE + "/submit", files=files, data={"model": model}, timeout=30
    )


def test_a_submitted_file_is_scored_and_downloadable(server: LocalServer) -> None:
    frame = simulate_transactions(600, seed=8)
    frame.loc[5, "amount"] = -1.0
    submitted = _submit(server, frame.to_csv(index=False).encode(), "rows.csv")
    assert submitted.status_code == 200, submitted.text
    answer = batch_job_answer(server, submitted.json()["task_id"])
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["rows"] == 600 and body["rejected"] >= 1
    assert body["model"]["name"] == "fraud-scorer"
    scores = pd.read_parquet(io.BytesIO(httpx.get(server.url + body["files"]["scores"]).content))
    rejects = pd.read_parquet(io.BytesIO(httpx.get(server.url + body["files"]["rejects"]).content))
    assert len(scores) == body["scored"] and 5 in set(rejects["row_id"])


@pytest.mark.parametrize(
    ("content", "model"),
    [(b"hello\n", "fraud"), (b"\x00\xff\xfe garbage", "fraud"), (b"amount\n1\n", "nope")],
)
def test_a_bad_file_or_model_gets_a_400_naming_it(
    server: LocalServer, content: bytes, model: str
) -> None:
    submitted = _submit(server, content, "bad.csv", model)
    assert submitted.status_code == 200
    answer = batch_job_answer(server, submitted.json()["task_id"])
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["detail"][0]["loc"][0] == "body" and "/tmp" not in answer.text


def test_an_upload_over_the_size_limit_gets_413(server: LocalServer) -> None:
    response = _submit(server, b"x" * (9 * 1024 * 1024), "big.csv")
    assert response.status_code == 413
    assert response.json()["detail"][0]["type"] == "body_too_large"


def test_an_unknown_job_file_is_404(server: LocalServer) -> None:
    assert httpx.get(server.url + ROUTE + "/0123/scores").status_code == 404


def test_an_expired_job_is_404_and_deleted_at_the_next_submit(server: LocalServer) -> None:
    old = jobs_dir() / uuid.uuid4().hex  # the server's folder: same environment
    old.mkdir(parents=True)
    (old / FILES["scores"]).write_bytes(b"PAR1")
    two_days_ago = time.time() - 2 * 86400
    for path in (old / FILES["scores"], old):
        os.utime(path, (two_days_ago, two_days_ago))
    assert httpx.get(f"{server.url}{ROUTE}/{old.name}/scores").status_code == 404
    frame = simulate_transactions(50, seed=9)
    submitted = _submit(server, frame.to_csv(index=False).encode(), "rows.csv")
    answer = batch_job_answer(server, submitted.json()["task_id"])
    assert answer.status_code == 200, answer.text
    assert not old.exists()
    assert httpx.get(server.url + answer.json()["files"]["scores"]).status_code == 200
