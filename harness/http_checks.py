"""Assertions shared by the HTTP tests of every route."""

from __future__ import annotations

import re
import time

import httpx

from harness.local_server import LocalServer


def assert_names_field_and_rule(response: httpx.Response, loc: list, message: str) -> None:
    """A 400 whose ``detail`` has an entry at ``loc`` whose message contains ``message``."""
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(entry["loc"] == loc and message in entry["msg"] for entry in detail), detail


def metric_value(server: LocalServer, name: str, **labels: str) -> float:
    """The value of the series ``name{labels}`` on ``/metrics`` (0 when it is absent)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def series_sum(server: LocalServer, name: str, **labels: str) -> float:
    """The sum of every series ``name`` on ``/metrics`` whose labels include ``labels``."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1).split(",") for k, v in labels.items()):
            total += float(match.group(2))
    return total


UNFINISHED = frozenset({"pending", "in_progress"})


def batch_job_answer(server: LocalServer | str, task_id: str) -> httpx.Response:
    """The final ``/get`` answer of batch job ``task_id`` on ``server`` (or its URL): ``/status``
    polled until the job has ended (neither ``pending`` nor ``in_progress``), at most two
    minutes."""
    route = (server if isinstance(server, str) else server.url) + "/v1/batch/jobs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(route + "/status", params={"task_id": task_id}, timeout=30).json()
        if status["status"] not in UNFINISHED:
            break
        time.sleep(0.2)
    return httpx.get(route + "/get", params={"task_id": task_id}, timeout=30)
