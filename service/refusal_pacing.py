"""Refusals answered after a short pause, so clients that retry at once cannot starve a worker.

A refusal (503 or 429 with ``Retry-After``: the admission bound, a full queue, a full step
scheduler) costs the worker little, but a client that ignores ``Retry-After`` and retries at
once (closed-loop load generators, naive retry loops) sends thousands a second: at three times
the bound, refusals became most of the event loop's work and the requests it had accepted
(completions, whose step loop needs the event loop between steps) slowed to a crawl: 21.6
completions/s against 288/s unloaded (docs/OPERATIONS.md). ``PacedRefusals`` holds each such
answer ``delay_s`` before sending it: the held request is an idle coroutine, and each refused
connection retries at most once per ``delay_s``. Probes are never held.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.paths import uncounted

PACED_STATUSES = frozenset({429, 503})


class PacedRefusals:
    """ASGI middleware: a 429 or 503 answer carrying ``Retry-After`` starts ``delay_s`` late
    (paths of ``service.paths.uncounted`` aside; ``delay_s`` 0: at once)."""

    def __init__(self, app: ASGIApp, delay_s: float) -> None:
        self.app = app
        self.delay_s = delay_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.delay_s or uncounted(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def paced(message: Message) -> None:
            if message["type"] == "http.response.start" and _is_refusal(message):
                await asyncio.sleep(self.delay_s)
            await send(message)

        await self.app(scope, receive, paced)


def _is_refusal(start: Message) -> bool:
    if start["status"] not in PACED_STATUSES:
        return False
    return any(name.lower() == b"retry-after" for name, _ in start.get("headers", []))
