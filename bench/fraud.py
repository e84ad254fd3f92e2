"""``python -m bench.fraud``: POST /v1/fraud/score under wrk vs the in-process ceiling.

Starts the service on 127.0.0.1 over the model store's ``fraud-scorer:latest``, drives it with
wrk for 1-row and 100-row requests at concurrency 1, 16 and 64, and prints rows/s, p50 and p99
latency beside ONNX Runtime's own rows/s for the same batch size, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from bench.ceiling import ceiling_rows_per_second
from bench.wrk import run_wrk
from service.fraud import SPEC, Transaction, json_rows, to_arrays
from service.local_server import LocalServer
from service.model_store import load_model
from training.fraud.simulator import simulate_transactions

ROWS_PER_REQUEST = (1, 100)
CONCURRENCY = (1, 16, 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fraud", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per cell")
    parser.add_argument("--workers", type=int, default=1, help="BentoML worker processes")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/bench/fraud.json"),
        help="where to write the figures as JSON",
    )
    args = parser.parse_args(argv)
    model = load_model(SPEC.tag, "cpu", intra_op_threads=1)
    rows = json_rows(simulate_transactions(1000, seed=7))
    figures = []
    env = {"DLSERVE_WORKERS": str(args.workers), "DLSERVE_PROVIDER": "cpu"}
    with LocalServer(env) as server:
        server.wait("/readyz")
        for size in ROWS_PER_REQUEST:
            batch = rows[:size]
            body = json.dumps({"transactions": batch}).encode()
            inputs = to_arrays([Transaction(**row) for row in batch])
            ceiling, ceiling_ms = ceiling_rows_per_second(model, inputs)
            for connections in CONCURRENCY:
                result = run_wrk(
                    server.url + SPEC.route, body, connections, args.seconds, threads=2
                )
                figures.append(
                    {
                        "rows_per_request": size,
                        "concurrency": connections,
                        "requests_per_second": round(result.requests_per_second, 1),
                        "rows_per_second": round(result.requests_per_second * size, 1),
                        "p50_ms": result.p50_ms,
                        "p99_ms": result.p99_ms,
                        "non_2xx": result.non_2xx,
                        "socket_errors": result.socket_errors,
                        "ceiling_rows_per_second": round(ceiling, 1),
                        "ceiling_ms_per_call": round(ceiling_ms, 4),
                        "ratio_to_ceiling": round(result.requests_per_second * size / ceiling, 4),
                    }
                )
                print_row(figures[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "workers": args.workers,
    }
    args.out.write_text(json.dumps({"machine": machine, "figures": figures}, indent=2))
    print(f"bench fraud: {len(figures)} cells, figures in {args.out}")
    return 0


def print_row(cell: dict) -> None:
    """One table line per (rows per request, concurrency) cell."""
    print(
        f"rows/req {cell['rows_per_request']:>4}  conc {cell['concurrency']:>3}  "
        f"req/s {cell['requests_per_second']:>8.1f}  rows/s {cell['rows_per_second']:>9.1f}  "
        f"p50 {cell['p50_ms']:>7.2f} ms  p99 {cell['p99_ms']:>7.2f} ms  "
        f"non-2xx {cell['non_2xx']}  ceiling rows/s {cell['ceiling_rows_per_second']:>10.1f}  "
        f"ratio {cell['ratio_to_ceiling']:.4f}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
