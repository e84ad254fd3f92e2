"""HTTP batch jobs hold under concurrent submissions: 16 submitters on a 2-worker server, every
job accepted, run to completion and answered, none left in progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from harness.http_checks import batch_job_answer
from harness.local_server import LocalServer
from training.fraud.simulator import simulate_transactions

pytestmark = pytest.mark.http
ROUTE = "/v1/batch/jobs"
SUBMITTERS = 16
JOBS_EACH = 8
ROWS = 10


@pytest.fixture(scope="module")
def server(stored_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_WORKERS": "2",
        # every job may wait on one worker; two run at once there (the default)
        "DLSERVE_BATCH_MAX_QUEUED": str(SUBMITTERS * JOBS_EACH),
        "DLSERVE_BATCH_DIR": str(tmp_path_factory.mktemp("batch")),
    }
    with LocalServer(env=env) as running:
        yield running.wait("/readyz")


def _submit_then_finish(server: LocalServer, submitter: int) -> list[str]:
    """This submitter's jobs, submitted back to back, then each waited for to its end: what
    became of each (``ok``, or the first thing that went wrong)."""
    content = simulate_transactions(ROWS, seed=submitter).to_csv(index=False).encode()
    files = {"file": ("rows.csv", content, "text/csv")}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        submitted = [
            client.post(ROUTE + "/submit", files=files, data={"model": "fraud"})
            for _ in range(JOBS_EACH)
        ]
        outcomes = [f"submit {s.status_code}" for s in submitted if s.status_code != 200]
        for task_id in [s.json()["task_id"] for s in submitted if s.status_code == 200]:
            answer = batch_job_answer(server, task_id)
            status = client.get(ROUTE + "/status", params={"task_id": task_id}).json()
            if status.get("status") != "completed":
                outcomes.append(f"status {status.get('status')}")
            elif answer.status_code != 200 or answer.json().get("rows") != ROWS:
                outcomes.append(f"get {answer.status_code}")
            else:
                outcomes.append("ok")
    return outcomes


def test_concurrent_submitters_on_two_workers_lose_no_job(server: LocalServer) -> None:
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        runs = pool.map(lambda s: _submit_then_finish(server, s), range(SUBMITTERS))
        outcomes = Counter(outcome for run in runs for outcome in run)
    print(f"{SUBMITTERS} submitters x {JOBS_EACH} jobs on 2 workers: {dict(outcomes)}")
    assert outcomes == Counter({"ok": SUBMITTERS * JOBS_EACH}), server.logs()
