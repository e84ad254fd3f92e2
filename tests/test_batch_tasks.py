"""The batch job task routes: a running job can be cancelled and its state says so, a finished one
cannot and says why, uploads stay in the job folder (not BentoML's task store), text jobs have a
token budget, and ``/retry`` runs an ended job's input again."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pandas as pd
import pytest

from harness.http_checks import batch_job_answer
from harness.local_server import LocalServer
from service.batch import records
from service.batch.parts import PAUSE_ENV
from service.batch.records import RECORD, JobStatus
from training.fraud.simulator import simulate_transactions

pytestmark = pytest.mark.http
ROUTE = "/v1/batch/jobs"
MAX_TOKENS = 20_000
PAUSE_S = 0.3  # per chunk committed: a job of many chunks runs long enough to be cancelled


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's job folders (``DLSERVE_BATCH_DIR``/dlserve-jobs)."""
    return tmp_path_factory.mktemp("batch") / "dlserve-jobs"


@pytest.fixture(scope="module")
def server(stored_models: dict, jobs: Path) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_MODELS": "fraud,text",
        "DLSERVE_BATCH_MAX_TOKENS": str(MAX_TOKENS),
        "DLSERVE_BATCH_DIR": str(jobs.parent),
        PAUSE_ENV: str(PAUSE_S),
    }
    with LocalServer(env=env) as running:
        yield running.wait("/readyz")


def _submit(server: LocalServer, content: bytes, name: str, model: str) -> str:
    files = {"file": (name, content, "application/octet-stream")}
    submitted = httpx.post(
        server.url + ROUTE + "/submit", files=files, data={"model": model}, timeout=60
    )
    assert submitted.status_code == 200, submitted.text
    return submitted.json()["task_id"]


def _status(server: LocalServer, task_id: str) -> str:
    answer = httpx.get(server.url + ROUTE + "/status", params={"task_id": task_id}, timeout=30)
    return answer.json()["status"]


def _prompts(rows: int, max_tokens: int) -> bytes:
    frame = pd.DataFrame({"prompt": ["ROMEO:\n"] * rows, "max_tokens": [max_tokens] * rows})
    return frame.to_json(orient="records", lines=True).encode()


def test_a_running_job_is_cancelled_and_says_so(server: LocalServer, jobs: Path) -> None:
    # 2,400 prompts of 8 tokens, within the budget: 38 chunks, over 11 s uncancelled
    task_id = _submit(server, _prompts(2_400, 1), "prompts.jsonl", "text")
    while _status(server, task_id) == "pending":
        pass  # the job starts at once: the worker runs no other
    canceled = httpx.put(server.url + ROUTE + "/cancel", params={"task_id": task_id}, timeout=30)
    assert canceled.status_code == 202, canceled.text
    document = httpx.get(server.url + "/docs.json", timeout=30).json()
    documented = document["paths"][ROUTE + "/cancel"]["put"]["responses"]["202"]
    schema = documented["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    jsonschema.validate(canceled.json(), document["components"]["schemas"][schema])
    answer = batch_job_answer(server, task_id)
    assert _status(server, task_id) == "canceled"
    assert answer.status_code == 409 and "canceled after" in answer.json()["error"]
    assert not (jobs / task_id / "scores.parquet").exists()


def test_an_ended_job_cannot_be_cancelled_and_stays_completed(server: LocalServer) -> None:
    content = simulate_transactions(20, seed=5).to_csv(index=False).encode()
    task_id = _submit(server, content, "rows.csv", "fraud")
    assert batch_job_answer(server, task_id).status_code == 200
    refused = httpx.put(server.url + ROUTE + "/cancel", params={"task_id": task_id}, timeout=30)
    assert refused.status_code == 409 and "already ended (completed)" in refused.json()["error"]
    assert _status(server, task_id) == "completed"


def test_a_text_job_past_its_token_budget_gets_413_naming_it(server: LocalServer) -> None:
    task_id = _submit(server, _prompts(1_000, 20), "prompts.jsonl", "text")  # 27,000 tokens
    answer = batch_job_answer(server, task_id)
    assert answer.status_code == 413, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == ["body", "file"]
    assert f"more than {MAX_TOKENS} tokens" in detail["msg"]
    assert "(DLSERVE_BATCH_MAX_TOKENS)" in detail["msg"]
    assert _status(server, task_id) == "failed"


def test_uploads_stay_in_the_job_folder_not_the_task_store(server: LocalServer, jobs: Path) -> None:
    def task_store_bytes() -> int:
        return sum(path.stat().st_size for path in server.home.glob("task_result.db*"))

    before = task_store_bytes()
    content = simulate_transactions(8_000, seed=6).to_csv(index=False).encode()  # ~1 MB
    task_ids = [_submit(server, content, "rows.csv", "fraud") for _ in range(3)]
    assert all(batch_job_answer(server, task_id).status_code == 200 for task_id in task_ids)
    assert task_store_bytes() - before < len(content) // 10
    for task_id in task_ids:
        folder = jobs / task_id
        assert (folder / "input.csv").read_bytes() == content and (folder / RECORD).is_file()


def test_retry_runs_an_ended_jobs_input_again(server: LocalServer) -> None:
    content = simulate_transactions(30, seed=7).to_csv(index=False).encode()
    first = _submit(server, content, "rows.csv", "fraud")
    assert batch_job_answer(server, first).status_code == 200
    retried = httpx.post(server.url + ROUTE + "/retry", params={"task_id": first}, timeout=30)
    assert retried.status_code == 200, retried.text
    again = retried.json()["task_id"]
    assert again != first
    answer = batch_job_answer(server, again)
    assert answer.status_code == 200 and answer.json()["rows"] == 30


@pytest.mark.parametrize("verb", ["GET status", "GET get", "POST retry", "PUT cancel"])
def test_an_unknown_task_is_404(server: LocalServer, verb: str) -> None:
    method, route = verb.split()
    answer = httpx.request(
        method, f"{server.url}{ROUTE}/{route}", params={"task_id": "0" * 32}, timeout=30
    )
    assert answer.status_code == 404 and "no task" in answer.json()["error"]


def test_a_job_whose_worker_stopped_reads_as_failed(stored_models: dict, tmp_path: Path) -> None:
    env = {"DLSERVE_MODELS": "text", "DLSERVE_BATCH_DIR": str(tmp_path), PAUSE_ENV: str(PAUSE_S)}
    with LocalServer(env=env) as server:
        server.wait("/readyz")
        task_id = _submit(server, _prompts(2_400, 1), "prompts.jsonl", "text")  # 11 s at least
        while _status(server, task_id) == "pending":
            pass
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=90)
    record = records.read(tmp_path / "dlserve-jobs" / task_id)  # what /status and /get read
    assert record is not None and record.status == JobStatus.FAILED
    assert "worker running this job stopped" in record.answer["error"]
