"""Every patch dlserve makes to BentoML, written against BentoML 1.4.40 (``WRITTEN_AGAINST``).

``tests/test_bentoml_compat.py`` fails when the patched BentoML code changes underneath
(``PATCHED_SOURCE_SHA256``: the digest of the patched class's source): read the new code,
adapt the patch, then record the new digest.

The one patch: BentoML's request timeout without its per-request leak (the cause of the ~100 ms
p99). BentoML 1.4's ``TimeoutMiddleware`` (``bentoml/_internal/server/http/traffic.py``, on
every request: the service's ``traffic.timeout``) schedules a timer per request and never
cancels it. Each timer keeps its request's future alive for the whole timeout (60 s here): at
5,000 requests/s, some 300,000 of them, which every full pass of Python's cyclic garbage
collector walks. Those passes stall the worker for ~100 ms: the p99 of a no-op route was 100 ms
at concurrency 16 (2.7 ms with the timer cancelled; docs/BENCHMARKS.md). BentoML offers no
setting or hook to replace the middleware, so ``install()`` replaces its ``__call__`` with the
same behaviour (504 after the timeout) that cancels the timer once the answer starts.

It is also where a request is first seen in dlserve's code (the middleware runs each request's
app in a task of its own, so the requests uvicorn has read are all counted before any of them
runs further): it counts them in the worker's ``Traffic.started`` (``service.traffic``).

The lean path (``service.lean_path``) answers the hot routes in front of BentoML's stack and
reproduces what that stack did for them; ``LEAN_PATH_MIRRORS_SHA256`` pins the BentoML code it
mirrors (the service app's middleware list and API wrapper), checked by the same test.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from service.traffic import Traffic

WRITTEN_AGAINST = "1.4.40"
# the sha256 of ``TimeoutMiddleware``'s source in BentoML 1.4.40, the class patched below
PATCHED_SOURCE_SHA256 = "4dab3e6bdd06efc590294d89beed9a399be6959b62bce9da024b33292e1be34b"


def patched_source_sha256() -> str:
    """The sha256 of the installed BentoML's ``TimeoutMiddleware`` source."""
    return hashlib.sha256(inspect.getsource(traffic.TimeoutMiddleware).encode()).hexdigest()


def _counting(counts: Traffic) -> Any:
    """BentoML's ``TimeoutMiddleware.__call__``, with its timer cancelled when done; counts
    the HTTP requests inside it in ``counts.started``."""

    async def call(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            counts.started += 1
            try:
                await _timed(self, scope, receive, send)
            finally:
                counts.started -= 1
        else:
            await _timed(self, scope, receive, send)

    return call


async def _timed(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def started(message: Message) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    answer = asyncio.ensure_future(self.app(scope, receive, started))
    try:
        await waiter
    except TimeoutError:
        if answer.cancel():
            error = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(error, status_code=504)(scope, receive, send)
    else:
        await answer
    finally:
        timer.cancel()


# The BentoML code whose behaviour the lean path (``service.lean_path``) reproduces for the hot
# routes: the service app's middleware list and its API wrapper (1.4.40). When it changes,
# compare the lean stack with it again (docs/ARCHITECTURE.md, The lean HTTP path).
LEAN_PATH_MIRRORS_SHA256 = "fcc94d603f1a336f8e6c8bfefae7eec07a5363495c0e5c996a49a631e8267bcf"


def lean_path_mirrors_sha256() -> str:
    """The sha256 of the installed BentoML's service app middleware list and API wrapper."""
    from _bentoml_impl.server.app import ServiceAppFactory

    parts = (
        ServiceAppFactory.middlewares.fget,
        ServiceAppFactory.api_endpoint_wrapper,
        ServiceAppFactory.api_endpoint,
    )
    source = "".join(inspect.getsource(part) for part in parts)
    return hashlib.sha256(source.encode()).hexdigest()


def install(counts: Traffic) -> None:
    """Replace ``TimeoutMiddleware.__call__``, counting into ``counts`` (the last call wins)."""
    traffic.TimeoutMiddleware.__call__ = _counting(counts)  # type: ignore[method-assign]
