"""SIGTERM drains: what the image's tini does on `docker stop` or a pod's termination (one
SIGTERM to `bentoml serve`, its child). `/readyz` answers 503 at once, requests keep being
served for `DLSERVE_SHUTDOWN_DELAY_S` (while a load balancer notices), the requests in flight
finish with their answers, and the process exits within `DLSERVE_SHUTDOWN_GRACE_S`. A request is
held in flight deterministically: its body is sent in two halves around the signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.local_server import LocalServer
from harness.payloads import transactions
from tests.raw_http import read_response, request_head, wait_in_progress

pytestmark = pytest.mark.http
ROUTE = "/v1/fraud/score"
DELAY_S, GRACE_S = 3, 20
CLIENTS = 8


@pytest.fixture
def fraud_server(stored_models: dict[str, dict]) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_SHUTDOWN_DELAY_S": str(DELAY_S),
        "DLSERVE_SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def test_sigterm_lets_the_request_in_flight_finish(fraud_server: LocalServer) -> None:
    body = json.dumps({"transactions": transactions(50)}).encode()
    with socket.create_connection(("127.0.0.1", fraud_server.port), timeout=10) as sock:
        sock.sendall(request_head(ROUTE, len(body)) + body[: len(body) // 2])
        wait_in_progress(fraud_server, ROUTE, 1)
        os.kill(fraud_server.process.pid, signal.SIGTERM)  # as tini forwards it
        time.sleep(DELAY_S + 1.0)  # past the delay: no new connection is accepted now
        assert fraud_server.process.poll() is None, "the server quit with a request in flight"
        sock.sendall(body[len(body) // 2 :])
        status, answer = read_response(sock)
    assert status == 200
    assert len(answer["results"]) == 50
    fraud_server.process.wait(timeout=GRACE_S)  # and then it stops by itself


class Load:
    """``CLIENTS`` threads sending one-row requests on keep-alive connections until stopped,
    as a load balancer would until it sees ``/readyz`` fail, or until a new connection is
    refused (``REFUSED``: the server listens no more); every outcome is kept. Entered once
    every client has had an answer."""

    REFUSED = "refused"

    def __init__(self, server: LocalServer) -> None:
        self.url = server.url + ROUTE
        self.body = {"transactions": transactions(1)}
        self.stop = threading.Event()
        self.outcomes: list[tuple[float, int | str]] = []  # (time sent, status or error)
        self.answered = threading.Barrier(CLIENTS + 1)
        self.threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]

    def _run(self) -> None:
        first = True
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    outcome: int | str = client.post(self.url, json=self.body).status_code
                except httpx.ConnectError:
                    self.outcomes.append((sent, self.REFUSED))
                    return
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                self.outcomes.append((sent, outcome))
                if first:
                    first = False
                    self.answered.wait(timeout=30)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        self.answered.wait(timeout=30)
        return self

    def wait_refused(self) -> None:
        """Block until every client has been refused a connection."""
        for thread in self.threads:
            thread.join(timeout=60)

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def readyz_status(server: LocalServer) -> int | str:
    try:
        return httpx.get(server.url + "/readyz", timeout=2).status_code
    except httpx.HTTPError as error:
        return type(error).__name__


def test_sigterm_under_load_loses_no_accepted_request(fraud_server: LocalServer) -> None:
    body = json.dumps({"transactions": transactions(20)}).encode()
    with socket.create_connection(("127.0.0.1", fraud_server.port), timeout=10) as held:
        held.sendall(request_head(ROUTE, len(body)) + body[: len(body) // 2])
        wait_in_progress(fraud_server, ROUTE, 1)
        with Load(fraud_server) as load:
            signalled = time.monotonic()
            os.kill(fraud_server.process.pid, signal.SIGTERM)
            readiness = readyz_status(fraud_server)
            readiness_after = time.monotonic() - signalled
            time.sleep(DELAY_S / 2)  # the load balancer takes a while to stop sending
        time.sleep(DELAY_S)  # past the delay: the server accepts no new connection
        held.sendall(body[len(body) // 2 :])
        held_status, held_answer = read_response(held)
    fraud_server.process.wait(timeout=GRACE_S)
    exited_after = time.monotonic() - signalled

    assert readiness == 503 and readiness_after < 2.0, (readiness, readiness_after)
    after_signal = [outcome for sent, outcome in load.outcomes if sent > signalled]
    assert after_signal, "no request was served during the delay"
    failed = [outcome for _, outcome in load.outcomes if outcome != 200]
    assert not failed, f"{len(failed)} of {len(load.outcomes)} requests lost: {failed[:5]}"
    assert held_status == 200 and len(held_answer["results"]) == 20
    assert exited_after < GRACE_S


def test_after_sigterm_no_keep_alive_client_is_reset(fraud_server: LocalServer) -> None:
    with Load(fraud_server) as load:
        os.kill(fraud_server.process.pid, signal.SIGTERM)
        load.wait_refused()  # the clients send until the server listens no more
    fraud_server.process.wait(timeout=GRACE_S)

    outcomes = [outcome for _, outcome in load.outcomes]
    assert outcomes.count(Load.REFUSED) == CLIENTS, outcomes[-20:]
    failed = [o for o in outcomes if o not in (200, Load.REFUSED)]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests reset: {failed[:5]}"
