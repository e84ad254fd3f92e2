"""A client that leaves mid-body, in-process: the app never runs, the answer is 499 (dropped by
the server) and the disconnect is counted apart; a whole body reaches the app unchanged."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from service.disconnects import BodyBeforeApp
from service.metrics import CLIENT_DISCONNECTS

SCOPE = {"type": "http", "method": "POST", "path": "/v1/fraud/score", "headers": []}


def run(messages: list[Message]) -> tuple[list[bytes], list[Message]]:
    """Feed ``messages`` to the guarded app; (bodies the app read, messages sent back)."""
    seen: list[bytes] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await Request(scope, receive).body())
        await PlainTextResponse("ok")(scope, receive, send)

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(BodyBeforeApp(app)(SCOPE, receive, send))
    return seen, sent


def test_a_client_leaving_mid_body_never_reaches_the_app() -> None:
    before = CLIENT_DISCONNECTS._value.get()
    seen, sent = run([{"type": "http.request", "body": b'{"trans', "more_body": True}])
    assert seen == []
    assert sent[0]["status"] == 499
    assert CLIENT_DISCONNECTS._value.get() == before + 1


def test_a_whole_body_in_parts_reaches_the_app() -> None:
    parts = [b'{"a":', b" 1", b"}"]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    seen, sent = run(messages)
    assert seen == [b'{"a": 1}']
    assert sent[0]["status"] == 200
