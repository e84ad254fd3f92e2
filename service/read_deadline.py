"""Read deadlines: a client may not hold a connection or a request open by sending slowly.

uvicorn waits for a request's head as long as the client likes, and only BentoML's 60 s
request timeout (``service.bentoml_compat``) ended a body that never comes.
``DLSERVE_REQUEST_READ_TIMEOUT_S`` bounds both:

- ``install_head_deadline`` (uvicorn's HTTP protocols): a new connection whose first request
  head has not arrived within the timeout is closed;
- ``BodyReadDeadline`` (ASGI middleware): a request whose body has not fully arrived within
  the timeout of its head is answered 408 with ``Connection: close``, counted in
  ``dlserve_slow_bodies_total`` and logged at INFO, without reaching the app.

A request's body is read before it is counted by the admission limit (``service.admission``),
so slow bodies never take the places of requests that are ready to run.

The body deadline costs no timer per request (~5 µs each on the hot path): requests still
reading are kept in a dict, and one sweep per worker, every quarter of the timeout (at most
1 s) while any is reading, cancels the waits of those past their deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_response, field_error
from service.metrics import SLOW_BODIES

log = logging.getLogger("dlserve")
SETTING = "DLSERVE_REQUEST_READ_TIMEOUT_S"


class BodyTooSlowError(Exception):
    """The request's body did not arrive within the read deadline."""


class _Reading:
    """One request whose body is still arriving: its deadline, and whether it waits now."""

    __slots__ = ("deadline", "expired", "task", "waiting")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task, self.deadline = task, deadline
        self.waiting = self.expired = False


class BodyReadDeadline:
    """ASGI middleware: the body of each HTTP request must have arrived ``timeout_s`` after its
    head; otherwise 408 naming the setting, with ``Connection: close``. Add it outside every
    middleware that reads the body (the body size limit, ``BodyBeforeApp``)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.sweep_s = min(1.0, timeout_s / 4)
        self.reading: dict[int, _Reading] = {}
        self._sweeping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        reading = _Reading(task, loop.time() + self.timeout_s)
        key = id(reading)
        self.reading[key] = reading
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self.sweep_s, self._sweep, loop)

        async def bounded_receive() -> Message:
            if reading.expired or key not in self.reading:  # the body is in: no deadline
                return await receive()
            reading.waiting = True
            try:
                message = await receive()
            except asyncio.CancelledError:
                if not reading.expired:
                    raise
                task.uncancel()
                raise BodyTooSlowError from None
            finally:
                reading.waiting = False
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                self.reading.pop(key, None)
            return message

        try:
            await self.app(scope, bounded_receive, send)
        except BodyTooSlowError:
            await self._refuse(scope, receive, send)
        finally:
            self.reading.pop(key, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for key, reading in list(self.reading.items()):
            if reading.deadline <= now and reading.waiting:
                reading.expired = True
                del self.reading[key]
                reading.task.cancel()
        if self.reading:
            loop.call_later(self.sweep_s, self._sweep, loop)
        else:
            self._sweeping = False

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        SLOW_BODIES.inc()
        log.info(
            "request body not received within %ss: %s %s (408)",
            self.timeout_s,
            scope.get("method", ""),
            scope.get("path", ""),
        )
        response = error_response(
            408,
            f"request body not received within {self.timeout_s} seconds",
            [
                field_error(
                    ["body"],
                    f"send the whole body within {self.timeout_s} s ({SETTING})",
                    "timeout",
                )
            ],
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def install_head_deadline(timeout_s: float) -> None:
    """Close a connection of uvicorn's HTTP protocols (httptools, h11) whose first request head
    has not arrived ``timeout_s`` after it opened (idempotent; the last call's value holds)."""
    for protocol in (HttpToolsProtocol, H11Protocol):
        original = getattr(protocol, "_dlserve_connection_made", protocol.connection_made)
        protocol._dlserve_connection_made = original  # type: ignore[attr-defined]
        protocol.connection_made = _with_head_deadline(original, timeout_s)  # type: ignore[method-assign]


def _with_head_deadline(connection_made: Any, timeout_s: float) -> Any:
    def timed_connection_made(self: Any, transport: asyncio.Transport) -> None:
        connection_made(self, transport)
        self.loop.call_later(timeout_s, _close_without_head, self)

    return timed_connection_made


def _close_without_head(protocol: Any) -> None:
    """Close ``protocol``'s connection if no request has started on it (no head yet)."""
    if protocol.cycle is None and not protocol.transport.is_closing():
        protocol.transport.close()
