"""Batch jobs over HTTP: one uploaded file scored by the worker's own ready model into a folder
per job under ``DLSERVE_BATCH_DIR`` (default: the system temp folder).

``run_job`` scores a job's input (kept in its folder) within the job quotas and gives the job's
answer: its summary, a 400 naming the problem when the file cannot be read, 413 past a quota,
409 when it was canceled. ``run_upload`` runs one upload at once (BentoML's synchronous
``POST /v1/batch/jobs``); ``service/batch/tasks.py`` runs them in the background
(``/submit``, ``/status``, ``/get``, ``/retry``, ``/cancel``). Both take turns on the worker's
``RUNNER`` (``DLSERVE_BATCH_MAX_JOBS`` threads). ``GET /v1/batch/jobs/{job_id}/scores`` and
``.../rejects`` download the Parquet files. Uploads obey the service's body size limit (413).

Retention: a job folder (its input, record and outputs) expires once its last write (the
folder's or a direct entry's mtime) is older than ``DLSERVE_BATCH_RETENTION_S`` (default one
day). A running job is never old: each chunk it commits writes its parts folder and output file.
Every submit first deletes the expired folders; the download route answers 404 for an expired
job, deleted yet or not.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from core.model_store import ModelUnavailableError
from service import registry
from service.area import ReadyModel, ServedModels
from service.batch.adapter import UnknownModelError, find_adapter
from service.batch.job import JobCanceled, JobConfig, JobLimits, QuotaError, run_local
from service.batch.readers import InputError
from service.batch.records import CANCEL, RECORD
from service.config import Settings
from service.errors import error_response, field_error

ROUTE = "/v1/batch/jobs"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FILES = {"scores": "scores.parquet", "rejects": "scores.rejects.parquet"}
_SETTINGS = Settings.from_env()
# Jobs accepted by this worker and not ended: DLSERVE_BATCH_MAX_JOBS run, the next ones wait.
_PLACES = threading.BoundedSemaphore(_SETTINGS.batch_max_jobs + _SETTINGS.batch_max_queued)
RUNNER = ThreadPoolExecutor(_SETTINGS.batch_max_jobs, thread_name_prefix="batch-job")


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
    """Delete the job folders under ``jobs_dir()`` that expired (job-id names only)."""
    cutoff = _expiry_cutoff()
    with os.scandir(jobs_dir()) as entries:
        for entry in entries:
            folder = Path(entry.path)
            if JOB_ID.match(entry.name) and entry.is_dir() and _is_expired(folder, cutoff):
                shutil.rmtree(folder, ignore_errors=True)


def sniff_suffix(upload: Path) -> str:
    """``.parquet``, ``.jsonl`` or ``.csv`` from the file's first bytes."""
    with upload.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(b"PAR1"):
        return ".parquet"
    return ".jsonl" if head.lstrip().startswith(b"{") else ".csv"


def take_job_place(settings: Settings) -> str | None:
    """Take one of this worker's places for a job (``DLSERVE_BATCH_MAX_JOBS`` running and
    ``DLSERVE_BATCH_MAX_QUEUED`` waiting; ``release_job_place`` gives it back): ``None``, or when
    every one is taken why the job is refused (a 429)."""
    if _PLACES.acquire(blocking=False):
        return None
    return (
        f"{settings.batch_max_jobs + settings.batch_max_queued} batch jobs are running or "
        "waiting in this worker, the most it takes (DLSERVE_BATCH_MAX_JOBS running, "
        "DLSERVE_BATCH_MAX_QUEUED waiting); retry later"
    )


def release_job_place() -> None:
    _PLACES.release()


def keep_upload(upload: Path, folder: Path) -> Path:
    """``upload`` copied into the new job ``folder`` as ``input.<format>``; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"input{sniff_suffix(upload)}"
    shutil.copyfile(upload, source)
    return source


def run_upload(
    upload: Path, model: str, job_id: str, served: ServedModels
) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of scoring ``upload`` with ``model`` as job ``job_id`` (``run_job``,
    in its turn among the worker's jobs); 429 when the worker takes no more jobs."""
    refusal = take_job_place(served.settings)
    if refusal is not None:
        return 429, {"error": refusal, "detail": []}
    try:
        source = keep_upload(upload, jobs_dir() / job_id)
        return RUNNER.submit(run_job, source, model, served).result()
    finally:
        release_job_place()


def run_job(
    source: Path, model: str, served: ServedModels, stop: Callable[[], bool] | None = None
) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of scoring the job input ``source`` (in its job folder, named by the
    job's id) with ``model`` on the service's own ready model, after deleting the expired jobs'
    folders: 400 for an unknown model or unreadable file, 413 past a quota, 409 once ``stop``
    said so (between two chunks). A job that did not finish keeps only its input and record."""
    folder = source.parent
    try:
        ready = _ready_model(model, served)
    except (UnknownModelError, ModelUnavailableError) as exc:
        return 400, _problem("model", str(exc), "unknown_model")
    delete_expired_jobs()
    config = JobConfig(model=model, input=source, output=folder / FILES["scores"], quiet=True)
    settings = served.settings
    limits = JobLimits(
        settings.batch_max_rows, settings.batch_max_output_bytes, settings.batch_max_tokens
    )
    try:
        summary = run_local(config, ready, limits, stop)
    except QuotaError as exc:
        _drop_outputs(source)
        return exc.status, exc.body()
    except JobCanceled as exc:
        _drop_outputs(source)
        return 409, {"error": f"{exc} (PUT /cancel)", "detail": []}
    except (InputError, ValueError, pa.ArrowException) as exc:
        _drop_outputs(source)
        message = f"not a readable {source.suffix[1:]} file of the model's columns"
        return 400, _problem("file", f"{message} ({type(exc).__name__})", "invalid_file")
    finally:
        ready.model.release_arena()  # the chunks kept it; online calls would give it back later
    job_id = folder.name
    return 200, {
        "job_id": job_id,
        "model": {"name": summary.model, "version": summary.version},
        "rows": summary.scored + summary.rejected,
        "scored": summary.scored,
        "rejected": summary.rejected,
        "files": {name: f"{ROUTE}/{job_id}/{name}" for name in FILES},
    }


def _drop_outputs(source: Path) -> None:
    """Delete what an unfinished job wrote beside its input and record."""
    for path in source.parent.iterdir():
        if path.name in (source.name, RECORD, CANCEL):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


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
