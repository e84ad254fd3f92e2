"""Multipart files read in memory: ``UploadGuard`` keeps an in-memory form's files as it parses
the body, ``UploadedFile`` parameters are files to BentoML, and their input model reads the
guard's files instead of BentoML's temporary files."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from service.multipart_guard import FILES_STATE, UploadForm, UploadGuard
from service.uploads import UploadedFile, as_file, in_memory_fields, in_memory_input
from tests.multipart_bodies import MULTIPART, form_body, form_part

# A file whose bytes look like the parser's own delimiters, sent in 7-byte chunks.
FILE = b"\x89PNG\r\n--dlserve-test\r\n\r\n" + bytes(range(256))
BODY = form_body(form_part("image", FILE))


def _guarded(form: UploadForm) -> tuple[Scope, bytes]:
    """The scope and the body the app behind ``UploadGuard`` gets for ``BODY``."""
    chunks = [BODY[i : i + 7] for i in range(0, len(BODY), 7)]
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["scope"], seen["body"] = scope, (await receive())["body"]

    async def receive() -> Message:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        raise AssertionError(f"the guard answered: {message}")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": [(b"content-type", MULTIPART.encode())],
    }
    asyncio.run(UploadGuard(app, {"/upload": form})(scope, receive, send))
    return seen["scope"], seen["body"]


def test_the_guard_hands_an_in_memory_form_its_files_as_sent() -> None:
    scope, body = _guarded(UploadForm(("image",), in_memory=True))
    assert scope["state"][FILES_STATE] == {"image": FILE}
    assert body == BODY  # the app still gets the whole body


def test_the_guard_keeps_no_files_for_a_form_read_from_disk() -> None:
    scope, body = _guarded(UploadForm(("image",)))
    assert FILES_STATE not in scope.get("state", {}) and body == BODY


async def _handler(models: Any, image: UploadedFile, path: Path, ctx: Any) -> None:
    """A route handler with an in-memory file and a file BentoML writes to disk."""


def test_uploaded_file_parameters_are_found_and_documented_as_files() -> None:
    assert in_memory_fields(_handler) == {"image"}
    parameter = inspect.signature(_handler).parameters["image"]
    assert as_file(parameter).annotation is Path and as_file(parameter).name == "image"


class _Input(BaseModel):
    image: Path


def test_the_in_memory_input_model_reads_the_guards_files() -> None:
    spec = in_memory_input(_Input, frozenset({"image"}))
    assert spec.__name__ == "_Input" and spec.__module__ == _Input.__module__
    request = Request({"type": "http", "state": {FILES_STATE: {"image": FILE}}})
    parsed = asyncio.run(spec.from_http_request(request, None))
    assert parsed.image == FILE


def test_an_in_memory_input_model_takes_files_only() -> None:
    class Mixed(BaseModel):
        image: Path
        label: str

    with pytest.raises(ValueError, match="files only"):
        in_memory_input(Mixed, frozenset({"image"}))
