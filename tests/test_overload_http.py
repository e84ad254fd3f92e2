"""Overload on a real server: with `DLSERVE_MAX_CONCURRENT_REQUESTS` requests in flight (held
deterministically by half-sent bodies), the next one-row request is refused at once with 503
and `Retry-After`, counted as overloaded; probes still answer, and the held requests complete."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.http_checks import metric_value
from harness.local_server import LocalServer
from harness.payloads import transactions
from tests.raw_http import read_response, request_head, wait_in_progress

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"
LIMIT = 2


@pytest.fixture
def bounded_server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    env = {"DLSERVE_MODELS": "fraud", "DLSERVE_MAX_CONCURRENT_REQUESTS": str(LIMIT)}
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def test_beyond_the_bound_one_row_requests_are_refused_at_once(
    bounded_server: LocalServer,
) -> None:
    body = json.dumps({"transactions": transactions(3)}).encode()
    held = [socket.create_connection(("127.0.0.1", bounded_server.port)) for _ in range(LIMIT)]
    try:
        for sock in held:
            sock.sendall(request_head(ROUTE, len(body)) + body[:10])
        wait_in_progress(bounded_server, ROUTE, LIMIT)
        started = time.monotonic()
        refused = httpx.post(
            bounded_server.url + ROUTE, json={"transactions": transactions(1)}, timeout=10
        )
        refused_after = time.monotonic() - started
        probes = [httpx.get(bounded_server.url + p, timeout=5).status_code for p in PROBES]
        for sock in held:
            sock.sendall(body[10:])
        answers = [read_response(sock) for sock in held]
    finally:
        for sock in held:
            sock.close()

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "DLSERVE_MAX_CONCURRENT_REQUESTS" in refused.json()["detail"][0]["msg"]
    assert refused_after < 1.0, f"the refusal took {refused_after:.2f}s"
    assert probes == [200, 200, 200]
    assert [status for status, _ in answers] == [200] * LIMIT
    assert all(len(answer["results"]) == 3 for _, answer in answers)
    overloaded = metric_value(
        bounded_server, "dlserve_predictions_total", model="fraud-scorer", outcome="overloaded"
    )
    assert overloaded == 1
    after = httpx.post(bounded_server.url + ROUTE, json={"transactions": transactions(1)})
    assert after.status_code == 200, "the places were not given back"


PROBES = ("/livez", "/readyz", "/metrics")
