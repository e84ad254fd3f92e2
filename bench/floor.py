"""``python -m bench.floor``: what dlserve's server stack costs before any model work, and
what its hot routes cost beside it.

A no-op route in dlserve's own server (``bench/noop_area.py``, served by ``bentoml serve`` like
every route) under BentoML's former per-request extras (access log and tracing on), under
dlserve's defaults (both off, the lean path on: the no-op's area is made a lean one), with the
lean path off (BentoML's stack) and with BentoML's request metrics off too; beside the same
no-op as a plain Starlette app under uvicorn. The servers with dlserve's defaults and with the lean
path off also serve the fraud model (when ``BENTOML_HOME``'s store has it) and are driven on its
hot routes with one transaction per request (``/v1/fraud/score`` and the V2 ``infer`` route):
each route's cost ratio is the no-op's requests/s over the route's, in the same server (cost per
request relative to the no-op's). ``--before DIR`` adds a checkout of an earlier dlserve, with
its defaults, on the same three routes. Same run, alternating passes, wrk at concurrency 1 and
16, one worker and one per CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.noop_area import ROUTE
from bench.sidebyside import busy, wait_until_up
from bench.workloads import Body, drive, v2_body
from core.model_store import stored_model_exists
from harness.local_server import REPOSITORY, LocalServer, free_port
from service.areas import fraud
from service.cpus import available_cpus
from training.fraud.simulator import simulate_transactions

NOOP = "no-op"
NOOP_BODY = Body(ROUTE, b'{"x": 1}')
DEFAULTS = "dlserve defaults (access log, tracing off; lean path)"
LEAN_OFF = "lean path off (BentoML's stack)"
CONFIGURATIONS = {
    "BentoML's extras on (access log, tracing, request metrics)": {
        "DLSERVE_ACCESS_LOG": "true",
        "DLSERVE_TRACING": "true",
    },
    DEFAULTS: {},
    LEAN_OFF: {"DLSERVE_LEAN_PATH": "false"},
    "all of BentoML's extras off": {"DLSERVE_REQUEST_METRICS": "false"},
}

HOT = (DEFAULTS, LEAN_OFF)  # the configurations also driven on the hot routes


@dataclass(frozen=True)
class Target:
    """One server and the routes it is driven on (route label -> request)."""

    name: str
    url: str
    routes: dict[str, Body]


def hot_routes() -> dict[str, Body]:
    """The fraud routes with one transaction per request (bench.workloads' transaction), named
    and V2."""
    row = fraud.json_rows(simulate_transactions(200, seed=7))[:1]
    named = Body("/v1/fraud/score", json.dumps({"transactions": row}).encode())
    inputs = fraud.to_arrays([fraud.Transaction(**row[0])])
    return {"fraud, 1 transaction": named, "fraud V2, 1 transaction": v2_body(fraud.MODEL, inputs)}


def cost_ratios(cells: list[dict]) -> list[dict]:
    """One row per (server, concurrency, route): passes averaged, and ``cost_ratio`` = the
    no-op route's requests/s over the route's in the same server and concurrency (``None``
    where that server has no no-op cell)."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for cell in cells:
        grouped[(cell["server"], cell["concurrency"], cell["route"])].append(cell)
    rows = [
        {
            "server": server,
            "concurrency": concurrency,
            "route": route,
            "requests_per_second": round(
                float(np.mean([r["requests_per_second"] for r in runs])), 1
            ),
            "p50_ms": round(float(np.mean([r["p50_ms"] for r in runs])), 2),
            "p99_ms": round(float(np.mean([r["p99_ms"] for r in runs])), 2),
            "non_2xx": sum(r["non_2xx"] for r in runs),
        }
        for (server, concurrency, route), runs in grouped.items()
    ]
    noop = {
        (r["server"], r["concurrency"]): r["requests_per_second"]
        for r in rows
        if r["route"] == NOOP
    }
    for row in rows:
        floor = noop.get((row["server"], row["concurrency"]))
        rate = row["requests_per_second"]
        row["cost_ratio"] = round(floor / rate, 2) if floor and rate else None
    return rows


def dlserve(
    name: str, workers: int, env: dict[str, str], routes: dict[str, Body], cwd: Path = REPOSITORY
) -> tuple[LocalServer, Target]:
    """A dlserve server with the no-op plug-in area (and the fraud model with ``routes``)."""
    models = ",".join(["noop", *(["fraud"] if len(routes) > 1 else [])])
    server = LocalServer(
        {
            "DLSERVE_AREA_MODULES": "bench.noop_area",
            "DLSERVE_MODELS": models,
            "DLSERVE_LEAN_AREAS": models,  # the no-op too, where the lean path is on
            "DLSERVE_WORKERS": str(workers),
            **env,
        },
        cwd=cwd,
    )
    return server, Target(f"dlserve, {name}, {workers} worker(s)", server.url, routes)


def check(targets: list[Target]) -> None:
    """One request per target and route answered 200 (wrk only counts non-2xx)."""
    for target in targets:
        for label, body in target.routes.items():
            answer = httpx.post(
                target.url + body.route,
                content=body.content,
                headers={"content-type": body.content_type},
                timeout=60,
            )
            if answer.status_code != 200:
                raise RuntimeError(f"{target.name}, {label}: {answer.status_code} {answer.text}")


def measure(targets: list[Target], passes: int, seconds: int) -> list[dict]:
    cells = []
    for run in range(1, passes + 1):
        for connections in (1, 16):
            for target in targets:
                for label, body in target.routes.items():
                    result = drive(target.url, body, connections, seconds)
                    cells.append(
                        {
                            "pass": run,
                            "server": target.name,
                            "route": label,
                            "concurrency": connections,
                            "requests_per_second": round(result.requests_per_second, 1),
                            "p50_ms": result.p50_ms,
                            "p99_ms": result.p99_ms,
                            "non_2xx": result.non_2xx,
                        }
                    )
                    print(
                        f"pass {run} c{connections:<3} {target.name:<90} {label:<24}"
                        f"{result.requests_per_second:>8.1f} req/s p50 {result.p50_ms:.2f} "
                        f"p99 {result.p99_ms:.2f} ms non-2xx {result.non_2xx}",
                        flush=True,
                    )
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier dlserve (e.g. `git worktree add --detach DIR main`) "
        "served with its defaults, one worker per CPU, on the no-op and hot routes",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench/floor.json"))
    args = parser.parse_args(argv)
    cpus = available_cpus()
    reason = busy(cpus)
    if reason and not args.force:
        print(f"bench: refusing to measure on a busy machine ({reason}); --force to run anyway")
        return 2
    noop = {NOOP: NOOP_BODY}
    hot = {**noop, **hot_routes()} if stored_model_exists(f"{fraud.MODEL}:latest") else noop
    if hot is noop:
        print(f"bench: {fraud.MODEL} is not in BENTOML_HOME's store: no hot routes", flush=True)
    targets: list[Target] = []
    servers: list[LocalServer] = []
    plain: list[tuple[subprocess.Popen, Target]] = []
    try:
        for workers in sorted({1, cpus}):
            for label, env in CONFIGURATIONS.items():
                server, target = dlserve(label, workers, env, hot if label in HOT else noop)
                servers.append(server)
                server.wait("/readyz")  # one at a time: ports picked while others bind collide
                targets.append(target)
            port = free_port()
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "bench.noop_area:plain_app"),
                    *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
                    *("--log-level", "warning", "--no-access-log"),
                ],
                cwd=REPOSITORY,
                start_new_session=True,
            )
            name = f"plain Starlette under uvicorn, {workers} worker(s)"
            plain.append((process, Target(name, f"http://127.0.0.1:{port}", noop)))
            wait_until_up(plain[-1][1].url + "/ping", process)
            targets.append(plain[-1][1])
        if args.before is not None:
            label = f"before ({args.before.name}), its defaults"
            env = {"PYTHONDONTWRITEBYTECODE": "1"}
            server, target = dlserve(label, cpus, env, hot, cwd=args.before.absolute())
            servers.append(server)
            server.wait("/readyz")
            targets.append(target)
        check(targets)
        cells = measure(targets, args.passes, args.seconds)
    finally:
        for server in servers:
            server.stop()
        for process, _ in plain:
            process.terminate()
            process.wait(timeout=30)
    rows = cost_ratios(cells)
    print("\npasses averaged; cost: the no-op's req/s over the route's, same server")
    for row in sorted(rows, key=lambda r: (r["concurrency"], r["server"])):
        ratio = f"{row['cost_ratio']:.2f}x" if row["cost_ratio"] is not None else "-"
        print(
            f"c{row['concurrency']:<3} {row['server']:<90} {row['route']:<24}"
            f"{row['requests_per_second']:>8.1f} req/s p50 {row['p50_ms']:.2f} "
            f"p99 {row['p99_ms']:.2f} ms cost {ratio}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"cpus": cpus, "busy": reason, "cells": cells, "summary": rows}
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"bench floor: figures in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
