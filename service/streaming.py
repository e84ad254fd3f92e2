"""Server-sent events for streaming routes: framing, an error event, and stopping on disconnect.

BentoML streams a generator as ``text/event-stream`` but adds no SSE framing, and it does not
stop the generator when the client leaves. ``EventStreamResponse`` frames each event as
``data: <json>\\n\\n``, ends with ``data: [DONE]\\n\\n`` (the OpenAI convention), turns a failure
after the first event into an error event, and listens for the client's disconnect whatever the
ASGI version, closing the event iterator at once so the producer's ``finally`` frees its work.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any) -> bytes:
    """One server-sent event carrying ``payload`` as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _framed(
    events: AsyncIterator[Any], on_error: Callable[[Exception], Any]
) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield sse_event(event)
    except Exception as exc:  # the status line is sent: the error travels as an event
        log.warning("stream failed after it started: %s", exc)
        yield sse_event(on_error(exc))
    yield DONE


def default_error_event(exc: Exception) -> dict[str, Any]:
    return {"error": {"message": str(exc), "type": type(exc).__name__}}


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` of ``events``; ``on_error(exc)`` shapes a mid-stream error event."""

    def __init__(
        self,
        events: AsyncIterator[Any],
        on_error: Callable[[Exception], Any] = default_error_event,
    ) -> None:
        self.events = events
        super().__init__(
            _framed(events, on_error),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream_then_stop() -> None:
            with contextlib.suppress(OSError):  # the client is gone mid-write
                await self.stream_response(send)
            task_group.cancel_scope.cancel()

        async def stop_on_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            task_group.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(stream_then_stop)
                task_group.start_soon(stop_on_disconnect)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            if hasattr(self.events, "aclose"):
                await self.events.aclose()
        if self.background is not None:
            await self.background()
