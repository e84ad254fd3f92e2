"""Overload on a real server: with `DLSERVE_MAX_CONCURRENT_REQUESTS` requests in flight (held
deterministically by toy counter streams that run until their client leaves), the next one-row
request is refused at once with 503 and `Retry-After`, counted as overloaded; probes, the Open
Inference Protocol's `/v2/health/*` included, still answer, and the places come back once the
held clients leave."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.http_checks import metric_value
from tests.local_server import LocalServer
from tests.payloads import transactions
from tests.raw_http import wait_in_progress
from tests.toy_models import PLUGINS

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"
HELD_ROUTE = "/v1/toy/count"
LIMIT = 2
PROBES = ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


@pytest.fixture
def bounded_server(stored_models: dict[str, dict], toy_models: None) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_AREA_MODULES": PLUGINS,
        "DLSERVE_MODELS": "fraud,toy-counter",
        "DLSERVE_MAX_CONCURRENT_REQUESTS": str(LIMIT),
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def hold(stack: ExitStack, client: httpx.Client, server: LocalServer) -> Iterator[str]:
    """One request in flight until ``stack`` closes: a count of 10,000 steps of 100 ms, whose
    first event proves it runs. Keep the lines returned: dropping them closes the stream."""
    body = {"start": 0, "steps": 10_000, "delay_ms": 100}
    answer = stack.enter_context(client.stream("POST", server.url + HELD_ROUTE, json=body))
    assert answer.status_code == 200
    lines = answer.iter_lines()
    first = next(line for line in lines if line.startswith("data: "))
    assert json.loads(first.removeprefix("data: "))["value"] == 1
    return lines


def test_beyond_the_bound_one_row_requests_are_refused_at_once(
    bounded_server: LocalServer,
) -> None:
    with httpx.Client(timeout=10) as client, ExitStack() as held:
        streams = [hold(held, client, bounded_server) for _ in range(LIMIT)]
        started = time.monotonic()
        refused = httpx.post(
            bounded_server.url + ROUTE, json={"transactions": transactions(1)}, timeout=10
        )
        refused_after = time.monotonic() - started
        probes = [httpx.get(bounded_server.url + p, timeout=5).status_code for p in PROBES]
        still_held = [
            next(line for line in lines if line.startswith("data: ")) for lines in streams
        ]

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "DLSERVE_MAX_CONCURRENT_REQUESTS" in refused.json()["detail"][0]["msg"]
    assert refused_after < 1.0, f"the refusal took {refused_after:.2f}s"
    assert probes == [200] * len(PROBES)
    assert all(json.loads(line.removeprefix("data: "))["value"] > 1 for line in still_held)
    overloaded = metric_value(
        bounded_server, "dlserve_predictions_total", model="fraud-scorer", outcome="overloaded"
    )
    assert overloaded == 1
    wait_in_progress(bounded_server, HELD_ROUTE, 0, at_most=True)  # the held clients left
    after = httpx.post(bounded_server.url + ROUTE, json={"transactions": transactions(1)})
    assert after.status_code == 200, "the places were not given back"
