"""BentoML as dlserve patches it: the patched code is the code the patch was written against;
a request that answers in time leaves no timer behind (BentoML's kept one per request alive for
the whole timeout), a request that does not gets BentoML's 504, and the worker's traffic
counts the requests started."""

from __future__ import annotations

import asyncio

import bentoml
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.bentoml_compat import (
    LEAN_PATH_MIRRORS_SHA256,
    PATCHED_SOURCE_SHA256,
    WRITTEN_AGAINST,
    install,
    lean_path_mirrors_sha256,
    patched_source_sha256,
)
from service.traffic import Traffic


def test_the_patched_bentoml_code_is_the_code_the_patch_was_written_against() -> None:
    assert patched_source_sha256() == PATCHED_SOURCE_SHA256, (
        f"BentoML's TimeoutMiddleware changed since {WRITTEN_AGAINST} "
        f"(now {bentoml.__version__}): review service/bentoml_compat.py"
    )


def test_the_bentoml_stack_the_lean_path_mirrors_is_the_one_it_was_written_against() -> None:
    assert lean_path_mirrors_sha256() == LEAN_PATH_MIRRORS_SHA256, (
        f"BentoML's service app middlewares or API wrapper changed since {WRITTEN_AGAINST} "
        f"(now {bentoml.__version__}): review service/lean_path.py against them"
    )


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
    install(Traffic())

    async def scenario() -> list[asyncio.TimerHandle]:
        await call(TimeoutMiddleware(answering_after(0), timeout=60))
        loop = asyncio.get_running_loop()
        return [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == []


def test_a_late_request_gets_504() -> None:
    install(Traffic())
    sent = asyncio.run(call(TimeoutMiddleware(answering_after(5), timeout=0.05)))
    assert sent[0]["status"] == 504
    assert b"0.05 seconds" in sent[1]["body"]


def test_a_request_is_alone_only_while_no_other_one_has_started() -> None:
    counts = Traffic()
    install(counts)
    seen: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(counts.alone())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> None:
        middleware = TimeoutMiddleware(app, timeout=60)
        await call(middleware)  # by itself
        await asyncio.gather(call(middleware), call(middleware))  # both started before either ran

    asyncio.run(scenario())
    assert seen == [True, False, False] and counts.alone() and counts.started == 0
