"""bench/gpu_check.py, the one-command GPU check, on a machine without a GPU: its parity and
throughput code on CPU against CPU, and its verdict when CUDA is missing."""

from __future__ import annotations

import pytest

from bench import gpu_check
from core.model_store import load_model


def test_cpu_against_cpu_is_identical_and_timed(fraud_model: dict) -> None:
    reference = load_model("fraud-scorer:latest", "cpu")
    candidate = load_model("fraud-scorer:latest", "cpu")
    row = gpu_check.compare(reference, candidate, batch=8, seconds=0.05)
    assert row.max_abs_diff == 0.0 and row.within_tolerance
    assert set(row.rates) == {"batch 1", "batch 8"}
    assert all(cpu > 0 and other > 0 for cpu, other in row.rates.values())


def test_inputs_follow_the_declared_schema(stored_models: dict) -> None:
    model = load_model("text-generator:latest", "cpu")
    inputs = gpu_check.random_inputs(model, batch=3)
    assert {spec["name"] for spec in model.metadata["inputs"]} == set(inputs)
    assert all(values.shape[0] == 3 for values in inputs.values())
    model.run(inputs)  # the shapes are ones the graph takes (the empty past included)


def test_without_cuda_every_model_fails_by_name(
    stored_models: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.main(["--models", "fraud-scorer,image-classifier", "--seconds", "0.01"]) == 1
    out = capsys.readouterr().out
    assert "0/2 models on CUDA" in out and "fraud-scorer" in out and "image-classifier" in out
