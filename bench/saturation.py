"""``python -m bench.saturation``: a route offered three times what a worker takes.

Serves the model store's fraud scorer (``--route fraud``: one-row requests) or text generator
(``--route completions``: 16-token completions, not streamed) on 127.0.0.1 (one worker), whose
admission bound (``DLSERVE_MAX_CONCURRENT_REQUESTS``, ``--limit``; for completions the
scheduler's ``DLSERVE_MAX_ACTIVE_SEQUENCES`` + ``DLSERVE_MAX_WAITING_SEQUENCES``) is the most
requests it handles at once, and drives them with wrk on ``--factor`` times that many
connections for ``--seconds``; with ``--baseline-connections N`` first on N connections for as
long (the unloaded rate, same server, same run) and reports goodput = accepted/s under the
flood / accepted/s at the baseline. Prints and writes: the answers by status and the share of
requests shed (503 or 429, from the server's request counters);
wrk's latency over all answers; the p50/p99 of accepted (200) and of refused (503, 429) requests
inside the server (BentoML's duration histogram: upper bucket edges); the same as seen by a
probe client that sends one request at a time beside the flood; and the server's memory (RSS
of all its processes) before, at its peak in each quarter of the flood, and 5 s after.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.soak import sample
from bench.wrk import start_wrk
from harness.local_server import LocalServer
from service.areas.fraud import json_rows
from training.fraud.simulator import simulate_transactions

ROUTES = {"fraud": "/v1/fraud/score", "completions": "/v1/completions"}
COMPLETION = {"prompt": "ROMEO:\n", "max_tokens": 16, "seed": 1}
SHED = ("503", "429")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.saturation", description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of the flood")
    parser.add_argument("--limit", type=int, default=64, help="DLSERVE_MAX_CONCURRENT_REQUESTS")
    parser.add_argument("--factor", type=int, default=3, help="connections = factor x limit")
    parser.add_argument("--route", choices=sorted(ROUTES), default="fraud", help="route driven")
    parser.add_argument(
        "--baseline-connections",
        type=int,
        default=0,
        help="first drive the route on this many connections (0: no baseline)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/bench/saturation.json"), help="figures (JSON)"
    )
    return parser.parse_args(argv)


def answers_by_status(server: LocalServer, route: str) -> dict[str, float]:
    """BentoML's count of answers on ``route`` so far, by HTTP status."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("bentoml_service_request_total{") and f'endpoint="{route}"' in line:
            code = re.search(r'http_response_code="(\d+)"', line).group(1)
            counts[code] = counts.get(code, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def duration_buckets(server: LocalServer, route: str) -> dict[tuple[str, float], float]:
    """BentoML's request duration histogram on ``route``: (status, bucket edge) -> count."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    buckets: dict[tuple[str, float], float] = {}
    for line in text.splitlines():
        if not line.startswith("bentoml_service_request_duration_seconds_bucket{"):
            continue
        if f'endpoint="{route}"' not in line:
            continue
        code = re.search(r'http_response_code="(\d+)"', line).group(1)
        edge = float(re.search(r'le="([^"]+)"', line).group(1))
        buckets[(code, edge)] = buckets.get((code, edge), 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_percentiles(
    before: dict[tuple[str, float], float], after: dict[tuple[str, float], float], code: str
) -> dict[str, float | None]:
    """p50 and p99 (ms, upper bucket edges) of the answers with ``code`` between two readings."""
    cumulative = sorted(
        (edge, count - before.get((c, edge), 0.0))
        for (c, edge), count in after.items()
        if c == code
    )
    total = cumulative[-1][1] if cumulative else 0.0
    found: dict[str, float | None] = {}
    for name, share in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        edge = next((e for e, n in cumulative if total and n >= share * total), None)
        found[name] = edge * 1000 if edge is not None else None
    return found


def worker_rss_mb(server: LocalServer) -> float:
    """Resident memory of the server's processes (arbiter and workers), in MB."""
    return sample(server, started=time.monotonic()).rss_mb


class Sampler(threading.Thread):
    """Every half second until stopped: the server's RSS (peak kept) and, one request at a time,
    the probe's latency by status class."""

    def __init__(self, server: LocalServer, route: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.server, self.route, self.body = server, route, body
        self.stop = threading.Event()
        self.memory: list[tuple[float, float]] = []  # (seconds since start, MB)
        self.latencies: dict[str, list[float]] = {"accepted": [], "refused": [], "other": []}

    def run(self) -> None:
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=self.server.url, timeout=30, headers=headers) as client:
            start = last_memory = time.monotonic()
            while not self.stop.is_set():
                if time.monotonic() - last_memory > 0.5:
                    last_memory = time.monotonic()
                    self.memory.append((last_memory - start, worker_rss_mb(self.server)))
                started = time.perf_counter()
                try:
                    status = client.post(self.route, content=self.body).status_code
                except httpx.HTTPError:
                    status = 0
                kind = {200: "accepted", 503: "refused", 429: "refused"}.get(status, "other")
                self.latencies[kind].append((time.perf_counter() - started) * 1000)


def percentiles(values: list[float]) -> dict[str, float | int]:
    """Count, p50 and p99 (ms) of ``values``."""
    if not values:
        return {"count": 0}
    p50, p99 = np.percentile(values, [50, 99])
    return {"count": len(values), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def quarter_peaks(samples: list[tuple[float, float]], seconds: int) -> list[float]:
    """The highest RSS sampled in each quarter of the flood (growth shows as a rising list)."""
    quarters: list[list[float]] = [[], [], [], []]
    for at, megabytes in samples:
        quarters[min(3, int(4 * at / seconds))].append(megabytes)
    return [round(max(q), 1) if q else 0.0 for q in quarters]


def accepted_per_second(
    server: LocalServer, route: str, body: bytes, connections: int, seconds: int
) -> float:
    """``route``'s 200 answers per second on ``connections`` wrk connections for ``seconds``."""
    before = answers_by_status(server, route).get("200", 0.0)
    start_wrk(server.url + route, body, connections, seconds, threads=2).result()
    return (answers_by_status(server, route).get("200", 0.0) - before) / seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    route = ROUTES[args.route]
    if args.route == "fraud":
        rows = json_rows(simulate_transactions(50, seed=7).head(1))
        body = json.dumps({"transactions": rows})
        env = {"DLSERVE_MODELS": "fraud", "DLSERVE_MAX_CONCURRENT_REQUESTS": str(args.limit)}
    else:
        body = json.dumps(COMPLETION)
        env = {"DLSERVE_MODELS": "text", "DLSERVE_MAX_CONCURRENT_REQUESTS": str(args.limit)}
    env["DLSERVE_PROVIDER"] = "cpu"
    connections = args.limit * args.factor
    with LocalServer(env) as server:
        server.wait("/readyz")
        for _ in range(20):
            httpx.post(
                server.url + route, content=body, headers={"content-type": "application/json"}
            )
        baseline = None
        if args.baseline_connections:
            baseline = accepted_per_second(
                server, route, body.encode(), args.baseline_connections, args.seconds
            )
        before_mb = worker_rss_mb(server)
        counts_before = answers_by_status(server, route)
        durations_before = duration_buckets(server, route)
        sampler = Sampler(server, route, body.encode())
        sampler.start()
        flood = start_wrk(
            server.url + route, body.encode(), connections, args.seconds, threads=2
        ).result()
        sampler.stop.set()
        sampler.join()
        time.sleep(5)
        after_mb = worker_rss_mb(server)
        counts_after = answers_by_status(server, route)
        durations_after = duration_buckets(server, route)
    answered = {code: counts_after[code] - counts_before.get(code, 0) for code in counts_after}
    total = sum(answered.values())
    figures = {
        "route": route,
        "limit": args.limit,
        "connections": connections,
        "seconds": args.seconds,
        "answers_by_status": answered,
        "shed_share": round(sum(answered.get(c, 0) for c in SHED) / total, 4) if total else None,
        "accepted_per_second": round(answered.get("200", 0) / args.seconds, 1),
        "baseline": None
        if baseline is None
        else {
            "connections": args.baseline_connections,
            "accepted_per_second": round(baseline, 1),
            "goodput": round(answered.get("200", 0) / args.seconds / baseline, 3)
            if baseline
            else None,
        },
        "wrk": flood.__dict__,
        "server_accepted": bucket_percentiles(durations_before, durations_after, "200"),
        "server_refused": {
            code: bucket_percentiles(durations_before, durations_after, code) for code in SHED
        },
        "probe_accepted": percentiles(sampler.latencies["accepted"]),
        "probe_refused": percentiles(sampler.latencies["refused"]),
        "probe_other": len(sampler.latencies["other"]),
        "rss_mb": {
            "before": round(before_mb, 1),
            "peak_by_quarter": quarter_peaks(sampler.memory, args.seconds),
            "after": round(after_mb, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
