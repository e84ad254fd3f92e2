"""Every request has a bounded cost: a token budget per sentiment request (and per micro-batch,
see test_batching), a decoded-pixel budget per image request, CPU work off the event loop,
ONNX Runtime's memory handed back after a large call, and decoding abandoned when the client
leaves."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.http_checks import assert_names_field_and_rule, metric_value
from harness.images import b64, encode
from harness.local_server import LocalServer

pytestmark = pytest.mark.http
DECODED = "dlserve_image_pixels_decoded_total"
LONG_TEXT = "good film " * 500  # far over 128 tokens: truncated to the model's maximum


@pytest.fixture(scope="module")
def server(stored_models: dict) -> Iterator[LocalServer]:
    """Only the sentiment and image areas: the worker's memory is mostly theirs."""
    with LocalServer(env={"DLSERVE_MODELS": "sentiment,image"}) as running:
        yield running.wait("/readyz")


def _descendants(root: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _worker(server: LocalServer) -> int:
    """The worker process: the descendant holding the models (the largest)."""
    return max(_descendants(server.process.pid), key=_rss_mb)


def _sentiment(server: LocalServer, texts: list[str]) -> httpx.Response:
    body = {"texts": texts, "model": "transformer"}
    return httpx.post(server.url + "/v1/sentiment", json=body, timeout=120)


def test_a_request_over_the_token_budget_gets_400_and_leaves_the_loop_free(
    server: LocalServer,
) -> None:
    answers: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answers.append(_sentiment(server, [LONG_TEXT] * 256)))
    sender.start()
    slowest = 0.0
    while sender.is_alive():  # tokenising 256 texts of 5,000 characters: ~1 s
        started = time.perf_counter()
        assert httpx.get(server.url + "/livez", timeout=30).status_code == 200
        slowest = max(slowest, time.perf_counter() - started)
        time.sleep(0.02)
    sender.join()
    assert_names_field_and_rule(answers[0], ["texts"], "at most 8192 tokens per request")
    assert "256 texts" not in answers[0].text and "32768 tokens" in answers[0].text
    assert slowest < 0.5, f"/livez waited {slowest:.2f}s while a request was tokenised"


def test_memory_is_back_near_its_baseline_after_a_maximal_request(server: LocalServer) -> None:
    assert _sentiment(server, ["a fine warm-up"] * 4).status_code == 200
    worker = _worker(server)
    baseline = _rss_mb(worker)
    maximal = _sentiment(server, [LONG_TEXT] * 64)  # 64 x 128 tokens: the whole budget
    assert maximal.status_code == 200, maximal.text
    assert all(result["truncated"] for result in maximal.json()["results"])
    after = _rss_mb(worker)
    assert after <= 1.2 * baseline, f"worker RSS {baseline:.0f} MB -> {after:.0f} MB"


def _blank_png(side: int) -> str:
    return b64(encode(np.zeros((side, side), dtype=np.uint8)))


def test_images_over_the_pixel_budget_are_refused_before_decoding(server: LocalServer) -> None:
    body = {"images": [_blank_png(4000)] * 4}  # 64M pixels, each image within its own limit
    decoded = metric_value(server, DECODED)
    response = httpx.post(server.url + "/v1/images/classify_batch", json=body, timeout=60)
    assert_names_field_and_rule(response, ["images"], "at most 50000000 pixels per request")
    assert "64000000 pixels" in response.text
    assert metric_value(server, DECODED) == decoded, "a refused image was decoded"


def test_decoding_stops_when_the_client_leaves(server: LocalServer) -> None:
    body = httpx.Request(
        "POST", "/", json={"images": [_blank_png(2000)] * 12}
    ).content  # 48M pixels: within the budget, about a second of decoding
    head = (
        f"POST /v1/images/classify_batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    decoded = metric_value(server, DECODED)
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(head + body)
        time.sleep(0.15)
    deadline = time.monotonic() + 10
    while "the client left; its work was abandoned" not in server.logs():
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.1)
    # the decoding thread stops before its next image: at most one more after the log line
    images = (metric_value(server, DECODED) - decoded) / 2000**2
    assert images < 12, f"all {images:.0f} images were decoded for a client that had left"
