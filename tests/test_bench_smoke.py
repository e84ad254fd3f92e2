"""The in-process benches run end to end on the smoke models (their figures are meaningless at
this size; what is checked is that they still run against the current code)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench import batch, text_cache
from bench.runner import per_call, tiled
from bench.saturation import bucket_percentiles, quarter_peaks
from harness.local_server import REPOSITORY
from service.batch.job import JobConfig, Summary


def test_the_batch_bench_runs_and_reports_a_ratio(stored_models: dict, tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    arguments = ["--rows", "3000", "--batch-size", "1000", "--out", str(out)]
    # this checkout as its own "before": the command-line passes run and are compared
    assert batch.main([*arguments, "--before", str(REPOSITORY), "--passes", "1"]) == 0
    figures = json.loads(out.read_text())["figures"]
    assert figures["batch_size"] == 1000 and figures["local_ratio_to_ceiling"] > 0
    compared = figures["before_after"]
    assert [run["checkout"] for run in compared["passes"]] == ["before", "after"]
    assert {run["rows"] for run in compared["passes"]} == {3000} and compared["ratio"] > 0


def test_the_batch_summary_line_is_parsed_and_a_missing_one_refused() -> None:
    config = JobConfig("fraud", Path("in.parquet"), Path("out.parquet"), 1000)
    line = Summary("fraud-scorer", "v1", 4_990, 10, 0.5, config).line
    assert batch.parse_summary(f"warning: noise\n{line}\n") == (5_000, 10_000.0)
    with pytest.raises(ValueError, match="no batch summary"):
        batch.parse_summary("batch job refused: no such file\n")


def test_a_before_checkout_must_import_its_own_code(tmp_path: Path) -> None:
    # not a checkout: the job module comes from elsewhere (installed package) or not at all
    with pytest.raises((RuntimeError, subprocess.CalledProcessError)):
        batch.imported_from(tmp_path)


def test_the_cache_bench_runs_and_agrees_with_recomputing(
    stored_models: dict, tmp_path: Path
) -> None:
    out = tmp_path / "cache.json"
    arguments = ["--new", "80", "--repeats", "1", "--steps", "4", "--out", str(out)]
    assert text_cache.main(arguments) == 0
    assert json.loads(out.read_text())["same_characters"] is True


def test_rows_per_call_and_the_tiled_batch() -> None:
    assert per_call((10, 100), (14, 164), rows=1) == 16  # 64 rows in 4 calls
    assert per_call((10, 100), (10, 100), rows=32) == 32  # no call: the request's own size
    inputs = {"x": np.arange(6).reshape(3, 2)}
    np.testing.assert_array_equal(tiled(inputs, 5)["x"][:, 0], [0, 2, 4, 0, 2])


def test_saturation_percentiles_come_from_bucket_deltas() -> None:
    before = {("200", 0.1): 1, ("200", 0.5): 2, ("200", float("inf")): 2, ("503", 0.1): 7}
    after = {("200", 0.1): 51, ("200", 0.5): 101, ("200", float("inf")): 102, ("503", 0.1): 7}
    assert bucket_percentiles(before, after, "200") == {"p50_ms": 100.0, "p99_ms": 500.0}
    assert bucket_percentiles(before, after, "503") == {"p50_ms": None, "p99_ms": None}
    assert quarter_peaks([(1, 10.0), (20, 30.0), (59, 5.0)], 60) == [10.0, 30.0, 0.0, 5.0]
