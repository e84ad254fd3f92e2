"""The soak's pacing and verdict (``bench.soak``), and wrk's paced mode it relies on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import soak
from bench.soak import Pace, Sample, judge
from bench.wrk import start_wrk


def test_a_pace_offers_the_rate_and_corrects_for_latency() -> None:
    assert Pace.for_rate(400) == Pace(connections=10, delay_ms=25)
    assert Pace.for_rate(4) == Pace(connections=1, delay_ms=250)
    # 10 connections waiting 25 ms achieved 300/s: answers took 8.3 ms, so wait 16.7 ms
    assert Pace(10, 25).corrected(400, achieved=300) == Pace(10, 17)
    assert Pace(1, 5).corrected(1000, achieved=100).delay_ms == 1  # never below 1 ms


def samples(rss: list[float], fds: list[int], pids: list[tuple[int, ...]]) -> list[Sample]:
    """One sample every 30 s."""
    rows = zip(rss, fds, pids, strict=True)
    return [Sample(i * 30.0, r, f, 10, p) for i, (r, f, p) in enumerate(rows)]


FLAT = samples([500.0] * 21, [90] * 21, [(1, 2)] * 21)


def test_flat_memory_and_descriptors_pass() -> None:
    verdict = judge(FLAT, window_s=60, max_growth=0.10, fd_slack=0)
    assert verdict.passed and verdict.memory_growth == 0 and verdict.fds_last == 90


def test_growth_replaced_workers_and_descriptor_leaks_fail() -> None:
    # medians of the first and last minute: 503 and 557 MB
    growing = samples([500.0 + 3 * i for i in range(21)], [90] * 21, [(1, 2)] * 21)
    verdict = judge(growing, window_s=60, max_growth=0.10, fd_slack=0)
    assert not verdict.passed and verdict.memory_growth == pytest.approx(54 / 503, abs=1e-3)
    leaking = samples([500.0] * 21, [90 + i for i in range(21)], [(1, 2)] * 21)
    assert not judge(leaking, window_s=60, max_growth=0.10, fd_slack=0).passed
    assert judge(leaking, window_s=60, max_growth=0.10, fd_slack=20).passed
    restarted = samples([500.0] * 21, [90] * 21, [(1, 2)] * 20 + [(1, 3)])
    verdict = judge(restarted, window_s=60, max_growth=0.10, fd_slack=0)
    assert verdict.workers_replaced and not verdict.passed


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        """Silent."""


@pytest.fixture
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_paced_wrk_waits_after_each_answer(loopback: str) -> None:
    paced = start_wrk(loopback, b"{}", connections=2, seconds=2, delay_ms=200).result()
    # two connections, each at most one request per 200 ms, for 2 s
    assert 1 <= paced.requests <= 2 * (2000 // 200 + 1)
    assert paced.non_2xx == 0


def test_a_short_soak_drives_every_route_and_samples_the_server(
    stored_models: dict, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    seconds = ["--seconds", "6", "--probe-seconds", "1", "--calibrate-seconds", "1"]
    windows = ["--warmup-seconds", "1", "--sample-seconds", "1", "--window-seconds", "2"]
    # limits wide enough for a few seconds' noise; every answer must still be the expected one
    limits = ["--max-growth", "1.0", "--fd-slack", "100", "--workers", "1", "--quiet"]
    assert soak.main([*seconds, *windows, *limits, "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert {row["stream"] for row in figures["streams"]} == {s.label for s in soak.streams()}
    assert all(row["requests"] > 0 for row in figures["streams"])
    assert len(figures["samples"]) >= 3 and figures["verdict"]["memory_first_mb"] > 0
