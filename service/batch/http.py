"""Batch jobs over HTTP: ``POST /v1/batch/jobs/submit`` (a BentoML task) with a file and a model.

``run_upload`` runs one uploaded file through the local engine into a folder per job under
``DLSERVE_BATCH_DIR`` (default: the system temp folder) and answers the job's summary, or a 400
naming the problem when the file cannot be read. ``/status`` and ``/get`` (BentoML's task
sub-routes) report progress and that answer; ``GET /v1/batch/jobs/{job_id}/scores`` and
``.../rejects`` download the Parquet files. Uploads obey the service's body size limit (413).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.batch.adapter import UnknownModelError
from service.batch.job import JobConfig, run_local
from service.batch.readers import InputError
from service.errors import error_response, field_error
from service.model_store import ModelUnavailableError

ROUTE = "/v1/batch/jobs"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FILES = {"scores": "scores.parquet", "rejects": "scores.rejects.parquet"}


def jobs_dir() -> Path:
    return Path(os.environ.get("DLSERVE_BATCH_DIR") or tempfile.gettempdir()) / "dlserve-jobs"


def sniff_suffix(upload: Path) -> str:
    """``.parquet``, ``.jsonl`` or ``.csv`` from the file's first bytes."""
    with upload.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(b"PAR1"):
        return ".parquet"
    return ".jsonl" if head.lstrip().startswith(b"{") else ".csv"


def run_upload(upload: Path, model: str, job_id: str) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of scoring ``upload`` with ``model`` as job ``job_id``."""
    folder = jobs_dir() / job_id
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"input{sniff_suffix(upload)}"
    shutil.copyfile(upload, source)
    config = JobConfig(model=model, input=source, output=folder / FILES["scores"], quiet=True)
    try:
        summary = run_local(config)
    except (UnknownModelError, ModelUnavailableError) as exc:
        return 400, _problem("model", str(exc), "unknown_model")
    except (InputError, ValueError, pa.ArrowException) as exc:
        message = f"not a readable {source.suffix[1:]} file of the model's columns"
        return 400, _problem("file", f"{message} ({type(exc).__name__})", "invalid_file")
    finally:
        source.unlink(missing_ok=True)
    return 200, {
        "job_id": job_id,
        "model": {"name": summary.model, "version": summary.version},
        "rows": summary.scored + summary.rejected,
        "scored": summary.scored,
        "rejected": summary.rejected,
        "files": {name: f"{ROUTE}/{job_id}/{name}" for name in FILES},
    }


def _problem(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"error": message, "detail": [field_error(["body", field], message, kind)]}


async def download(request: Request) -> Response:
    """``GET /v1/batch/jobs/{job_id}/{scores|rejects}``: a finished job's Parquet file."""
    job_id, name = request.path_params["job_id"], request.path_params["name"]
    path = jobs_dir() / job_id / FILES.get(name, "")
    if not JOB_ID.match(job_id) or name not in FILES or not path.is_file():
        return error_response(404, f"no {name!r} file for job {job_id!r}")
    return StreamingResponse(_read(path), media_type="application/vnd.apache.parquet")


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")
