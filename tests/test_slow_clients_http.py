"""Slow clients on a real server with API keys: 500 connections that send a request head and no
body (300 keyed on the fraud route, 200 unauthenticated on the open `/docs.json`) take no
admission place, so a keyed client is served while they wait; each of them is answered 408 at
`DLSERVE_REQUEST_READ_TIMEOUT_S`, and a connection that never sends a head is closed then."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from harness.http_checks import metric_value
from harness.local_server import LocalServer
from harness.payloads import transactions
from tests.raw_http import read_response, request_head, wait_in_progress

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"
KEY = "slow-clients-key-0123456789"
LIMIT = 4
READ_TIMEOUT_S = 20  # long enough for 500 connections to be opened on a busy machine
KEYED, OPEN = 300, 200
PROBES = ("/livez", "/readyz", "/v2/health/live", "/v2/health/ready")


@pytest.fixture
def keyed_server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_API_KEYS": KEY,
        "DLSERVE_MAX_CONCURRENT_REQUESTS": str(LIMIT),
        "DLSERVE_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def connect(server: LocalServer, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head)
    return sock


def test_slow_bodies_do_not_stop_a_keyed_client(keyed_server: LocalServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    body = json.dumps({"transactions": transactions(1)}).encode()
    docs_head = b"GET /docs.json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
    idle: list[socket.socket] = []
    try:
        idle += [connect(keyed_server, docs_head) for _ in range(OPEN)]
        keyed_head = request_head(ROUTE, len(body), auth) + body[:10]
        idle += [connect(keyed_server, keyed_head) for _ in range(KEYED)]
        no_head = connect(keyed_server, b"")
        wait_in_progress(keyed_server, ROUTE, KEYED)  # every keyed slow body is in the server
        served = httpx.post(keyed_server.url + ROUTE, content=body, headers=auth, timeout=10)
        probes = [httpx.get(keyed_server.url + p, timeout=5).status_code for p in PROBES]
        answers = [read_response(sock, timeout=2 * READ_TIMEOUT_S) for sock in idle]
        no_head.settimeout(2 * READ_TIMEOUT_S)
        closed = no_head.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()

    assert served.status_code == 200, served.text
    assert probes == [200] * len(PROBES)
    assert [status for status, _ in answers] == [408] * (OPEN + KEYED)
    assert "DLSERVE_REQUEST_READ_TIMEOUT_S" in answers[0][1]["detail"][0]["msg"]
    assert closed, "a connection without a request head stayed open"
    assert metric_value(keyed_server, "dlserve_slow_bodies_total") == OPEN + KEYED
