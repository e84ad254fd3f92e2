"""``python -m bench.batch``: Parquet -> Parquet fraud scoring beside the ONNX Runtime ceiling.

Scores ``--input`` (default: a simulated file of ``--rows`` rows) with the local engine, file
reading, validation and writing included, and measures in the same run ONNX Runtime alone on
one chunk of the same batch size (``bench.ceiling``). With ``--ray`` it also times the Ray
engine on the same file. Prints rows/s and the ratio; writes the figures as JSON.

``--before PATH`` also compares two checkouts on the same file: ``python -m service.batch`` run
as a subprocess from ``PATH`` (older code, e.g. ``git archive COMMIT | tar -x -C PATH``) and from
this checkout, alternately (before, after, before, after, ...), same interpreter, environment
and model store. Each pass's rows/s is the job's own, from the command's closing line; the
after/before ratio is of the mean rows/s over the passes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bench.ceiling import ceiling_rows_per_second
from bench.transactions_file import write_transactions
from harness.local_server import REPOSITORY
from service.batch.adapter import find_adapter
from service.batch.job import JobConfig, load_for_batch, run_local

# The command line's closing line (``Summary.line``): "batch MODEL:VERSION: N rows, S scored,
# R rejected in 2.1s (2,332,284 rows/s); output ..."
SUMMARY = re.compile(
    r"^batch \S+: (?P<rows>\d+) rows, \d+ scored, \d+ rejected in \S+s "
    r"\((?P<rate>[\d,]+) rows/s\)",
    re.MULTILINE,
)


def ceiling(batch_size: int, source: Path) -> float:
    """In-process ONNX Runtime rows/s on the file's first ``batch_size`` rows."""
    adapter = find_adapter("fraud")
    model = load_for_batch(adapter)
    table = pq.ParquetFile(source).read_row_group(0).slice(0, batch_size)
    columns, _ = adapter.validate(table, model)
    inputs, _ = adapter.encode(columns, model)
    return ceiling_rows_per_second(model.model, inputs, seconds=3.0, release_arena=False)[0]


def timed_job(config: JobConfig, engine: str) -> tuple[float, int]:
    """``(seconds, rows)`` of one whole job on ``engine``."""
    started = time.perf_counter()
    if engine == "ray":
        from service.batch.ray_engine import run_ray

        summary = run_ray(config, None)
    else:
        summary = run_local(config)
    return time.perf_counter() - started, summary.scored + summary.rejected


@dataclass(frozen=True)
class CliPass:
    """One ``python -m service.batch`` run of a checkout: the job's rows and rows/s (its own
    clock: model load, reading, scoring, writing) and the whole process's wall seconds
    (interpreter start and imports too)."""

    checkout: str  # "before" or "after"
    rows: int
    rows_per_second: float
    wall_seconds: float


def parse_summary(stdout: str) -> tuple[int, float]:
    """``(rows, rows/s)`` from the command line's closing summary; ``ValueError`` if absent."""
    found = SUMMARY.search(stdout)
    if found is None:
        raise ValueError(f"no batch summary line in the command's output: {stdout[-500:]!r}")
    return int(found["rows"]), float(found["rate"].replace(",", ""))


def checkout_environment(checkout: Path) -> dict[str, str]:
    """This process's environment with ``checkout`` first on the import path."""
    return {**os.environ, "PYTHONPATH": str(checkout)}


def imported_from(checkout: Path) -> Path:
    """Where ``service.batch.job`` comes from when run in ``checkout``; ``RuntimeError`` unless
    it is the checkout's own file (an editable install must not substitute another checkout's
    code)."""
    done = subprocess.run(
        [sys.executable, "-c", "import service.batch.job as job; print(job.__file__)"],
        cwd=checkout,
        env=checkout_environment(checkout),
        capture_output=True,
        text=True,
        check=True,
    )
    module = Path(done.stdout.strip()).resolve()
    if not module.is_relative_to(checkout):
        raise RuntimeError(f"{checkout} imports service.batch.job from {module}, not its own")
    return module


def cli_pass(label: str, checkout: Path, source: Path, scratch: Path, batch_size: int) -> CliPass:
    """Score ``source`` with ``checkout``'s command line into a folder under ``scratch``, removed
    afterwards."""
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        command = [sys.executable, "-m", "service.batch", "--model", "fraud"]
        command += ["--input", str(source), "--output", str(Path(folder) / "scores.parquet")]
        command += ["--batch-size", str(batch_size), "--quiet"]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=checkout,
            env=checkout_environment(checkout),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
    if done.returncode not in (0, 3):  # 3: finished with rejects
        raise RuntimeError(f"{label} pass exited {done.returncode}: {done.stderr[-2000:]}")
    rows, rate = parse_summary(done.stdout)
    return CliPass(label, rows, rate, wall)


def before_after(
    before: Path, source: Path, scratch: Path, batch_size: int, passes: int
) -> dict[str, object]:
    """Alternate passes of ``before`` and this checkout on ``source``; per-pass figures, the
    mean rows/s of each and the after/before ratio. A first, unkept pass of each warms caches."""
    checkouts = {"before": before.resolve(), "after": REPOSITORY}
    for label, checkout in checkouts.items():
        print(f"{label}: {checkout} (service.batch.job from {imported_from(checkout)})")
    runs: list[CliPass] = []
    for index in range(passes + 1):  # pass 0 warms caches (bytecode, file pages) and is not kept
        for label, checkout in checkouts.items():
            run = cli_pass(label, checkout, source, scratch, batch_size)
            runs += [run] if index else []
            print(
                f"{label} {f'pass {index}' if index else 'warm-up'}: {run.rows} rows, "
                f"{run.rows_per_second:,.0f} rows/s in the job, {run.wall_seconds:.2f}s wall",
                flush=True,
            )
    means = {
        label: sum(r.rows_per_second for r in runs if r.checkout == label) / passes
        for label in checkouts
    }
    ratio = means["after"] / means["before"]
    print(
        f"after/before: {ratio:.3f}x ({means['after']:,.0f} / {means['before']:,.0f} rows/s, "
        f"mean of {passes} passes each)"
    )
    return {
        "before": str(checkouts["before"]),
        "passes": [asdict(run) for run in runs],
        "mean_rows_per_second": means,
        "ratio": ratio,
    }


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
    parser.add_argument(
        "--before", type=Path, help="checkout of older code: compare its command line with this one"
    )
    parser.add_argument("--passes", type=int, default=2, help="--before: passes of each checkout")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/batch.json"), help="JSON")
    args = parser.parse_args(argv)
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    machine["load_average_at_start"] = os.getloadavg()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
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
        if args.before is not None:
            figures["before_after"] = before_after(
                args.before, source.resolve(), Path(scratch), args.batch_size, args.passes
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
