"""Client-facing errors: one JSON shape for every 4xx/5xx answered on dlserve's routes.

The shape matches BentoML's validation errors: ``{"error": summary, "detail": [{"loc": [...],
"msg": ..., "type": ...}]}``. The data plane raises typed errors (``InferenceError`` and its
subclasses), which each front door renders once, in its protocol's shape (``answer(shape)``);
``ProtocolErrors`` gives that shape to the errors BentoML and Starlette answer themselves (plain
text, pydantic's entries), which never were typed. Messages never carry stack traces, server
paths or library versions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def error_response(
    status: int,
    error: str,
    detail: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response with the common shape."""
    return JSONResponse({"error": error, "detail": detail or []}, status, headers=headers)


def field_error(loc: list[str | int], msg: str, error_type: str) -> dict[str, Any]:
    """One entry of ``detail``: where the problem is, what rule it broke, and its type."""
    return {"loc": loc, "msg": msg, "type": error_type}


ErrorShape = Callable[[int, dict[str, Any]], dict[str, Any]]


def same_shape(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """dlserve's own routes: the error body as it is (``{"error", "detail"}``)."""
    return body


def message_only(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """Protocols whose errors are ``{"error": message}`` alone (the Open Inference Protocol)."""
    return {"error": body["error"]}


# An error answer already in its protocol's final shape (the protocol's readiness answers:
# ``{"ready": false}``) carries this header; ``ProtocolErrors`` strips it and sends the body as
# it is.
FINAL_ERROR_HEADER = "x-dlserve-final-error"
FINAL_ERROR_MARK = FINAL_ERROR_HEADER.encode()


def final_error(response: Response) -> Response:
    """``response`` (an error answer already in its protocol's shape), left unchanged by
    ``ProtocolErrors``."""
    response.headers[FINAL_ERROR_HEADER] = "1"
    return response


class ErrorAnswer(Exception):
    """Stops a route with a ready-made error response (raised anywhere below a route)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class InferenceError(Exception):
    """A request the data plane refuses (``service.inference``), whatever protocol asked.

    ``status`` is its HTTP status, ``loc`` (when it is one input's fault) names the input, the
    message states the rule, ``kind`` is the error type and ``retry_after_s`` the hint of a
    refusal worth retrying. Each protocol renders it at its edge: ``answer()`` in dlserve's
    shape, ``summary`` for the protocols that carry one message.
    """

    status = 500
    kind = "error"
    retry_after_s: int | None = None

    def __init__(
        self, message: str, loc: list[str | int] | None = None, summary: str | None = None
    ) -> None:
        super().__init__(message)
        self.loc = loc
        self._summary = summary

    @property
    def summary(self) -> str:
        """The one-line error: the one given, else the message prefixed with the input it names
        (``image: ...``)."""
        if self._summary is not None:
            return self._summary
        if not self.loc:
            return str(self)
        return f"{'.'.join(str(part) for part in self.loc)}: {self}"

    @property
    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}

    def body(self) -> dict[str, Any]:
        """The body in dlserve's shape: ``{"error": summary, "detail": [...]}``, where
        ``detail`` names the input and the rule, if any."""
        detail = [field_error(self.loc, str(self), self.kind)] if self.loc else []
        return {"error": self.summary, "detail": detail}

    def answer(self, shape: ErrorShape | None = None) -> JSONResponse:
        """The answer in dlserve's shape, or in the protocol's ``shape`` (OpenAI's, ...): then
        marked ``final_error`` so that ``ProtocolErrors`` sends it as it is."""
        if shape is None:
            return JSONResponse(self.body(), self.status, headers=self.headers)
        response = JSONResponse(shape(self.status, self.body()), self.status, headers=self.headers)
        return final_error(response)


class RequestInputError(InferenceError, ValueError):
    """An input the route's schema accepted but its content does not (answered 400).

    ``loc`` names the input (``["image"]``, ``["images", 3]``, ``["query", "k"]``), the message
    states the rule, ``kind`` is the error type.
    """

    status = 400

    def __init__(self, loc: list[str | int], message: str, kind: str) -> None:
        super().__init__(message, loc)
        self.kind = kind


class ModelNotFoundError(InferenceError):
    """No such model here, or it is not enabled (404)."""

    status = 404
    kind = "not_found"


class ModelNotReadyError(InferenceError, RuntimeError):
    """The model is enabled but no version of it is loaded (503 with the reason; retry)."""

    status = 503
    kind = "unavailable"
    retry_after_s = 1


class OverloadedError(InferenceError, RuntimeError):
    """Too many rows are already waiting; the caller should retry later (503)."""

    status = 503
    kind = "overloaded"
    retry_after_s = 1


class QueueFullError(OverloadedError):
    """A stepwise model's waiting queue is full (429, as OpenAI's and vLLM's clients expect)."""

    status = 429


class TooLargeError(InferenceError):
    """A request or a batch job past a size limit (413): ``loc`` names what is too large
    (``["body"]``, ``["body", "file"]``), the message states the limit and ``kind`` the rule
    (``body_too_large``, ``job_too_large``)."""

    status = 413

    def __init__(
        self, loc: list[str | int], message: str, kind: str, summary: str | None = None
    ) -> None:
        super().__init__(message, loc, summary)
        self.kind = kind


class BodyLimitMiddleware:
    """Answer 413 to any request body larger than ``max_bytes``.

    A declared Content-Length over the limit is refused before reading; a body without one
    (chunked) is counted as it streams and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        body, too_large = await self._read_limited(receive)
        if too_large:
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, replay_body(body, receive), send)

    async def _read_limited(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_bytes
        refusal = TooLargeError(
            ["body"],
            f"body must be at most {limit} bytes",
            "body_too_large",
            summary=f"request body larger than {limit} bytes",
        )
        await refusal.answer()(scope, receive, send)


def replay_body(body: bytes, downstream: Receive) -> Receive:
    """A ``receive`` that hands the app an already-read body in one message, then passes on
    the client's later messages (a streaming response waits on them for the disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await downstream()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class ProtocolErrors:
    """ASGI middleware: every error answer (status >= 400) on every path gets dlserve's shape
    ``{"error": str, "detail": [{"loc", "msg", "type"}]}`` (``to_error_body``), then, on the
    routes of ``routes`` (path -> ``ErrorShape``), or under a path of ``prefixes`` (path prefix
    -> ``ErrorShape``, for a protocol's whole tree such as ``/v2``), that protocol's shape.

    This covers what BentoML and Starlette answer themselves: plain-text 404 and 405, errors
    sent as a one-element JSON list, and pydantic's validation entries (whose documentation
    links carry the library's version). Headers such as ``Retry-After`` are kept. Successful
    answers, streams included, answers to HEAD and ``final_error`` answers pass through
    untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: dict[str, ErrorShape],
        prefixes: dict[str, ErrorShape] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.prefixes = prefixes or {}

    def shape_of(self, path: str) -> ErrorShape:
        """The error shape of ``path``: its route's, else its protocol tree's, else dlserve's."""
        shape = self.routes.get(path)
        if shape is not None:
            return shape
        for prefix, tree_shape in self.prefixes.items():
            if path == prefix or path.startswith(prefix + "/"):
                return tree_shape
        return same_shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        shape = self.shape_of(scope["path"])
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshape(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                headers = message.get("headers", [])
                kept = [(n, v) for n, v in headers if n.lower() != FINAL_ERROR_MARK]
                if len(kept) < len(headers):  # already in its final shape
                    await send({**message, "headers": kept})
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await _send_reshaped(send, start, b"".join(chunks), shape)

        await self.app(scope, receive, reshape)


def to_error_body(status: int, body: bytes) -> dict[str, Any]:
    """Any error body -> ``{"error": str, "detail": [{"loc", "msg", "type"}]}``: a JSON object
    (or BentoML's one-element list of one) keeps its ``error`` and its entries' ``loc``, ``msg``
    and ``type`` only; anything else becomes the ``error`` text (the status phrase if empty)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), str):
        text = body.decode(errors="replace").strip()
        if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
            text = parsed["detail"]
        return {"error": text or HTTPStatus(status).phrase, "detail": []}
    entries = parsed.get("detail")
    detail = [
        field_error(
            [part for part in entry.get("loc", []) if isinstance(part, str | int)],
            str(entry.get("msg", "")),
            str(entry.get("type", "")),
        )
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    ]
    return {"error": parsed["error"], "detail": detail}


async def _send_reshaped(send: Send, start: Message, body: bytes, shape: ErrorShape) -> None:
    status = start["status"]
    content = json.dumps(shape(status, to_error_body(status, body))).encode()
    headers = [
        (name, value)
        for name, value in start.get("headers", [])
        if name.lower() not in (b"content-length", b"content-type")
    ]
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
