"""A batch job's record: written whole or not at all, read by any worker, and a job whose worker
is gone reads as failed rather than in progress for good."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from service.batch import records
from service.batch.records import JobStatus


def test_a_record_reads_back_as_written_and_as_it_ends(tmp_path: Path) -> None:
    record = records.new_record("a" * 32, "fraud", "input.csv")
    records.write(tmp_path, record)
    assert records.read(tmp_path) == record and record.status == JobStatus.PENDING
    ended = record.started().ended(JobStatus.COMPLETED, 200, {"rows": 3})
    records.write(tmp_path, ended)
    assert records.read(tmp_path) == ended and ended.finished
    assert [path.name for path in tmp_path.iterdir()] == [records.RECORD]  # no temporary left


def test_a_job_whose_worker_is_gone_reads_as_failed(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    started = records.new_record("b" * 32, "fraud", "input.csv").started()
    record = replace(started, worker=f"{int(gone.stdout)}:1")
    records.write(tmp_path, record)
    read = records.read(tmp_path)
    assert read is not None and read.status == JobStatus.FAILED
    assert read.answer_status == 500 and "worker running this job stopped" in read.answer["error"]


def test_a_reused_pid_is_not_the_worker_that_ran_the_job(tmp_path: Path) -> None:
    record = records.new_record("c" * 32, "fraud", "input.csv")
    assert record.worker == records.worker_id(os.getpid()) != ""
    records.write(tmp_path, replace(record, worker=f"{os.getpid()}:1"))  # an older process
    read = records.read(tmp_path)
    assert read is not None and read.status == JobStatus.FAILED


def test_an_unknown_job_has_no_record(tmp_path: Path) -> None:
    assert records.read(tmp_path / "nothing") is None
