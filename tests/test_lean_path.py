"""The lean path's pieces in process: which requests the dispatcher sends lean, the outer layer's
accounting (``Traffic.started`` and BentoML's in-progress gauge while a request runs, its
request metrics, the 504 of BentoML's timeout, the ``x-dlserve-path`` mark), the V2 infer
route's path parameters and the routes of ``DLSERVE_LEAN_AREAS``."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from service import registry
from service.lean_path import (
    BentoRequestMetrics,
    LeanDispatch,
    RequestAccounting,
    V2Infer,
    named_routes,
)
from service.traffic import Traffic


class Gauge:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class Recorded:
    """Request metrics that remember what they were told."""

    def __init__(self) -> None:
        self.running = Gauge()
        self.started_paths: list[str] = []
        self.observed: list[tuple[str, int]] = []

    def started(self, path: str) -> None:
        self.started_paths.append(path)
        self.running.inc()

    def ended(self, path: str) -> None:
        assert path == self.started_paths[-1]
        self.running.dec()

    def answered(self, path: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.observed.append((path, status))


def http(path: str, method: str = "POST") -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def call(app: object, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[operator]
    return sent


def test_only_posts_to_the_named_and_v2_infer_routes_go_lean() -> None:
    dispatch = LeanDispatch(bentoml_app=None, lean=None, named=frozenset({"/v1/fraud/score"}))
    lean = [
        http("/v1/fraud/score"),
        http("/v2/models/fraud-scorer/infer"),
        http("/v2/models/fraud-scorer/versions/3/infer"),
    ]
    not_lean = [
        http("/v1/fraud/score", "GET"),
        http("/v2/models/fraud-scorer/infer", "GET"),
        http("/v2/models/fraud-scorer"),
        http("/v1/sentiment"),
        {"type": "lifespan"},
    ]
    assert [dispatch.is_hot(scope) for scope in lean] == [True] * 3
    assert [dispatch.is_hot(scope) for scope in not_lean] == [False] * 5


def test_a_request_is_counted_while_it_runs_measured_and_marked() -> None:
    traffic = Traffic()
    metrics = Recorded()
    started_inside: list[tuple[int, int]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started_inside.append((traffic.started, metrics.running.value))
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    accounting = RequestAccounting(app, traffic, 60, lambda: metrics)
    sent = asyncio.run(call(accounting, http("/v1/fraud/score")))
    assert started_inside == [(1, 1)]
    assert traffic.started == 0 and metrics.running.value == 0
    assert (b"x-dlserve-path", b"lean") in sent[0]["headers"]
    assert metrics.started_paths == ["/v1/fraud/score"]
    assert metrics.observed == [("/v1/fraud/score", 201)]  # once, at the last body message


def test_a_request_not_answered_in_time_gets_bentoml_s_504_and_is_counted() -> None:
    traffic = Traffic()
    metrics = Recorded()

    async def never_answers(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.Event().wait()

    accounting = RequestAccounting(never_answers, traffic, 0.01, lambda: metrics)
    sent = asyncio.run(call(accounting, http("/v2/models/fraud-scorer/infer")))
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"]) == {
        "error": "Not able to process the request in 0.01 seconds"
    }
    assert metrics.observed == [("/v2/models/fraud-scorer/infer", 504)]
    assert traffic.started == 0 and metrics.running.value == 0


def test_bentoml_s_request_metrics_are_written_once_per_turn_of_the_loop() -> None:
    metrics = BentoRequestMetrics(stamp_last_request=True)
    path = "/v1/test/metrics-per-turn"

    async def one_turn() -> list[float]:
        for _ in range(3):
            metrics.started(path)
        metrics.answered(path, 200, 0.004)
        metrics.answered(path, 200, 0.2)
        metrics.ended(path)
        metrics.ended(path)
        total, duration = metrics._answered_child(path, 200)
        running = metrics._running_child(path)
        before = [running._value.get(), total._value.get(), duration._sum.get()]
        await asyncio.sleep(0)  # the end of this turn of the loop: the write
        return [*before, running._value.get(), total._value.get(), duration._sum.get()]

    assert asyncio.run(one_turn()) == [0, 0, 0, 1, 2, pytest.approx(0.204)]
    assert metrics.last_request._value.get() > 0


def test_a_write_left_pending_by_a_closed_loop_is_made_on_the_next_loop() -> None:
    metrics = BentoRequestMetrics(stamp_last_request=False)
    path = "/v1/test/metrics-next-loop"

    async def start_another_and_wait_a_turn() -> float:
        metrics.started(path)
        await asyncio.sleep(0)
        return metrics._running_child(path)._value.get()

    closed = asyncio.new_event_loop()
    closed.call_soon(metrics.started, path)  # schedules its write on this loop ...
    closed.call_soon(closed.stop)  # ... which stops before that write's turn
    closed.run_forever()
    closed.close()
    assert metrics._running_child(path)._value.get() == 0
    assert asyncio.run(start_another_and_wait_a_turn()) == 2


def test_the_lean_areas_name_their_named_routes() -> None:
    areas = registry.all_areas(())
    assert set(named_routes(areas, ["fraud"])) == {"/v1/fraud/score"}
    assert set(named_routes(areas, ["image"])) == {
        "/v1/images/classify",
        "/v1/images/classify_batch",
    }


def test_v2_infer_paths_reach_the_endpoint_with_the_router_s_path_params() -> None:
    seen: list[dict] = []
    fallback: list[str] = []

    async def endpoint(request: Request) -> Response:
        seen.append(dict(request.path_params))
        return Response(b"{}", media_type="application/json")

    async def v2_app(scope: Scope, receive: Receive, send: Send) -> None:
        fallback.append(scope["path"])
        await Response(b"", status_code=404)(scope, receive, send)

    infer = V2Infer(v2_app, endpoint)
    for path in (
        "/v2/models/fraud-scorer/infer",
        "/v2/models/fraud-scorer/versions/7/infer",
        "/v2/models/a/b/infer",
    ):
        asyncio.run(call(infer, http(path)))
    assert seen == [{"name": "fraud-scorer"}, {"name": "fraud-scorer", "version": "7"}]
    assert fallback == ["/v2/models/a/b/infer"]


def test_an_exception_in_the_v2_endpoint_is_starlette_s_500() -> None:
    async def endpoint(request: Request) -> Response:
        raise RuntimeError("boom")

    sent = asyncio.run(call(V2Infer(None, endpoint), http("/v2/models/m/infer")))
    assert sent[0]["status"] == 500 and sent[1]["body"] == b"Internal Server Error"
