"""BentoML's request timeout as dlserve installs it: a request that answers in time leaves no
timer behind (BentoML's kept one per request alive for the whole timeout), and a request that
does not gets BentoML's 504."""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.timeouts import alone, install


def answering_after(seconds: float) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def call(middleware: TimeoutMiddleware) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware({"type": "http", "path": "/x"}, receive, send)
    return sent


def test_an_answered_request_leaves_no_timer() -> None:
    install()

    async def scenario() -> list[asyncio.TimerHandle]:
        await call(TimeoutMiddleware(answering_after(0), timeout=60))
        loop = asyncio.get_running_loop()
        return [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == []


def test_a_late_request_gets_504() -> None:
    install()
    sent = asyncio.run(call(TimeoutMiddleware(answering_after(5), timeout=0.05)))
    assert sent[0]["status"] == 504
    assert b"0.05 seconds" in sent[1]["body"]


def test_a_request_is_alone_only_while_no_other_one_has_started() -> None:
    install()
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(alone())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> None:
        middleware = TimeoutMiddleware(app, timeout=60)
        await call(middleware)  # by itself
        await asyncio.gather(call(middleware), call(middleware))  # both started before either ran

    asyncio.run(scenario())
    assert seen == [True, False, False] and alone()
