"""The side-by-side bench on tiny settings: its answer checks hold for the smoke models and
catch a wrong answer, its report ranks against Triton, and it runs end to end (Triton too when
``make bench-triton`` installed it; its figures are meaningless at this size)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import sidebyside, triton_server
from bench.report import summarise
from bench.workloads import Body, Workload, check_answer, workloads
from tests.needs import require_tools


def test_answers_are_checked_against_onnx_runtime(stored_models: dict) -> None:
    fraud_one, fraud_hundred, image = workloads(sidebyside.FRAUD, sidebyside.IMAGE)
    assert fraud_hundred.rows == 100 and fraud_hundred.expected["fraud_probability"].shape == (100,)
    probabilities = fraud_one.expected["fraud_probability"].tolist()
    check_answer("named", fraud_one, {"results": [{"fraud_probability": probabilities[0]}]})
    with pytest.raises(AssertionError, match="fraud_probability"):
        check_answer(
            "named", fraud_one, {"results": [{"fraud_probability": probabilities[0] + 0.01}]}
        )
    outputs = [{"name": k, "data": v.ravel().tolist()} for k, v in image.expected.items()]
    check_answer("v2", image, {"outputs": outputs})
    outputs[0]["data"] = outputs[0]["data"][::-1]
    with pytest.raises(AssertionError):
        check_answer("v2", image, {"outputs": outputs})
    body = json.loads(image.v2.content)["inputs"][0]
    assert body["datatype"] == "UINT8" and body["shape"] == [1, 28, 28]


def test_workloads_are_selected_by_area() -> None:
    labels = ["fraud, 1 transaction(s)", "fraud, 100 transaction(s)", "image, 1 PNG"]
    loads = [Workload(label, "m", 1, Body("/a", b""), Body("/b", b""), {}, {}) for label in labels]
    assert [load.label for load in sidebyside.selected(loads, ["image"])] == ["image, 1 PNG"]
    assert [load.label for load in sidebyside.selected(loads, ["fraud"])] == labels[:2]
    assert sidebyside.selected(loads, ["fraud", "image"]) == loads


def test_ratios_are_to_the_faster_triton_over_the_mean_of_passes() -> None:
    cell = {"workload": "w", "concurrency": 16, "p50_ms": 1.0, "p99_ms": 2.0, "non_2xx": 0}
    cells = [
        {**cell, "server": "Triton, 1", "rows_per_second": 100.0},
        {**cell, "server": "Triton, 2", "rows_per_second": 200.0},
        {**cell, "server": "dlserve", "rows_per_second": 100.0},
        {**cell, "server": "dlserve", "rows_per_second": 200.0},
    ]
    ratios = {row["server"]: row["ratio_to_triton"] for row in summarise(cells)}
    assert ratios == {"Triton, 1": 0.5, "Triton, 2": 1.0, "dlserve": 0.75}


@pytest.mark.http
def test_the_bench_runs_end_to_end(stored_models: dict, tmp_path: Path) -> None:
    require_tools("wrk")
    out = tmp_path / "side"
    arguments = ["--force", "--seconds", "1", "--passes", "1", "--concurrency", "1"]
    arguments += ["--out", str(out)] + ([] if triton_server.available() else ["--no-triton"])
    assert sidebyside.main(arguments) == 0
    figures = json.loads(out.with_suffix(".json").read_text())
    servers = {cell["server"] for cell in figures["cells"]}
    assert any(s.startswith("dlserve") for s in servers) and any("FastAPI" in s for s in servers)
    assert all(cell["non_2xx"] == 0 and cell["rows_per_second"] > 0 for cell in figures["cells"])
    assert out.with_suffix(".png").stat().st_size > 0
    assert np.all([r["p99_ms"] >= r["p50_ms"] for r in figures["summary"]])
