"""``python -m bench.rollout_shadow``: what a shadow rollout adds to the served route's latency.

Two dlserve servers (fraud only, one worker each) over a copy of ``BENTOML_HOME``'s fraud
scorer and a second version of it registered beside (``harness.model_versions``): one with no
rollout, one shadowing every request on the second version (``DLSERVE_ROLLOUTS``, sample 1,
never promoted). wrk posts one transaction per request at concurrency 16 to each in turn,
alternating, ``--passes`` times; the figure is the median over passes of the shadow server's
p50 over the plain one's in the same pass (target: at most 1.10). With ``--before DIR`` (a
checkout of an earlier dlserve, e.g. ``git archive main | tar -x -C DIR``) a third server runs
the same shadow rollout on that code, measured in the same passes. The shadowed requests each
server compared and dropped (and the candidate calls they took) are read from ``/v1/models``
after the runs. Beside the p50s, each cell has the server's CPU seconds (all its processes)
per request: on a machine shared with other work, where the p50s swing with the neighbours,
the steadier figure of what a shadow costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.floor import hot_routes
from bench.sidebyside import busy
from bench.workloads import drive
from harness.local_server import LocalServer
from harness.model_versions import copy_store, new_version, store_of
from service.areas import fraud
from service.cpus import available_cpus

ROUTE = "fraud, 1 transaction"
PLAIN, SHADOW = "no rollout", "shadow, every request"


def servers(home: Path, served: str, candidate: str, before: Path | None) -> dict[str, LocalServer]:
    """The servers (not started), by label: no rollout, shadow, and shadow on ``before``'s
    code."""
    base = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_WORKERS": "1",
        "DLSERVE_PINNED_MODELS": f"{fraud.MODEL}:{served}",
    }
    shadow = {"candidate": candidate, "mode": "shadow", "sample": 1.0, "promote_after": None}
    rollout = {"DLSERVE_ROLLOUTS": json.dumps({fraud.MODEL: shadow})}
    chosen = {PLAIN: LocalServer(base), SHADOW: LocalServer({**base, **rollout})}
    if before is not None:  # its own code first on the path, whatever this process's is
        chosen[before_label(before)] = LocalServer(
            {**base, **rollout, "PYTHONPATH": str(before.absolute())}, cwd=before.absolute()
        )
    return chosen


def before_label(before: Path) -> str:
    return f"shadow, every request, before ({before.name})"


def cpu_seconds(server: LocalServer) -> float:
    """CPU seconds (user and system) the server's processes used so far."""
    root = psutil.Process(server.process.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def shadow_counts(server: LocalServer) -> dict | None:
    models = httpx.get(server.url + "/v1/models", timeout=30).json()["models"]
    rollout = next(m for m in models if m["name"] == fraud.MODEL)["rollout"]
    return None if rollout is None else {"state": rollout["state"], **rollout["shadow"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_shadow", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/rollout_shadow.json"))
    parser.add_argument(
        "--before", type=Path, help="an earlier dlserve checkout to shadow with in the same passes"
    )
    args = parser.parse_args(argv)
    reason = busy(available_cpus())
    if reason and not args.force:
        print(f"bench: refusing to measure on a busy machine ({reason}); --force to run anyway")
        return 2
    shared = store_of(Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml"))
    home = Path(tempfile.mkdtemp(prefix="dlserve-bench-rollout-"))
    body = hot_routes()[ROUTE]
    cells: list[dict] = []
    running: dict[str, LocalServer] = {}
    try:
        store = copy_store(shared, store_of(home), [fraud.MODEL])
        served = (store / fraud.MODEL / "latest").read_text().strip()
        candidate = new_version(store, fraud.MODEL)
        for label, server in servers(home, served, candidate, args.before).items():
            running[label] = server.wait("/readyz", timeout=120)
        for label, server in running.items():  # warm each up (and check it answers)
            result = drive(server.url, body, 16, 2)
            assert result.non_2xx == 0, f"{label}: {result.non_2xx} non-2xx answers"
        for run in range(1, args.passes + 1):
            for label, server in running.items():
                cpu = cpu_seconds(server)
                result = drive(server.url, body, 16, args.seconds)
                requests = max(result.requests_per_second * args.seconds, 1)
                cpu_us = (cpu_seconds(server) - cpu) / requests * 1e6
                cells.append(
                    {
                        "pass": run,
                        "server": label,
                        "requests_per_second": round(result.requests_per_second, 1),
                        "p50_ms": result.p50_ms,
                        "p99_ms": result.p99_ms,
                        "non_2xx": result.non_2xx,
                        "cpu_us_per_request": round(cpu_us, 1),
                        "load_1m": round(os.getloadavg()[0], 2),
                    }
                )
                print(
                    f"pass {run} c16 {label:<48}{result.requests_per_second:>8.1f} req/s "
                    f"p50 {result.p50_ms:.2f} p99 {result.p99_ms:.2f} ms cpu {cpu_us:.0f} us/req "
                    f"non-2xx {result.non_2xx} (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
        shadows = {label: shadow_counts(server) for label, server in running.items()}
    finally:
        for server in running.values():
            server.stop()
        shutil.rmtree(home, ignore_errors=True)
    p50 = {
        label: float(np.median([c["p50_ms"] for c in cells if c["server"] == label]))
        for label in running
    }
    by_pass = {(c["pass"], c["server"]): c["p50_ms"] for c in cells}
    ratios = {
        label: [by_pass[(run, label)] / by_pass[(run, PLAIN)] for run in range(1, args.passes + 1)]
        for label in running
        if label != PLAIN
    }
    cpu = {
        label: float(np.median([c["cpu_us_per_request"] for c in cells if c["server"] == label]))
        for label in running
    }
    print(
        f"\nc16 p50 (median of {args.passes} passes): no rollout {p50[PLAIN]:.2f} ms, "
        f"cpu {cpu[PLAIN]:.0f} us/request"
    )
    for label, per_pass in ratios.items():
        print(
            f"{label}: p50 {p50[label]:.2f} ms; over plain in each pass "
            f"{[round(r, 3) for r in per_pass]}, median {float(np.median(per_pass)):.3f}x "
            f"(target <= 1.10); cpu {cpu[label]:.0f} us/request "
            f"({cpu[label] / cpu[PLAIN]:.3f}x); shadowed requests: {shadows[label]}"
        )
    print(f"load average {os.getloadavg()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "busy": reason,
        "cells": cells,
        "p50_ms": p50,
        "cpu_us_per_request": cpu,
        "over_plain_p50_per_pass": {
            label: [round(r, 3) for r in per_pass] for label, per_pass in ratios.items()
        },
        "over_plain_p50": {
            label: round(float(np.median(per_pass)), 3) for label, per_pass in ratios.items()
        },
        "shadows": shadows,
        "load_average_at_end": os.getloadavg(),
    }
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"bench rollout_shadow: figures in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
