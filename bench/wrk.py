"""Drive one POST route with ``wrk`` (bounded in time, 127.0.0.1 only) and parse its report.

``start_wrk`` starts wrk without waiting, so several routes can be driven at once;
``WrkRun.result()`` waits and parses. wrk runs closed-loop: every connection sends its next
request as soon as the previous answer arrives. With ``delay_ms`` each connection waits that
long after an answer (wrk's Lua ``delay()``), which holds the offered rate near
``connections / (delay + latency)``: the way ``bench.soak`` offers a fixed share of capacity.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""

_DELAY = """
function delay()
  return {delay_ms}
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    requests: int


def _milliseconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse(report: str) -> WrkResult:
    """Requests/s, p50/p99 latency, request and error counts from ``wrk --latency`` output."""
    percentiles = {
        int(p): _milliseconds(v, u)
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", report, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        requests=int(re.search(r"^\s*(\d+) requests in ", report, re.M).group(1)),
    )


class WrkRun:
    """A wrk process started by ``start_wrk``; its script lives until ``result()``."""

    def __init__(self, command: list[str], scratch: tempfile.TemporaryDirectory, seconds: int):
        self._scratch = scratch
        self._timeout = seconds + 30
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def result(self) -> WrkResult:
        """Wait for wrk to finish and parse its report; raise if it failed."""
        try:
            report, errors = self._process.communicate(timeout=self._timeout)
        finally:
            self._scratch.cleanup()
        if self._process.returncode != 0:
            raise RuntimeError(f"wrk exited {self._process.returncode}: {errors.strip()}")
        return parse(report)


def start_wrk(
    url: str,
    body: bytes,
    connections: int,
    seconds: int,
    threads: int = 1,
    content_type: str = "application/json",
    delay_ms: int | None = None,
) -> WrkRun:
    """Start POSTing ``body`` (of ``content_type``) to ``url`` for ``seconds`` on
    ``connections``, each waiting ``delay_ms`` after every answer when given."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only send traffic to 127.0.0.1")
    scratch = tempfile.TemporaryDirectory()
    body_path = Path(scratch.name) / "body"
    body_path.write_bytes(body)
    script = Path(scratch.name) / "post.lua"
    lua = _LUA.format(body=body_path, content_type=content_type)
    script.write_text(lua + (_DELAY.format(delay_ms=delay_ms) if delay_ms is not None else ""))
    command = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    return WrkRun(command, scratch, seconds)
