"""``python -m bench.floor``: what dlserve's server stack costs before any model work.

A no-op route in dlserve's own server (``bench/noop_area.py``, served by ``bentoml serve``
like every route) under BentoML's former per-request extras (access log and tracing on), under
dlserve's defaults (both off) and with BentoML's request metrics off too; beside the same
no-op as a plain Starlette app under uvicorn. Same run, alternating passes, wrk at
concurrency 1 and 16, one worker and one per CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.noop_area import ROUTE
from bench.sidebyside import busy, wait_until_up
from bench.wrk import start_wrk
from service.cpus import available_cpus
from tests.local_server import REPOSITORY, LocalServer, free_port

BODY = b'{"x": 1}'
CONFIGURATIONS = {
    "BentoML's extras on (access log, tracing, request metrics)": {
        "DLSERVE_ACCESS_LOG": "true",
        "DLSERVE_TRACING": "true",
    },
    "dlserve defaults (access log, tracing off)": {},
    "all of BentoML's extras off": {"DLSERVE_REQUEST_METRICS": "false"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/floor.json"))
    args = parser.parse_args(argv)
    cpus = available_cpus()
    reason = busy(cpus)
    if reason and not args.force:
        print(f"bench: refusing to measure on a busy machine ({reason}); --force to run anyway")
        return 2
    targets: dict[str, str] = {}
    servers: list[LocalServer] = []
    plain: list[subprocess.Popen] = []
    try:
        for workers in sorted({1, cpus}):
            for label, env in CONFIGURATIONS.items():
                server = LocalServer(
                    {
                        "DLSERVE_AREA_MODULES": "bench.noop_area",
                        "DLSERVE_MODELS": "noop",
                        "DLSERVE_WORKERS": str(workers),
                        **env,
                    }
                )
                servers.append(server)
                targets[f"dlserve, {label}, {workers} worker(s)"] = server.url
            port = free_port()
            plain.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "uvicorn", "bench.noop_area:plain_app"),
                        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
                        *("--log-level", "warning", "--no-access-log"),
                    ],
                    cwd=REPOSITORY,
                    start_new_session=True,
                )
            )
            targets[f"plain Starlette under uvicorn, {workers} worker(s)"] = (
                f"http://127.0.0.1:{port}"
            )
        for server in servers:
            server.wait("/readyz")
        for process, url in zip(
            plain, [u for n, u in targets.items() if "plain" in n], strict=True
        ):
            wait_until_up(url + "/ping", process)
        cells = []
        for run in range(1, args.passes + 1):
            for connections in (1, 16):
                for name, url in targets.items():
                    result = start_wrk(
                        url + ROUTE, BODY, connections, args.seconds, threads=2
                    ).result()
                    cells.append(
                        {
                            "pass": run,
                            "server": name,
                            "concurrency": connections,
                            "requests_per_second": round(result.requests_per_second, 1),
                            "p50_ms": result.p50_ms,
                            "p99_ms": result.p99_ms,
                            "non_2xx": result.non_2xx,
                        }
                    )
                    print(
                        f"pass {run} c{connections:<3} {name:<90} "
                        f"{result.requests_per_second:>8.1f} req/s p50 {result.p50_ms:.2f} "
                        f"p99 {result.p99_ms:.2f} ms non-2xx {result.non_2xx}",
                        flush=True,
                    )
    finally:
        for server in servers:
            server.stop()
        for process in plain:
            process.terminate()
            process.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpus": cpus, "busy": reason, "cells": cells}, indent=2))
    print(f"bench floor: figures in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
