"""A client that disconnects mid-body on a real server is not a server error: no traceback in
the log, no 500 in BentoML's request metrics; it is counted apart (answered 499)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.http_checks import metric_value
from harness.local_server import LocalServer
from harness.payloads import transactions
from tests.raw_http import request_head

pytestmark = pytest.mark.http
ROUTES = ("/v1/fraud/score", "/v1/sentiment", "/v1/batch/jobs/submit")
HALF_SENT = 4  # per route


@pytest.fixture
def fraud_server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    with LocalServer({"DLSERVE_MODELS": "fraud"}) as running:
        yield running.wait("/readyz")


def request_totals(server: LocalServer, code: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bentoml_service_request_total{") and f'"{code}"' in line
    )


def test_a_client_leaving_mid_body_is_counted_apart_without_a_traceback(
    fraud_server: LocalServer,
) -> None:
    for route in ROUTES:
        for _ in range(HALF_SENT):
            with socket.create_connection(("127.0.0.1", fraud_server.port)) as sock:
                sock.sendall(request_head(route, 1000) + b'{"transac')
    expected = HALF_SENT * len(ROUTES)
    deadline = time.monotonic() + 15
    while metric_value(fraud_server, "dlserve_client_disconnects_total") < expected:
        assert time.monotonic() < deadline, fraud_server.logs()
        time.sleep(0.2)
    whole = httpx.post(fraud_server.url + ROUTES[0], json={"transactions": transactions(1)})
    assert whole.status_code == 200

    assert request_totals(fraud_server, "500") == 0
    assert request_totals(fraud_server, "499") == expected
    assert metric_value(fraud_server, "dlserve_client_disconnects_total") == expected
    logs = fraud_server.logs(tail=None)
    assert "Traceback" not in logs and "ClientDisconnect" not in logs, logs
    assert "client left before sending its whole body" in logs
