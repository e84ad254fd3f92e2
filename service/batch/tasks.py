"""Batch jobs as tasks: ``POST /v1/batch/jobs/submit``, ``GET .../status`` and ``.../get``,
``POST .../retry`` and ``PUT .../cancel``, each job's state in its own folder (``records``).

BentoML 1.4 keeps its tasks in one SQLite file (``$BENTOML_HOME/task_result.db``) that every
worker writes through a single shared connection, with implicit transactions that a failed write
leaves open, and it stores each submitted request whole (the upload) in it. Under concurrent
submissions on two workers it answered "database is locked" (500) and left jobs in progress for
good; its ``/cancel`` marked a task canceled while answering that cancelling is not supported.
It has no way to plug in another store, so ``BatchTaskRoutes`` answers those five routes ahead
of BentoML. BentoML still declares the task (``DLServe.batch_job``): the upload's form (checked
by ``UploadGuard`` before this runs), its OpenAPI entries, its ``/v1/models`` description and
the synchronous ``POST /v1/batch/jobs``.

A submitted job waits (``pending``) for one of the ``DLSERVE_BATCH_MAX_JOBS`` job threads of the
worker that took it, then runs (``in_progress``); beyond ``DLSERVE_BATCH_MAX_QUEUED`` waiting jobs
``/submit`` answers 429 at once. Its upload stays in its folder (for ``/retry``) until the folder
expires. ``/cancel`` leaves a marker that the job reads before each chunk, whichever worker runs
it: 202 while the job is pending or in progress (it then ends ``canceled``, or ``completed`` if
its last chunk was already running), 409 once it ended. A worker that stops (SIGTERM, a crash)
takes its running and waiting jobs with it; their records then read ``failed`` (retry them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.area import ServedModels
from service.batch import records
from service.batch.http import (
    JOB_ID,
    ROUTE,
    RUNNER,
    jobs_dir,
    release_job_place,
    run_job,
    sniff_suffix,
    take_job_place,
)
from service.batch.records import JobRecord, JobStatus
from service.errors import error_response, field_error

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


class BatchTaskRoutes:
    """ASGI middleware: answers the batch job task routes (see the module docstring); every other
    request goes on to ``app``. ``served()``: the service (its settings and ready models);
    ``default_model``: a submission's model when its form names none."""

    def __init__(
        self, app: ASGIApp, served: Callable[[], ServedModels], default_model: str
    ) -> None:
        self.app = app
        self.served = served
        self.default_model = default_model
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", f"{ROUTE}/submit"): self.submit,
            ("GET", f"{ROUTE}/status"): self.status,
            ("GET", f"{ROUTE}/get"): self.get,
            ("POST", f"{ROUTE}/retry"): self.retry,
            ("PUT", f"{ROUTE}/cancel"): self.cancel,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    async def submit(self, request: Request) -> Response:
        """Keep the upload in a new job folder and start scoring it: ``{"task_id", "status"}``."""
        async with request.form(max_files=1, max_fields=1) as form:
            upload, model = form.get("file"), form.get("model")
            assert isinstance(upload, UploadFile)  # UploadGuard let only such a form through
            chosen = _plain(model) if isinstance(model, str) else self.default_model
            return await asyncio.to_thread(self._start_upload, upload.file, chosen)

    def _start_upload(self, upload: IO[bytes], model: str) -> Response:
        def keep(folder: Path) -> Path:
            kept = folder / "input"
            with kept.open("wb") as copy:
                shutil.copyfileobj(upload, copy)
            return kept.rename(kept.with_suffix(sniff_suffix(kept)))

        return self._start(keep, model)

    def _start(self, fill: Callable[[Path], Path], model: str) -> Response:
        """Take one of the worker's job places (else 429), give a new job folder its input
        (``fill(folder)``: the input's path), record the job and queue it on the worker's job
        threads: ``{"task_id", "status"}``."""
        refusal = take_job_place(self.served().settings)
        if refusal is not None:
            return error_response(429, refusal, headers={"Retry-After": "1"})
        try:
            folder = jobs_dir() / uuid.uuid4().hex
            folder.mkdir(parents=True)
            source = fill(folder)
            record = records.new_record(folder.name, model, source.name)
            records.write(folder, record)
            RUNNER.submit(self._run, source, record)
        except BaseException:
            release_job_place()
            raise
        return JSONResponse({"task_id": record.task_id, "status": record.status.value})

    def _run(self, source: Path, record: JobRecord) -> None:
        folder = source.parent
        try:
            record = record.started()
            records.write(folder, record)
            code, answer = run_job(
                source, record.model, self.served(), lambda: records.cancel_requested(folder)
            )
            status = {200: JobStatus.COMPLETED, 409: JobStatus.CANCELED}.get(code, JobStatus.FAILED)
        except Exception:
            log.exception("batch job %s failed", record.task_id)
            code, status = 500, JobStatus.FAILED
            answer = {"error": "the job failed unexpectedly; see the server log", "detail": []}
        finally:
            release_job_place()
        records.write(folder, record.ended(status, code, answer))

    async def status(self, request: Request) -> Response:
        """The job's state: ``{"task_id", "status", "created_at", "executed_at"}``."""
        found = _find(request)
        return found if isinstance(found, Response) else JSONResponse(found.status_body())

    async def get(self, request: Request) -> Response:
        """A job's answer once it ended (its summary, or the error that ended it); 400 before."""
        found = _find(request, ended=True)
        if isinstance(found, Response):
            return found
        return JSONResponse(found.answer, found.answer_status or 500)

    async def retry(self, request: Request) -> Response:
        """Run an ended job's input again as a new job: ``{"task_id", "status"}``."""
        found = _find(request, ended=True)
        if isinstance(found, Response):
            return found
        name, ended_input = found.input, jobs_dir() / found.task_id / found.input

        def link(folder: Path) -> Path:
            _link_or_copy(ended_input, folder / name)
            return folder / name

        return await asyncio.to_thread(self._start, link, found.model)

    async def cancel(self, request: Request) -> Response:
        """Ask a job in progress to stop (202 with its state); 409 when it already ended."""
        found = _find(request)
        if isinstance(found, Response):
            return found
        if found.finished:
            message = (
                f"task {found.task_id} already ended ({found.status.value}); only a job in "
                "progress can be canceled"
            )
            return error_response(409, message)
        records.request_cancel(jobs_dir() / found.task_id)
        return JSONResponse(found.status_body(), 202)


def _find(request: Request, ended: bool = False) -> JobRecord | Response:
    """The record of the request's ``task_id``, or the 400 (none given; with ``ended``, the job
    has not ended yet) or 404 answer."""
    task_id = request.query_params.get("task_id")
    if task_id is None:
        detail = [field_error(["query", "task_id"], "a task id is required", "missing")]
        return error_response(400, "task_id is required", detail)
    record = records.read(jobs_dir() / task_id) if JOB_ID.match(task_id) else None
    if record is None:
        return error_response(404, f"no task {task_id!r} (unknown, or expired)")
    if ended and not record.finished:
        return error_response(400, f"task {task_id} is not completed yet")
    return record


def _plain(value: str) -> str:
    """A form value as sent, or the string it encodes as JSON (BentoML's clients send that)."""
    try:
        decoded: Any = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def document_cancel(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (the service's OpenAPI) with ``PUT /cancel``'s answers as dlserve sends them:
    202 with the job's state (BentoML documents a task submission's 200 and names the operation
    ``batch_job_retry``); errors (404, 409) stay under ``default``."""
    operation = document["paths"][f"{ROUTE}/cancel"]["put"]
    responses = operation["responses"]
    responses.pop("200", None)
    state = {"schema": {"$ref": "#/components/schemas/TaskStatusResponse"}}
    responses["202"] = {
        "description": "Cancel requested: the job stops before its next chunk",
        "content": {"application/json": state},
    }
    operation["x-bentoml-name"] = "batch_job_cancel"
    operation["operationId"] = "dlserve__batch_job_cancel"
    return document
