"""Batch jobs over HTTP: ``POST /v1/batch/jobs/submit`` (a BentoML task) with a file and a model.

``run_upload`` runs one uploaded file through the local engine into a folder per job under
``DLSERVE_BATCH_DIR`` (default: the system temp folder) and answers the job's summary, or a 400
naming the problem when the file cannot be read. ``/status`` and ``/get`` (BentoML's task
sub-routes) report progress and that answer; ``GET /v1/batch/jobs/{job_id}/scores`` and
``.../rejects`` download the Parquet files. Uploads obey the service's body size limit (413).

Retention: a job folder expires once its last write (the folder's or a direct entry's mtime)
is older than ``DLSERVE_BATCH_RETENTION_S`` (default one day). A running job is never old: each
chunk it commits writes its parts folder and output file. Every submit first deletes the expired
folders; the download route answers 404 for an expired job, deleted yet or not.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from bentoml._internal.configuration.containers import BentoMLContainer
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from core.model_store import ModelUnavailableError
from service import registry
from service.area import ReadyModel, ServedModels
from service.batch.adapter import UnknownModelError, find_adapter
from service.batch.job import JobConfig, JobLimits, QuotaError, run_local
from service.batch.readers import InputError
from service.config import Settings
from service.errors import error_response, field_error

ROUTE = "/v1/batch/jobs"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FILES = {"scores": "scores.parquet", "rejects": "scores.rejects.parquet"}
TASK_NAME = "batch_job"  # the service's task method: its entries in BentoML's task store
_RUNNING = threading.BoundedSemaphore(Settings.from_env().batch_max_jobs)


def jobs_dir() -> Path:
    return Settings.from_env().batch_dir / "dlserve-jobs"


def _expiry_cutoff() -> float:
    """The time before which a job's last write makes it expired (``DLSERVE_BATCH_RETENTION_S``)."""
    return time.time() - Settings.from_env().batch_retention_s


def _is_expired(folder: Path, cutoff: float) -> bool:
    """Whether the job folder and each of its direct entries were last written before
    ``cutoff`` (a running job writes its parts folder and output file at every chunk), or the
    folder is gone. A recent folder mtime (any finished job within retention) costs one stat."""
    try:
        if folder.stat().st_mtime >= cutoff:
            return False
        with os.scandir(folder) as entries:
            return all(_written_before(entry, cutoff) for entry in entries)
    except FileNotFoundError:
        return True


def _written_before(entry: os.DirEntry[str], cutoff: float) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_mtime < cutoff
    except FileNotFoundError:  # removed since the folder was listed: a write just now
        return False


def delete_expired_jobs() -> None:
    """Delete the job folders under ``jobs_dir()`` that expired (job-id names only), and the
    task store's entries (each holds its uploaded file) of the jobs completed before then."""
    cutoff = _expiry_cutoff()
    with os.scandir(jobs_dir()) as entries:
        for entry in entries:
            folder = Path(entry.path)
            if JOB_ID.match(entry.name) and entry.is_dir() and _is_expired(folder, cutoff):
                shutil.rmtree(folder, ignore_errors=True)
    delete_expired_tasks(cutoff)


def delete_expired_tasks(cutoff: float) -> None:
    """Delete this route's entries completed before ``cutoff`` from BentoML's task store
    (``BENTOML_RESULT_STORE``, default ``$BENTOML_HOME/task_result.db``)."""
    store = BentoMLContainer.result_store_file.get()
    if store == ":memory:" or not Path(store).exists():
        return
    before = datetime.datetime.fromtimestamp(cutoff, tz=datetime.UTC).isoformat(sep=" ")
    with contextlib.closing(sqlite3.connect(store, timeout=30)) as connection, connection:
        connection.execute(
            "DELETE FROM result WHERE name = ? AND completed_at IS NOT NULL AND completed_at < ?",
            (TASK_NAME, before),
        )


def sniff_suffix(upload: Path) -> str:
    """``.parquet``, ``.jsonl`` or ``.csv`` from the file's first bytes."""
    with upload.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(b"PAR1"):
        return ".parquet"
    return ".jsonl" if head.lstrip().startswith(b"{") else ".csv"


def run_upload(
    upload: Path, model: str, job_id: str, served: ServedModels
) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of scoring ``upload`` with ``model`` as job ``job_id`` on the
    service's own ready model, after deleting the expired jobs' folders and tasks. 429 when
    ``DLSERVE_BATCH_MAX_JOBS`` jobs run in this worker, 413 past a quota."""
    settings = served.settings
    if not _RUNNING.acquire(blocking=False):
        message = (
            f"{settings.batch_max_jobs} batch jobs are running in this worker, the most at once "
            "(DLSERVE_BATCH_MAX_JOBS); retry later"
        )
        return 429, {"error": message, "detail": []}
    try:
        return _run(upload, model, job_id, served)
    finally:
        _RUNNING.release()


def _run(upload: Path, model: str, job_id: str, served: ServedModels) -> tuple[int, dict[str, Any]]:
    try:
        ready = _ready_model(model, served)
    except (UnknownModelError, ModelUnavailableError) as exc:
        return 400, _problem("model", str(exc), "unknown_model")
    folder = jobs_dir() / job_id
    folder.mkdir(parents=True, exist_ok=True)
    delete_expired_jobs()
    source = folder / f"input{sniff_suffix(upload)}"
    shutil.copyfile(upload, source)
    config = JobConfig(model=model, input=source, output=folder / FILES["scores"], quiet=True)
    settings = served.settings
    limits = JobLimits(settings.batch_max_rows, settings.batch_max_output_bytes)
    try:
        summary = run_local(config, ready, limits)
    except QuotaError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return 413, _problem("file", str(exc), "job_too_large")
    except (InputError, ValueError, pa.ArrowException) as exc:
        message = f"not a readable {source.suffix[1:]} file of the model's columns"
        return 400, _problem("file", f"{message} ({type(exc).__name__})", "invalid_file")
    finally:
        source.unlink(missing_ok=True)
        ready.model.release_arena()  # the chunks kept it; online calls would give it back later
    return 200, {
        "job_id": job_id,
        "model": {"name": summary.model, "version": summary.version},
        "rows": summary.scored + summary.rejected,
        "scored": summary.scored,
        "rejected": summary.rejected,
        "files": {name: f"{ROUTE}/{job_id}/{name}" for name in FILES},
    }


def _ready_model(model: str, served: ServedModels) -> ReadyModel:
    """The service's ready model for a job's ``model`` (an area or a model name); the error
    says why there is none: unknown, its area left out by ``DLSERVE_MODELS``, or unavailable."""
    adapter = find_adapter(model)
    area = registry.area_of(adapter.model).name
    if area not in served.settings.models:
        raise UnknownModelError(f"model {adapter.model!r} is not enabled (DLSERVE_MODELS)")
    ready = served.ready(adapter.model)
    if ready is None:
        raise ModelUnavailableError(f"model {adapter.model!r} is not available")
    return ready


def _problem(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"error": message, "detail": [field_error(["body", field], message, kind)]}


async def download(request: Request) -> Response:
    """``GET /v1/batch/jobs/{job_id}/{scores|rejects}``: a finished, unexpired job's Parquet
    file."""
    job_id, name = request.path_params["job_id"], request.path_params["name"]
    folder = jobs_dir() / job_id
    path = folder / FILES.get(name, "")
    found = JOB_ID.match(job_id) and name in FILES and path.is_file()
    if not found or _is_expired(folder, _expiry_cutoff()):
        return error_response(404, f"no {name!r} file for job {job_id!r}")
    return StreamingResponse(_read(path), media_type="application/vnd.apache.parquet")


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")
