"""``python -m bench.rollout_shadow``: what a shadow rollout adds to the served route's latency.

Two dlserve servers (fraud only, one worker each) over a copy of ``BENTOML_HOME``'s fraud
scorer and a second version of it registered beside (``harness.model_versions``): one with no
rollout, one shadowing every request on the second version (``DLSERVE_ROLLOUTS``, sample 1,
never promoted). wrk posts one transaction per request at concurrency 16 to each in turn,
alternating, ``--passes`` times; the figure is the median over passes of the shadow server's
p50 over the plain one's in the same pass (target: at most 1.10). The shadow runs each server
counted and dropped are read from ``/v1/models`` after the runs.
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

from bench.floor import hot_routes
from bench.sidebyside import busy
from bench.workloads import drive
from harness.local_server import LocalServer
from harness.model_versions import copy_store, new_version, store_of
from service.areas import fraud
from service.cpus import available_cpus

ROUTE = "fraud, 1 transaction"


def servers(home: Path, served: str, candidate: str) -> dict[str, LocalServer]:
    """The two servers (not started), by label."""
    base = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_WORKERS": "1",
        "DLSERVE_PINNED_MODELS": f"{fraud.MODEL}:{served}",
    }
    shadow = {"candidate": candidate, "mode": "shadow", "sample": 1.0, "promote_after": None}
    return {
        "no rollout": LocalServer(base),
        "shadow, every request": LocalServer(
            {**base, "DLSERVE_ROLLOUTS": json.dumps({fraud.MODEL: shadow})}
        ),
    }


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
        for label, server in servers(home, served, candidate).items():
            running[label] = server.wait("/readyz", timeout=120)
        for label, server in running.items():  # warm both up (and check they answer)
            result = drive(server.url, body, 16, 2)
            assert result.non_2xx == 0, f"{label}: {result.non_2xx} non-2xx answers"
        for run in range(1, args.passes + 1):
            for label, server in running.items():
                result = drive(server.url, body, 16, args.seconds)
                cells.append(
                    {
                        "pass": run,
                        "server": label,
                        "requests_per_second": round(result.requests_per_second, 1),
                        "p50_ms": result.p50_ms,
                        "p99_ms": result.p99_ms,
                        "non_2xx": result.non_2xx,
                    }
                )
                print(
                    f"pass {run} c16 {label:<24}{result.requests_per_second:>8.1f} req/s "
                    f"p50 {result.p50_ms:.2f} p99 {result.p99_ms:.2f} ms "
                    f"non-2xx {result.non_2xx}",
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
    plain, shadow = p50["no rollout"], p50["shadow, every request"]
    by_pass = {(c["pass"], c["server"]): c["p50_ms"] for c in cells}
    ratios = [
        by_pass[(run, "shadow, every request")] / by_pass[(run, "no rollout")]
        for run in range(1, args.passes + 1)
    ]
    ratio = float(np.median(ratios))
    print(
        f"\nc16 p50 (median of {args.passes} passes): no rollout {plain:.2f} ms, shadow "
        f"{shadow:.2f} ms; shadow over plain in each pass {[round(r, 3) for r in ratios]}, "
        f"median {ratio:.3f}x (target <= 1.10); load average {os.getloadavg()[0]:.2f}; "
        f"shadow runs: {shadows['shadow, every request']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "busy": reason,
        "cells": cells,
        "p50_ms": p50,
        "shadow_over_plain_p50_per_pass": [round(r, 3) for r in ratios],
        "shadow_over_plain_p50": round(ratio, 3),
        "shadows": shadows,
    }
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"bench rollout_shadow: figures in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
