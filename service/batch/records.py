"""Where an HTTP batch job's state lives: ``job.json`` in its folder, beside its input and outputs.

One writer per job: the worker process that runs it writes the record (atomically: a temporary
file renamed over it), every worker reads it. A cancel request from any worker is a separate
marker file (``cancel``) that the running job looks for between chunks. No database: nothing is
shared between jobs, so concurrent submissions on any number of workers never wait for a lock.
A record left pending or in progress by a worker that is gone reads as failed.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

RECORD = "job.json"
CANCEL = "cancel"


class JobStatus(StrEnum):
    """A job's state, as ``/status`` reports it (BentoML's task states)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class JobRecord:
    """A job's state and, once it ended, its answer (``/get``: ``answer_status`` and ``answer``).

    ``input``: the uploaded file's name in the job folder; ``worker``: the process that runs it
    (``worker_id``)."""

    task_id: str
    model: str
    input: str
    status: JobStatus
    created_at: str
    worker: str
    executed_at: str | None = None
    completed_at: str | None = None
    answer_status: int | None = None
    answer: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status not in (JobStatus.PENDING, JobStatus.IN_PROGRESS)

    def started(self) -> JobRecord:
        """This record once its job starts running."""
        return replace(self, status=JobStatus.IN_PROGRESS, executed_at=now())

    def status_body(self) -> dict[str, Any]:
        """``/status``'s answer (BentoML's ``TaskStatusResponse``)."""
        fields = ("task_id", "status", "created_at", "executed_at")
        return {name: getattr(self, name) for name in fields}

    def ended(self, status: JobStatus, code: int, answer: dict[str, Any]) -> JobRecord:
        """This record with its end: ``status`` and the answer ``/get`` gives."""
        return replace(self, status=status, completed_at=now(), answer_status=code, answer=answer)


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).isoformat()


def new_record(task_id: str, model: str, input_name: str) -> JobRecord:
    """A job submitted now to this worker, waiting for its turn."""
    return JobRecord(task_id, model, input_name, JobStatus.PENDING, now(), worker_id(os.getpid()))


def write(folder: Path, record: JobRecord) -> None:
    """Replace ``folder``'s record with ``record`` in one step (readers see the old or the new)."""
    temporary = folder / f".{RECORD}.{os.getpid()}.{threading.get_ident()}"
    temporary.write_text(json.dumps(asdict(record)))
    os.replace(temporary, folder / RECORD)


def read(folder: Path) -> JobRecord | None:
    """``folder``'s record (``None``: no such job, or it expired); a job in progress whose worker
    is gone reads as failed."""
    try:
        fields = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        return None
    record = JobRecord(**{**fields, "status": JobStatus(fields["status"])})
    pid = record.worker.partition(":")[0]
    if record.finished or (pid.isdigit() and worker_id(int(pid)) == record.worker):
        return record
    message = "the worker running this job stopped before it ended; retry it (POST /retry)"
    return record.ended(JobStatus.FAILED, 500, {"error": message, "detail": []})


def worker_id(pid: int) -> str:
    """Process ``pid`` as ``pid:start time`` (a restarted container reuses pids), or ``""``
    when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"  # field 22, after the command's name


def request_cancel(folder: Path) -> None:
    """Ask the job in ``folder`` to stop (seen by whichever worker runs it)."""
    (folder / CANCEL).touch()


def cancel_requested(folder: Path) -> bool:
    return (folder / CANCEL).exists()
