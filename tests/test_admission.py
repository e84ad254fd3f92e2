"""The admission limit, in-process: beyond the bound a request is refused at once with 503 and
``Retry-After`` (nothing queues), probes and documents always pass, a request whose body is still
arriving holds no place, and a draining worker closes connections."""

from __future__ import annotations

import asyncio
import time

import httpx
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from service.admission import AdmissionGate, AdmissionLimit
from service.disconnects import BodyBeforeApp
from service.paths import UNCOUNTED_PATHS
from service.read_deadline import BodyReadDeadline
from service.traffic import Traffic

ROUTE = "/v1/toy"


def held_app(release: asyncio.Event):
    """An app whose route answers once ``release`` is set; probes answer at once."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == ROUTE:
            await release.wait()
        await PlainTextResponse("ok")(scope, receive, send)

    return app


async def overload_scenario() -> dict:
    release = asyncio.Event()
    traffic = Traffic()
    app = AdmissionLimit(held_app(release), limit=2, traffic=traffic, routes={ROUTE: "toy"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        held = [asyncio.create_task(client.post(ROUTE, content=b"{}")) for _ in range(2)]
        while traffic.in_flight < 2:
            await asyncio.sleep(0.001)
        started = time.monotonic()
        refused = await client.post(ROUTE, content=b"{}")
        refused_after = time.monotonic() - started
        probes = [await client.get(path) for path in sorted(UNCOUNTED_PATHS)]
        release.set()
        answers = await asyncio.gather(*held)
        after = await client.post(ROUTE, content=b"{}")
    return {
        "refused": refused,
        "refused_after": refused_after,
        "probes": probes,
        "answers": answers,
        "after": after,
        "in_flight": traffic.in_flight,
    }


def test_beyond_the_bound_a_request_is_refused_at_once_with_retry_after() -> None:
    seen = asyncio.run(overload_scenario())
    refused = seen["refused"]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["detail"][0]["loc"] == ["request"]
    assert "DLSERVE_MAX_CONCURRENT_REQUESTS" in refused.json()["detail"][0]["msg"]
    assert seen["refused_after"] < 0.5, "the refusal waited"
    assert [p.status_code for p in seen["probes"]] == [200] * len(UNCOUNTED_PATHS), (
        "a probe or a document was refused"
    )
    assert [a.status_code for a in seen["answers"]] == [200, 200]
    assert seen["after"].status_code == 200, "the bound did not free its places"
    assert seen["in_flight"] == 0


async def draining_scenario() -> tuple[httpx.Response, httpx.Response]:
    release = asyncio.Event()
    release.set()
    traffic = Traffic()
    limit = AdmissionLimit(held_app(release), limit=4, traffic=traffic, routes={})
    app = AdmissionGate(limit, limit=4, traffic=traffic, routes={})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = await client.post(ROUTE)
        traffic.draining = True
        during = await client.post(ROUTE)
    return before, during


def test_a_draining_worker_closes_each_connection_after_its_answer() -> None:
    before, during = asyncio.run(draining_scenario())
    assert before.status_code == during.status_code == 200
    assert "connection" not in before.headers
    assert during.headers["connection"] == "close"


def test_the_probes_of_the_open_inference_protocol_are_never_counted() -> None:
    assert {"/livez", "/readyz", "/v2/health/live", "/v2/health/ready"} <= UNCOUNTED_PATHS


def service_stack(app, traffic: Traffic, limit: int) -> BodyReadDeadline:
    """The service's order: gate, read deadline, whole body read, then counted."""
    counted = AdmissionLimit(app, limit=limit, traffic=traffic, routes={ROUTE: "toy"})
    reading = BodyReadDeadline(BodyBeforeApp(counted), timeout_s=60)
    return AdmissionGate(reading, limit=limit, traffic=traffic, routes={ROUTE: "toy"})


async def slow_body_scenario() -> dict:
    release, arrived = asyncio.Event(), asyncio.Event()
    release.set()
    traffic = Traffic()
    app = service_stack(held_app(release), traffic, limit=1)
    sent_first = asyncio.Event()

    async def slow_body():
        yield b'{"a":'
        sent_first.set()
        await arrived.wait()
        yield b"1}"

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        slow = asyncio.create_task(client.post(ROUTE, content=slow_body()))
        await sent_first.wait()
        in_flight_while_reading = traffic.in_flight
        served = await client.post(ROUTE, content=b"{}")
        arrived.set()
        slow_answer = await slow
    return {
        "in_flight": in_flight_while_reading,
        "served": served,
        "slow": slow_answer,
        "after": traffic.in_flight,
    }


def test_a_request_whose_body_is_still_arriving_holds_no_place() -> None:
    seen = asyncio.run(slow_body_scenario())
    assert seen["in_flight"] == 0
    assert seen["served"].status_code == 200, "a slow body took the only place"
    assert seen["slow"].status_code == 200
    assert seen["after"] == 0


async def self_bounded_scenario() -> list[int]:
    release = asyncio.Event()
    release.set()
    traffic = Traffic(in_flight=1)  # full
    app = AdmissionGate(
        held_app(release), limit=1, traffic=traffic, routes={}, self_bounded={ROUTE: "toy"}
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [(await client.post(path)).status_code for path in (ROUTE, "/v1/other")]


def test_a_self_bounded_route_is_never_refused_by_the_generic_bound() -> None:
    assert asyncio.run(self_bounded_scenario()) == [200, 503]


async def full_queue_scenario() -> list[tuple[int, bool]]:
    """A stepwise route while its model's queue is full, then once it has freed: each answer's
    status and whether the app saw the request (its body was read)."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        await PlainTextResponse("ok")(scope, receive, send)

    traffic = Traffic()
    gate = AdmissionGate(app, limit=8, traffic=traffic, routes={}, self_bounded={ROUTE: "toy"})
    transport = httpx.ASGITransport(app=gate)
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for full in (True, False):
            traffic.queue_filled("toy", full)
            before = len(seen)
            response = await client.post(ROUTE, content=b"{}")
            answers.append((response.status_code, len(seen) > before))
            if full:
                assert response.headers["retry-after"] == "1"
                assert "DLSERVE_MAX_WAITING_SEQUENCES" in response.json()["detail"][0]["msg"]
    return answers


def test_a_full_step_queue_is_refused_with_429_before_the_route_reads_the_body() -> None:
    assert asyncio.run(full_queue_scenario()) == [(429, False), (200, True)]
