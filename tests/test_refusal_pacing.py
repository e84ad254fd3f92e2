"""Paced refusals, in-process: a 503 or 429 with ``Retry-After`` is held ``delay_s`` before it
starts; other answers, refusals without ``Retry-After`` and probes are never held."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from service import refusal_pacing
from service.refusal_pacing import PacedRefusals

DELAY_S = 0.25


def answering(status: int, retry_after: bool):
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {"Retry-After": "1"} if retry_after else {}
        await PlainTextResponse("x", status, headers=headers)(scope, receive, send)

    return app


@pytest.mark.parametrize(
    ("path", "status", "retry_after", "held"),
    [
        ("/v1/fraud/score", 503, True, True),
        ("/v1/completions", 429, True, True),
        ("/v1/fraud/score", 503, False, False),
        ("/v1/fraud/score", 200, False, False),
        ("/v1/fraud/score", 401, False, False),
        ("/readyz", 503, True, False),
        ("/v2/health/ready", 503, True, False),
    ],
)
def test_only_refusals_with_retry_after_are_held(
    monkeypatch: pytest.MonkeyPatch, path: str, status: int, retry_after: bool, held: bool
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(refusal_pacing.asyncio, "sleep", sleep)
    app = PacedRefusals(answering(status, retry_after), delay_s=DELAY_S)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path)

    assert asyncio.run(call()).status_code == status
    assert slept == ([DELAY_S] if held else [])


def test_no_delay_holds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refusal_pacing.asyncio, "sleep", None)  # would fail if called
    app = PacedRefusals(answering(503, True), delay_s=0)
    transport = httpx.ASGITransport(app=app)

    async def call() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.post("/v1/fraud/score")).status_code

    assert asyncio.run(call()) == 503
