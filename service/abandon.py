"""Work for a client that has left is abandoned.

A route's CPU-heavy work (decoding a request's images, ...) runs in a thread through
``unless_client_leaves``: the work checks a stop flag between its steps (``stop_if_set``), and
the route polls the connection while it waits. When the client disconnects, the flag is set,
the work stops at its next step and the route ends with ``ClientGoneError`` (answered 499, as
nginx records a client that closed its request). ``until_client_leaves`` does the same for any
awaitable, cancelling it: a prediction waiting in the micro-batcher's queue leaves the queue
before its inference call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

from service.errors import InferenceError

T = TypeVar("T")
POLL_S = 0.05


class ClientGoneError(InferenceError):
    """The client disconnected before its answer was ready; its work was abandoned (499, as
    nginx records a client that closed its request)."""

    status = 499
    kind = "client_closed_request"


def stop_if_set(stop: threading.Event) -> None:
    """Raise ``ClientGoneError`` once ``stop`` is set (call it between the steps of a work)."""
    if stop.is_set():
        raise ClientGoneError("the client left; work abandoned")


async def unless_client_leaves(request: Request, work: Callable[[threading.Event], T]) -> T:
    """``work(stop)``'s result, run in a thread; ``ClientGoneError`` as soon as the client of
    ``request`` disconnects (``stop`` is set then, and when the caller is cancelled)."""
    stop = threading.Event()
    try:
        return await until_client_leaves(request, asyncio.to_thread(work, stop))
    finally:
        stop.set()


async def until_client_leaves(request: Request, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result; ``ClientGoneError`` as soon as the client of ``request``
    disconnects, the awaitable cancelled then (and when the caller is cancelled)."""
    task = asyncio.ensure_future(awaitable)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=POLL_S)
            if not task.done() and await request.is_disconnected():
                raise ClientGoneError("the client left; work abandoned")
        return task.result()
    finally:
        task.cancel()  # nothing when it is done
