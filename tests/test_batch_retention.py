"""HTTP batch jobs' retention: a submit deletes the job folders whose last write is older than
``DLSERVE_BATCH_RETENTION_S``, never a running job's."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from service import registry
from service.batch.adapter import find_adapter
from service.batch.http import FILES, jobs_dir, run_upload
from service.batch.job import load_for_batch
from training.fraud.simulator import simulate_transactions

TWO_DAYS_AGO = time.time() - 2 * 86400


def _job_folder(*entries: str) -> Path:
    """A job folder holding empty ``entries``, everything written two days ago."""
    folder = jobs_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    for name in entries:
        (folder / name).touch()
        os.utime(folder / name, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    os.utime(folder, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    return folder


def test_a_submit_deletes_expired_job_folders_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fraud_model: dict
) -> None:
    monkeypatch.setenv("DLSERVE_BATCH_DIR", str(tmp_path))
    monkeypatch.delenv("DLSERVE_BATCH_RETENTION_S", raising=False)
    expired = _job_folder(FILES["scores"], FILES["rejects"])
    recent = _job_folder(FILES["scores"])
    os.utime(recent)
    running = _job_folder("input.csv")  # started two days ago, committed a chunk just now
    (running / "scores.parquet.parts").mkdir()
    os.utime(running, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    not_a_job = jobs_dir() / "keep-me"
    not_a_job.mkdir()
    os.utime(not_a_job, (TWO_DAYS_AGO, TWO_DAYS_AGO))
    upload = tmp_path / "rows.csv"
    simulate_transactions(50, seed=3).to_csv(upload, index=False)

    job_id = uuid.uuid4().hex
    model = load_for_batch(find_adapter("fraud"))
    served = SimpleNamespace(settings=registry.settings_from_env(), ready=lambda name: model)
    status, body = run_upload(upload, "fraud", job_id, served)

    assert status == 200, body
    assert (jobs_dir() / job_id / FILES["scores"]).is_file()
    assert not expired.exists()
    assert recent.is_dir() and running.is_dir() and not_a_job.is_dir()
