"""SIGTERM drains: what the image's tini does on `docker stop` or a pod's termination (one
SIGTERM to `bentoml serve`, its child) lets a request already in flight finish with its answer.
The request is held in flight deterministically: its body is sent in two halves around the
signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.local_server import LocalServer
from tests.payloads import transactions

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"


@pytest.fixture
def fraud_server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    with LocalServer({"DLSERVE_MODELS": "fraud"}) as running:
        yield running.wait("/readyz")


def in_progress(server: LocalServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("bentoml_service_request_in_progress{") and f'"{ROUTE}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return status, json.loads(body)


def test_sigterm_lets_the_request_in_flight_finish(fraud_server: LocalServer) -> None:
    body = json.dumps({"transactions": transactions(50)}).encode()
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", fraud_server.port), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
        deadline = time.monotonic() + 10
        while in_progress(fraud_server) < 1:
            assert time.monotonic() < deadline, "the request never got in flight"
            time.sleep(0.1)
        os.kill(fraud_server.process.pid, signal.SIGTERM)  # as tini forwards it
        time.sleep(1.0)
        assert fraud_server.process.poll() is None, "the server quit with a request in flight"
        sock.sendall(body[len(body) // 2 :])
        status, answer = read_response(sock)
    assert status == 200
    assert len(answer["results"]) == 50
    fraud_server.process.wait(timeout=30)  # and then it stops by itself
