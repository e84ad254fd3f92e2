"""What every route benchmark shares: start the service, run wrk cells, compare, report.

A benchmark describes its cells as ``Scenario``s (route, body, rows per request, and the
arrays one such request becomes, for the in-process ceiling); ``run_benchmark`` starts the
service on 127.0.0.1, measures ONNX Runtime alone on the same arrays, drives each scenario
with wrk at every concurrency, prints one line per cell and writes the figures as JSON. Each
cell also reads from the server's metrics how many rows its inference calls held on average
(the micro-batcher joins concurrent requests) and compares with ONNX Runtime alone at that
batch size too, so a ratio above 1 against the request-sized ceiling is explained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.ceiling import ceiling_rows_per_second
from bench.wrk import start_wrk
from core.model_store import load_model
from harness.http_checks import metric_value
from harness.local_server import LocalServer
from service.batching import Arrays

CONCURRENCY = (1, 16, 64)


@dataclass(frozen=True)
class Scenario:
    """One kind of request: ``rows`` inputs per request, ``inputs`` their graph arrays."""

    label: str
    model_tag: str
    route: str
    body: bytes
    rows: int
    inputs: Arrays
    content_type: str = "application/json"


def parse_args(name: str, description: str | None, argv: list[str] | None) -> argparse.Namespace:
    """The flags every benchmark takes."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per cell")
    parser.add_argument("--workers", type=int, default=1, help="BentoML worker processes")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(f"reports/bench/{name}.json"),
        help="where to write the figures as JSON",
    )
    return parser.parse_args(argv)


def run_benchmark(
    name: str, scenarios: list[Scenario], args: argparse.Namespace, areas: str
) -> list[dict]:
    """Serve ``areas`` (``DLSERVE_MODELS``) and measure every scenario at every concurrency."""
    env = {"DLSERVE_WORKERS": str(args.workers), "DLSERVE_PROVIDER": "cpu", "DLSERVE_MODELS": areas}
    figures = []
    with LocalServer(env) as server:
        server.wait("/readyz")
        for scenario in scenarios:
            model = load_model(scenario.model_tag, "cpu", intra_op_threads=1)
            ceiling, ceiling_ms = ceiling_rows_per_second(model, scenario.inputs)
            name = scenario.model_tag.split(":")[0]
            for connections in CONCURRENCY:
                calls_before = batch_calls(server, name)
                result = start_wrk(
                    server.url + scenario.route,
                    scenario.body,
                    connections,
                    args.seconds,
                    threads=2,
                    content_type=scenario.content_type,
                ).result()
                rows_per_second = result.requests_per_second * scenario.rows
                rows_per_call = per_call(calls_before, batch_calls(server, name), scenario.rows)
                joined, _ = ceiling_rows_per_second(model, tiled(scenario.inputs, rows_per_call))
                figures.append(
                    {
                        "scenario": scenario.label,
                        "route": scenario.route,
                        "rows_per_request": scenario.rows,
                        "concurrency": connections,
                        "requests_per_second": round(result.requests_per_second, 1),
                        "rows_per_second": round(rows_per_second, 1),
                        "p50_ms": result.p50_ms,
                        "p99_ms": result.p99_ms,
                        "non_2xx": result.non_2xx,
                        "socket_errors": result.socket_errors,
                        "ceiling_rows_per_second": round(ceiling, 1),
                        "ceiling_ms_per_call": round(ceiling_ms, 4),
                        "ratio_to_ceiling": round(rows_per_second / ceiling, 4),
                        "rows_per_call": rows_per_call,
                        "joined_ceiling_rows_per_second": round(joined, 1),
                        "ratio_to_joined_ceiling": round(rows_per_second / joined, 4),
                    }
                )
                print_row(figures[-1])
                drain(server.url, scenario)
    write_figures(args.out, args.workers, figures)
    print(f"bench {name}: {len(figures)} cells, figures in {args.out}")
    return figures


def batch_calls(server: LocalServer, model: str) -> tuple[float, float]:
    """``(inference calls, rows)`` the server has run for ``model`` so far (its metrics)."""
    return (
        metric_value(server, "dlserve_batch_rows_count", model=model),
        metric_value(server, "dlserve_batch_rows_sum", model=model),
    )


def per_call(before: tuple[float, float], after: tuple[float, float], rows: int) -> int:
    """Mean rows per inference call between two ``batch_calls`` readings (at least ``rows``):
    how far the micro-batcher joined concurrent requests."""
    calls, summed = after[0] - before[0], after[1] - before[1]
    return max(rows, round(summed / calls)) if calls else rows


def tiled(inputs: Arrays, rows: int) -> Arrays:
    """``inputs`` repeated to ``rows`` rows: the joined batch the service ran."""
    repeats = -(-rows // len(next(iter(inputs.values()))))
    return {name: np.concatenate([value] * repeats)[:rows] for name, value in inputs.items()}


def drain(url: str, scenario: Scenario) -> None:
    """Wait until requests wrk left queued are answered, so that cells do not overlap.

    One inference runs at a time per model, so a new request returns once the backlog is done.
    """
    request = httpx.post(
        url + scenario.route,
        content=scenario.body,
        timeout=300,
        headers={"content-type": scenario.content_type},
    )
    request.raise_for_status()


def print_row(cell: dict) -> None:
    """One table line per (scenario, concurrency) cell."""
    print(
        f"{cell['scenario']:<22} conc {cell['concurrency']:>3}  "
        f"req/s {cell['requests_per_second']:>8.1f}  rows/s {cell['rows_per_second']:>9.1f}  "
        f"p50 {cell['p50_ms']:>7.2f} ms  p99 {cell['p99_ms']:>7.2f} ms  "
        f"non-2xx {cell['non_2xx']}  ceiling rows/s {cell['ceiling_rows_per_second']:>10.1f}  "
        f"ratio {cell['ratio_to_ceiling']:.4f}  rows/call {cell['rows_per_call']}  "
        f"ratio at that size {cell['ratio_to_joined_ceiling']:.4f}",
        flush=True,
    )


def write_figures(path: Path, workers: int, figures: list[dict]) -> None:
    """The figures and the machine they came from, as JSON."""
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "workers": workers,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, "figures": figures}, indent=2))
