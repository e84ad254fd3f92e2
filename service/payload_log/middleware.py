"""Where a request enters the payload log: an ASGI middleware, outermost on the service.

For a ``POST`` to an area's route or a V2 infer route, ``PayloadLog`` gives the request an id
(the client's ``X-Request-Id`` when it is 1 to 128 of ``A-Z a-z 0-9 . _ : -``, else a new one)
and answers it in ``X-Request-Id``. Whether the request is recorded is decided from the id
alone (``sampled``): a hash of it below the model's share. A recorded request's body and
answer are captured as they pass (bytes only; nothing is parsed on the event loop), the
versions that answered are read from the request's ``service.routing`` record, and the record is
handed to the writer's bounded queue when the answer is sent (``PayloadWriter.offer``, which
never blocks). A body or answer over the record bound is not kept (dropped, ``too_large``).
Being outermost, it sees every answer as the client gets it: 401, 413 and 503 too.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.payload_log.records import Captured
from service.payload_log.writer import DROPPED, PayloadWriter
from service.routing import RequestRouting, current_routing

REQUEST_ID_HEADER = b"x-request-id"
VALID_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def note_versions(record: Captured, routing: RequestRouting | None) -> None:
    """The model and version that answered ``record``'s request (the last one the data plane
    noted, for a route answering with several models) and that model's shadow, if one ran."""
    if routing is None or not routing.answered:
        return
    model, version = list(routing.answered.items())[-1]
    record.answered_model, record.version = model, version
    record.shadow_version = routing.shadows.get(model)


def request_id(scope: Scope) -> str:
    """The client's ``X-Request-Id`` when valid, else a new random id."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and VALID_ID.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


def sampled(identifier: str, share: float) -> bool:
    """Whether the request ``identifier`` is recorded at ``share``: the first 8 bytes of its
    sha256 as a fraction of 2^64 are below ``share`` (a retry with the same id gets the same
    choice)."""
    if share <= 0:
        return False
    digest = hashlib.sha256(identifier.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _header(message: Message, name: bytes) -> str:
    for key, value in message.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class PayloadLog:
    """The middleware (see the module docstring). ``routes``: an area route's path -> its model;
    ``model_of_path``: the model of a V2 infer path, or ``None``; ``share(model)``: the share
    recorded; ``max_bytes``: the most a body or an answer may hold to be recorded."""

    def __init__(
        self,
        app: ASGIApp,
        writer: PayloadWriter | None,
        routes: dict[str, str],
        model_of_path: Callable[[str], str | None],
        share: Callable[[str], float],
        max_bytes: int,
    ) -> None:
        self.app = app
        self.writer = writer
        self.routes = routes
        self.model_of_path = model_of_path
        self.share = share
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.writer is None or scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        model = self.routes.get(path) or self.model_of_path(path)
        if model is None:
            await self.app(scope, receive, send)
            return
        identifier = request_id(scope)
        if not sampled(identifier, self.share(model)):
            await self.app(scope, receive, self._with_id(send, identifier))
            return
        await self._record(scope, receive, send, identifier, path, model)

    def _with_id(self, send: Send, identifier: str) -> Send:
        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, identifier.encode())]
                message = {**message, "headers": headers}
            await send(message)

        return send_with_id

    async def _record(
        self, scope: Scope, receive: Receive, send: Send, identifier: str, path: str, model: str
    ) -> None:
        started, clock = time.time(), time.perf_counter()
        request_type = ""
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                request_type = value.decode("latin-1")
        record = Captured(identifier, started, path, model, request_type, b"")
        request: list[bytes] = []
        response: list[bytes] = []
        held = [0, 0]  # bytes of the request and the answer so far
        send_with_id = self._with_id(send, identifier)

        def keep(parts: list[bytes], which: int, chunk: bytes) -> None:
            held[which] += len(chunk)
            if held[which] <= self.max_bytes:
                parts.append(chunk)

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                keep(request, 0, message.get("body", b""))
            return message

        async def send_and_keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                record.response_type = _header(message, b"content-type")
            elif message["type"] == "http.response.body":
                keep(response, 1, message.get("body", b""))
                if not message.get("more_body", False):
                    record.latency_ms = (time.perf_counter() - clock) * 1000
            await send_with_id(message)

        try:
            await self.app(scope, receive_and_keep, send_and_keep)
        finally:
            if not record.status:
                record.status = 500  # the app raised before answering
            if not record.latency_ms:
                record.latency_ms = (time.perf_counter() - clock) * 1000
            note_versions(record, current_routing())
            if max(held) > self.max_bytes:
                DROPPED.labels(model=model, reason="too_large").inc()
            else:
                record.request, record.response = b"".join(request), b"".join(response)
                self.writer.offer(record)
