"""The training CLI, export parity and the registered metadata."""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.features import FRAUD_SPEC
from core.model_store import ModelUnavailableError, load_model, read_stored_model, sha256_file
from models.tabular import Autoencoder, FraudClassifier, FraudScorer, TabularConfig
from training.cli import main
from training.export import ParityError, check_parity, export_onnx
from training.fraud.features import time_ordered_split
from training.fraud.simulator import simulate_transactions
from training.fraud.train import export_model, to_splits
from training.registry import register_model

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


def test_a_registered_scorer_answers_from_the_store_as_its_torch_module(tmp_path: Path) -> None:
    """Export, register, load back through the service's loader: same outputs as torch on rows
    the export never saw."""
    frames = list(time_ordered_split(simulate_transactions(3000, seed=4), FRAUD_SPEC))
    preprocessor, splits = to_splits(FRAUD_SPEC, frames)
    torch.manual_seed(0)
    config = TabularConfig(n_numeric=len(FRAUD_SPEC.numeric), category_sizes=(12,))
    width = preprocessor.out_features
    scorer = FraudScorer(
        preprocessor, FraudClassifier(width, config), Autoencoder(width, config)
    ).eval()
    path, _ = export_model(scorer, splits[0], tmp_path)
    schema = [{"name": name, "dtype": "float32", "shape": ["batch"]} for name in ("p", "a")]
    inputs = [
        {"name": "numeric", "dtype": "float32", "shape": ["batch", 10]},
        {"name": "categorical", "dtype": "int64", "shape": ["batch", 1]},
    ]
    stored = register_model(
        "torch-twin", path, {"task": "test", "inputs": inputs, "outputs": schema}
    )
    model = load_model(f"torch-twin:{stored['version']}", "cpu")
    unseen = splits[2]
    outputs = model.run(
        {"numeric": unseen.numeric.numpy(), "categorical": unseen.categorical.numpy()}
    )
    with torch.no_grad():
        probability, anomaly = scorer(unseen.numeric, unseen.categorical)
    np.testing.assert_allclose(outputs["fraud_probability"], probability.numpy(), atol=1e-5)
    np.testing.assert_allclose(outputs["anomaly_score"], anomaly.numpy(), rtol=1e-4, atol=1e-5)


def test_seed_example_reports_accuracy_over_five_seeds() -> None:
    assert main(["fraud", "--preset", "seed-example", "--quiet"]) == 0
    accuracy = json.loads((REPORTS / "fraud-seed-example" / "metrics.json").read_text())[
        "test_accuracy"
    ]
    values = list(accuracy["per_seed"].values())
    assert len(values) == 5
    assert accuracy["min"] == min(values) and accuracy["max"] == max(values)
    assert 0.7 < accuracy["mean"] <= 1.0


def _user_csv_run(tmp_path: Path, frame: pd.DataFrame) -> list[str]:
    """Training arguments over ``frame`` written as a CSV whose label column is ``chargeback``."""
    frame.to_csv(tmp_path / "mine.csv", index=False)
    spec = {**FRAUD_SPEC.to_dict(), "label": "chargeback"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return [
        "fraud",
        "--preset",
        "smoke",
        "--quiet",
        "--data",
        str(tmp_path / "mine.csv"),
        "--spec",
        str(tmp_path / "spec.json"),
    ]


def test_training_on_a_user_csv_with_a_feature_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLSERVE_REPORTS", str(tmp_path / "reports"))
    frame = simulate_transactions(6000, seed=3).rename(columns={"is_fraud": "chargeback"})
    assert main(_user_csv_run(tmp_path, frame)) == 0
    metrics = json.loads((tmp_path / "reports" / "fraud-smoke" / "metrics.json").read_text())
    rows = {split: metrics["data"][split]["rows"] for split in ("train", "validation", "test")}
    assert rows == {"train": 4200, "validation": 900, "test": 900}  # the file's 6,000 rows
    assert metrics["data"]["source"] == str(tmp_path / "mine.csv")
    ordered = frame.sort_values("timestamp", kind="stable")
    assert metrics["data"]["test"]["positives"] == int(ordered["chargeback"].tail(900).sum())


def test_a_user_csv_breaking_its_spec_fails_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frame = simulate_transactions(600, seed=3).rename(columns={"is_fraud": "chargeback"})
    frame.loc[5, "chargeback"] = 2
    assert main(_user_csv_run(tmp_path, frame)) == 1
    assert "label column 'chargeback' must be 0/1" in capsys.readouterr().err


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


def test_a_preset_trains_what_it_says_and_a_time_guard_marks_the_version(
    stored_models: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """No wall clock decides how much a preset trains; ``--time-guard`` cuts a run short only
    loudly: the summary, the report and the served description say under-trained."""
    from training.reports import report_dir
    from training.text.train import PRESETS

    planned = PRESETS["smoke"].max_steps
    registered = stored_models["text-generator"]["training"]
    assert registered["completion"] == {"unit": "steps", "planned": planned, "done": planned}
    assert registered["under_trained"] is False

    assert main(["text", "--preset", "smoke", "--time-guard", "0", "--quiet"]) == 0
    assert f"UNDER-TRAINED: 1 of {planned} steps" in capsys.readouterr().out
    report = json.loads((report_dir("text", "smoke") / "metrics.json").read_text())
    assert report["under_trained"] is True and report["completion"]["done"] == 1

    served = load_model("text-generator:latest", "cpu")
    assert served.describe()["under_trained"] is False
    guarded = {**served.metadata, "training": {**registered, "under_trained": True}}
    assert replace(served, metadata=guarded).describe()["under_trained"] is True
