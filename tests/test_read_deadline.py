"""The body read deadline, in-process: a body that stops arriving is answered 408 naming the
setting (the app never runs), a body that arrives is handed on with no deadline left on the
request, and the deadline costs no timer per request."""

from __future__ import annotations

import asyncio

from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from service.disconnects import BodyBeforeApp
from service.metrics import SLOW_BODIES
from service.read_deadline import BodyReadDeadline

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/toy", "headers": []}


def recording_app(seen: list[bytes]):
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((await receive())["body"])
        await PlainTextResponse("ok")(scope, receive, send)

    return app


async def call(middleware: BodyReadDeadline, messages: list[Message]) -> list[Message]:
    """Run one request whose client sends ``messages`` then nothing more; the answer."""
    pending = list(messages)
    forever = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await forever.wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(SCOPE, receive, send)
    return sent


def test_a_body_that_stops_arriving_is_answered_408_without_running_the_app() -> None:
    seen: list[bytes] = []
    middleware = BodyReadDeadline(BodyBeforeApp(recording_app(seen)), timeout_s=0.2)
    before = SLOW_BODIES._value.get()
    for first in ([], [{"type": "http.request", "body": b'{"a":', "more_body": True}]):
        sent = asyncio.run(call(middleware, first))
        start, body = sent[0], sent[1]["body"]
        assert start["status"] == 408
        assert (b"connection", b"close") in start["headers"]
        assert b"DLSERVE_REQUEST_READ_TIMEOUT_S" in body
    assert seen == [], "the app ran without its body"
    assert SLOW_BODIES._value.get() == before + 2
    assert middleware.reading == {}


def test_a_body_that_arrives_is_handed_on_and_leaves_no_deadline() -> None:
    seen: list[bytes] = []
    middleware = BodyReadDeadline(BodyBeforeApp(recording_app(seen)), timeout_s=0.2)
    chunks = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    sent = asyncio.run(call(middleware, chunks))
    assert sent[0]["status"] == 200
    assert seen == [b'{"a":1}']
    assert middleware.reading == {}


async def timers_while_answering(middleware: BodyReadDeadline, requests: int) -> int:
    """The most timers the loop held while ``requests`` whole-body requests were answered."""
    loop = asyncio.get_running_loop()
    most = 0
    for _ in range(requests):
        await call(middleware, [{"type": "http.request", "body": b"{}", "more_body": False}])
        most = max(most, len(loop._scheduled))  # type: ignore[attr-defined]
    return most


def test_the_deadline_arms_one_sweep_per_worker_not_one_timer_per_request() -> None:
    middleware = BodyReadDeadline(BodyBeforeApp(recording_app([])), timeout_s=30)
    assert asyncio.run(timers_while_answering(middleware, 200)) <= 1
