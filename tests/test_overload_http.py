"""Overload on a real server: with `DLSERVE_MAX_CONCURRENT_REQUESTS` requests in flight (held
deterministically by toy streams that run until their client leaves), the next one-row request
is refused with 503 and `Retry-After` (after `DLSERVE_REFUSAL_DELAY_MS`), counted as
overloaded; probes, the Open Inference Protocol's `/v2/health/*` included, still answer; a
completion still reaches its step scheduler (bounded by it, 429 beyond; not by the generic
503); and the places come back once the held clients leave."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from harness.http_checks import metric_value
from harness.local_server import LocalServer
from harness.payloads import transactions
from tests.raw_http import wait_in_progress

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"
HELD_ROUTE = "/v1/toy/hold"
LIMIT = 2
REFUSAL_DELAY_MS = 300
PROBES = ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


@pytest.fixture
def bounded_server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_AREA_MODULES": "tests.toy_hold_area",
        "DLSERVE_MODELS": "fraud,text,toy-hold",
        "DLSERVE_MAX_CONCURRENT_REQUESTS": str(LIMIT),
        "DLSERVE_REFUSAL_DELAY_MS": str(REFUSAL_DELAY_MS),
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def hold(stack: ExitStack, client: httpx.Client, server: LocalServer) -> Iterator[str]:
    """One request in flight until ``stack`` closes, proved running by its first event. Keep
    the lines returned: dropping them closes the stream."""
    answer = stack.enter_context(client.stream("POST", server.url + HELD_ROUTE, json={}))
    assert answer.status_code == 200
    lines = answer.iter_lines()
    first = next(line for line in lines if line.startswith("data: "))
    assert json.loads(first.removeprefix("data: ")) == {"held": "held"}
    return lines


def test_beyond_the_bound_one_row_requests_are_refused_but_completions_are_not(
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
        completion = httpx.post(
            bounded_server.url + "/v1/completions", json={"prompt": "a", "max_tokens": 2}
        )
        assert len(streams) == LIMIT  # kept open until here

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "DLSERVE_MAX_CONCURRENT_REQUESTS" in refused.json()["detail"][0]["msg"]
    assert refused_after >= REFUSAL_DELAY_MS / 1000, "the refusal was not paced"
    assert probes == [200] * len(PROBES)
    assert completion.status_code == 200, completion.text
    overloaded = metric_value(
        bounded_server, "dlserve_predictions_total", model="fraud-scorer", outcome="overloaded"
    )
    assert overloaded == 1
    wait_in_progress(bounded_server, HELD_ROUTE, 0, at_most=True)  # the held clients left
    after = httpx.post(bounded_server.url + ROUTE, json={"transactions": transactions(1)})
    assert after.status_code == 200, "the places were not given back"
