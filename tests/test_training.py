"""The training CLI, export parity and the registered metadata."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.features import FRAUD_SPEC
from core.model_store import ModelUnavailableError, load_model, read_stored_model, sha256_file
from training.cli import main
from training.export import ParityError, check_parity, export_onnx
from training.fraud.simulator import simulate_transactions

REPORTS = Path(os.environ["DLSERVE_REPORTS"])


def test_dry_run_trains_one_batch_and_writes_nothing(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DLSERVE_REPORTS", str(tmp_path))
    assert main(["fraud", "--preset", "smoke", "--dry-run", "--quiet", "--register"]) == 0
    summary = capsys.readouterr().out
    assert "test PR-AUC" in summary and "training fraud preset=smoke" in summary
    assert list(tmp_path.iterdir()) == []


def test_smoke_run_reports_every_model_and_registers_verified_metadata(fraud_model: dict) -> None:
    metrics = json.loads((REPORTS / "fraud-smoke" / "metrics.json").read_text())
    assert set(metrics["models"]) == {
        "mlp",
        "autoencoder",
        "logistic_regression",
        "gradient_boosted_trees",
    }
    for report in metrics["models"].values():
        assert 0 <= report["pr_auc"] <= 1 and 0 <= report["roc_auc"] <= 1
    assert metrics["parity_max_abs_diff"] <= 1e-4
    assert metrics["data"]["test"]["rows"] > 0 and metrics["seed"] == 0
    for plot in ("pr_roc.png", "score_histogram.png", "training_curves.png"):
        assert (REPORTS / "fraud-smoke" / plot).stat().st_size > 1000
    assert metrics["registered"]["version"] == fraud_model["version"]
    _, onnx_path = read_stored_model("fraud-scorer:latest")
    assert sha256_file(onnx_path) == fraud_model["sha256"]
    assert fraud_model["decision"]["threshold"] > 0
    assert fraud_model["preprocessing"]["feature_spec"] == FRAUD_SPEC.to_dict()
    assert {"torch", "onnxruntime", "numpy"} <= set(fraud_model["libraries"])


def test_stored_model_matches_torch_on_simulated_rows(fraud_model: dict) -> None:
    model = load_model("fraud-scorer:latest", "cpu")
    assert model.provider == "cpu"
    from training.fraud.features import encode

    numeric, categorical = encode(simulate_transactions(200, seed=5), FRAUD_SPEC)
    outputs = model.run({"numeric": numeric, "categorical": categorical})
    assert outputs["fraud_probability"].shape == (200,)
    assert np.all((outputs["fraud_probability"] >= 0) & (outputs["fraud_probability"] <= 1))


def test_seed_example_reports_accuracy_over_five_seeds() -> None:
    assert main(["fraud", "--preset", "seed-example", "--quiet"]) == 0
    accuracy = json.loads((REPORTS / "fraud-seed-example" / "metrics.json").read_text())[
        "test_accuracy"
    ]
    values = list(accuracy["per_seed"].values())
    assert len(values) == 5
    assert accuracy["min"] == min(values) and accuracy["max"] == max(values)
    assert 0.7 < accuracy["mean"] <= 1.0


def test_training_on_a_user_csv_with_a_feature_spec(tmp_path: Path) -> None:
    frame = simulate_transactions(6000, seed=3).rename(columns={"is_fraud": "chargeback"})
    spec = {**FRAUD_SPEC.to_dict(), "label": "chargeback"}
    frame.to_csv(tmp_path / "mine.csv", index=False)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    args = [
        "fraud",
        "--preset",
        "smoke",
        "--dry-run",
        "--quiet",
        "--data",
        str(tmp_path / "mine.csv"),
        "--spec",
        str(tmp_path / "spec.json"),
    ]
    assert main(args) == 0


def test_parity_check_fails_when_the_graph_differs_from_the_module(tmp_path: Path) -> None:
    module = torch.nn.Linear(4, 2)
    inputs = {"x": torch.randn(8, 4)}
    path = export_onnx(module, inputs, ["y"], tmp_path / "m.onnx", {"x": {0: "batch"}})
    assert check_parity(module, path, inputs) <= 1e-4
    with torch.no_grad():
        module.weight.add_(0.01)
    with pytest.raises(ParityError, match="max abs diff"):
        check_parity(module, path, inputs)


def test_tampered_model_file_is_refused_at_load(fraud_model: dict) -> None:
    _, onnx_path = read_stored_model("fraud-scorer:latest")
    original = onnx_path.read_bytes()
    try:
        onnx_path.write_bytes(original + b"\0")
        with pytest.raises(ModelUnavailableError, match="sha256"):
            load_model("fraud-scorer:latest", "cpu")
    finally:
        onnx_path.write_bytes(original)


def test_missing_model_says_how_to_train_it() -> None:
    with pytest.raises(ModelUnavailableError, match="train it first"):
        load_model("no-such-model:latest", "cpu")
