"""``python -m bench.batch``: Parquet -> Parquet fraud scoring beside the ONNX Runtime ceiling.

Scores ``--input`` (default: a simulated file of ``--rows`` rows) with the local engine, file
reading, validation and writing included, and measures in the same run ONNX Runtime alone on
one chunk of the same batch size (``bench.ceiling``). With ``--engine ray`` it also times the
Ray engine on the same file. Prints rows/s and the ratio; writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.ceiling import ceiling_rows_per_second
from bench.transactions_file import write_transactions
from service.batch.adapter import find_adapter
from service.batch.job import JobConfig, load_for_batch, run_local


def ceiling(batch_size: int, source: Path) -> float:
    """In-process ONNX Runtime rows/s on the file's first ``batch_size`` rows."""
    adapter = find_adapter("fraud")
    model = load_for_batch(adapter)
    table = pq.ParquetFile(source).read_row_group(0).slice(0, batch_size)
    columns, _ = adapter.validate(table, model)
    inputs, _ = adapter.encode(columns, model)
    return ceiling_rows_per_second(model.model, inputs, seconds=3.0)[0]


def timed_job(config: JobConfig, engine: str) -> tuple[float, int]:
    """``(seconds, rows)`` of one whole job on ``engine``."""
    started = time.perf_counter()
    if engine == "ray":
        from service.batch.ray_engine import run_ray

        summary = run_ray(config, None)
    else:
        summary = run_local(config)
    return time.perf_counter() - started, summary.scored + summary.rejected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__)
    parser.add_argument("--input", type=Path, help="Parquet file (default: simulate one)")
    parser.add_argument("--rows", type=int, default=500_000, help="rows of the simulated file")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=find_adapter("fraud").batch_size,
        help="rows per chunk / ONNX call (default: the fraud model's batch default)",
    )
    parser.add_argument("--ray", action="store_true", help="also time the Ray engine")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/batch.json"), help="JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dlserve-bench-") as scratch:
        source = args.input or Path(scratch) / "transactions.parquet"
        if args.input is None:
            write_transactions(source, args.rows, 250_000, quiet=True)
        config = JobConfig(
            "fraud", source, Path(scratch) / "scores.parquet", args.batch_size, quiet=True
        )
        figures = {
            "batch_size": args.batch_size,
            "ceiling_rows_per_second": ceiling(args.batch_size, source),
        }
        for engine in ("local", "ray") if args.ray else ("local",):
            seconds, rows = timed_job(config, engine)
            figures[f"{engine}_rows_per_second"] = rows / seconds
            figures[f"{engine}_seconds"] = seconds
            figures[f"{engine}_ratio_to_ceiling"] = (
                rows / seconds / figures["ceiling_rows_per_second"]
            )
            print(
                f"{engine}: {rows} rows in {seconds:.1f}s = {rows / seconds:,.0f} rows/s, "
                f"{figures[f'{engine}_ratio_to_ceiling']:.1%} of the ceiling "
                f"({figures['ceiling_rows_per_second']:,.0f} rows/s at batch "
                f"{args.batch_size})",
                flush=True,
            )
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
