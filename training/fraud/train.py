"""Fraud scoring: feed-forward classifier and autoencoder on simulated or your own transactions."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from core.features import FRAUD_SPEC, FeatureSpec
from models.tabular import (
    Autoencoder,
    FraudClassifier,
    FraudScorer,
    TabularConfig,
    TabularPreprocessor,
)
from training.areas import TrainingArea, TrainingError
from training.evaluation import binary_report, threshold_at_fpr
from training.export import check_parity, export_onnx
from training.fraud import seed_example
from training.fraud.baselines import baseline_scores, fit_baselines
from training.fraud.features import encode, load_table, time_ordered_split
from training.fraud.simulator import simulate_transactions
from training.loop import LossFn, fit_best_epoch, predict_in_batches, seed_everything
from training.reports import (
    plot_pr_roc,
    plot_score_histogram,
    plot_training_curves,
    report_dir,
    write_metrics,
)
from training.variants import PR_AUC, Int8Plan, build_int8, dynamic_int8, register_with_variants

MODEL_NAME = "fraud-scorer"
MAX_FPR = 0.01  # alert budget: at most 1% of legitimate transactions flagged (validation)
THRESHOLD_RULE = (
    "lowest threshold on fraud_probability whose false-positive rate on the validation split "
    "is at most 1% (alert budget); flag when fraud_probability >= threshold"
)


@dataclass(frozen=True)
class Preset:
    """Size of a run: simulated rows, epochs per model, optimiser settings."""

    rows: int
    epochs: int
    autoencoder_epochs: int
    batch_size: int = 256
    learning_rate: float = 1e-3


PRESETS: dict[str, Preset | None] = {
    "smoke": Preset(rows=20_000, epochs=2, autoencoder_epochs=1),
    "full": Preset(rows=1_000_000, epochs=12, autoencoder_epochs=5),
    "seed-example": None,  # the seed tutorial's make_classification run (seed_example.py)
}


@dataclass
class Split:
    """One split as tensors: raw inputs, preprocessed features, labels."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, help="train on this CSV or Parquet file instead of simulated data"
    )
    parser.add_argument(
        "--spec",
        type=Path,
        help="JSON feature spec of --data (label, numeric, categorical columns)",
    )


def load_frames(args: argparse.Namespace, preset: Preset) -> tuple[FeatureSpec, list[pd.DataFrame]]:
    """The feature spec and time-ordered train/validation/test frames."""
    if args.data is None:
        frame = simulate_transactions(preset.rows, seed=args.seed)
        return FRAUD_SPEC, list(time_ordered_split(frame, FRAUD_SPEC))
    if args.spec is None:
        raise TrainingError(
            "--data needs --spec (a JSON feature spec naming the label and columns)"
        )
    try:
        spec = FeatureSpec.from_json(args.spec)
        return spec, list(time_ordered_split(load_table(args.data, spec), spec))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"--data {args.data} with --spec {args.spec}: {exc}") from exc


def to_splits(
    spec: FeatureSpec, frames: list[pd.DataFrame]
) -> tuple[TabularPreprocessor, list[Split]]:
    """Encode frames, fit the preprocessor on the training frame, preprocess every split."""
    encoded = [tuple(torch.from_numpy(a) for a in encode(f, spec)) for f in frames]
    log_mask = torch.tensor(spec.log_mask, dtype=torch.bool)
    preprocessor = TabularPreprocessor.fit(encoded[0][0], log_mask, spec.category_sizes)
    with torch.no_grad():
        splits = [
            Split(
                numeric,
                categorical,
                preprocessor(numeric, categorical),
                torch.tensor(frame[spec.label].to_numpy(), dtype=torch.float32),
            )
            for (numeric, categorical), frame in zip(encoded, frames, strict=True)
        ]
    return preprocessor, splits


def _classifier_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    features, labels = batch
    return torch.nn.functional.binary_cross_entropy_with_logits(model(features), labels)


def _reconstruction_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return model.reconstruction_error(batch[0]).mean()


def fit(
    make_model: Callable[[], torch.nn.Module],
    loss_fn: LossFn,
    rows: tuple[torch.Tensor, ...],
    validate: Callable[[torch.nn.Module], float],
    epochs: int,
    preset: Preset,
    args: argparse.Namespace,
    name: str,
) -> tuple[torch.nn.Module, dict]:
    """Adam on shuffled ``rows``; keep the epoch with the best ``validate(model)`` score. The
    model is made after seeding: the same seed gives the same initial weights."""
    generator = seed_everything(args.seed)
    model = make_model()
    loader = DataLoader(
        TensorDataset(*rows), batch_size=preset.batch_size, shuffle=True, generator=generator
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=preset.learning_rate)
    curves = fit_best_epoch(
        model,
        loader,
        loss_fn,
        optimizer,
        validate,
        epochs=epochs,
        name=name,
        quiet=args.quiet,
        max_steps=1 if args.dry_run else None,
    )
    return model, curves


def train_models(
    splits: list[Split], preprocessor: TabularPreprocessor, preset: Preset, args: argparse.Namespace
) -> tuple[FraudScorer, dict[str, dict]]:
    """Train the classifier (best validation PR-AUC) and the autoencoder on legitimate rows."""
    train, validation = splits[0], splits[1]
    config = TabularConfig(
        n_numeric=train.numeric.shape[1], category_sizes=preprocessor.category_sizes
    )
    width = preprocessor.out_features
    epochs = 1 if args.dry_run else preset.epochs

    def classifier_pr_auc(model: torch.nn.Module) -> float:
        scores = predict_in_batches(model, validation.features)
        return binary_report(validation.labels.numpy(), scores)["pr_auc"]

    classifier, classifier_curves = fit(
        lambda: FraudClassifier(width, config),
        _classifier_loss,
        (train.features, train.labels),
        classifier_pr_auc,
        epochs,
        preset,
        args,
        "fraud-mlp",
    )

    legit = train.features[train.labels == 0]
    validation_legit = validation.features[validation.labels == 0]

    def negative_reconstruction(model: torch.nn.Module) -> float:
        return -float(predict_in_batches(model.reconstruction_error, validation_legit).mean())

    autoencoder, autoencoder_curves = fit(
        lambda: Autoencoder(width, config),
        _reconstruction_loss,
        (legit,),
        negative_reconstruction,
        1 if args.dry_run else preset.autoencoder_epochs,
        preset,
        args,
        "fraud-autoencoder",
    )
    scorer = FraudScorer(preprocessor, classifier, autoencoder).eval()
    return scorer, {"mlp": classifier_curves, "autoencoder": autoencoder_curves}


def score(scorer: FraudScorer, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """``(fraud_probability, anomaly_score)`` of every row of ``split``."""
    with torch.no_grad():
        probability, anomaly = scorer(split.numeric, split.categorical)
    return probability.numpy(), anomaly.numpy()


def evaluate(scorer: FraudScorer, splits: list[Split], seed: int) -> tuple[dict, dict, float]:
    """Test-split quality of both networks and both baselines, and the validation threshold.

    Returns ``(metrics, test_scores, threshold)``; ``test_scores`` maps scorer name to scores.
    """
    train, validation, test = splits
    threshold = threshold_at_fpr(validation.labels.numpy(), score(scorer, validation)[0], MAX_FPR)
    probability, anomaly = score(scorer, test)
    baselines = fit_baselines(train.features.numpy(), train.labels.numpy(), seed)
    test_scores = {
        "mlp": probability,
        "autoencoder": anomaly,
        **baseline_scores(baselines, test.features.numpy()),
    }
    labels = test.labels.numpy()
    metrics = {name: binary_report(labels, values, MAX_FPR) for name, values in test_scores.items()}
    flagged = probability >= threshold
    metrics["mlp"]["at_threshold"] = {
        "threshold": round(threshold, 6),
        "recall": round(float(flagged[labels == 1].mean()), 4),
        "false_positive_rate": round(float(flagged[labels == 0].mean()), 4),
        "precision": round(float(labels[flagged].mean()) if flagged.any() else 0.0, 4),
    }
    return metrics, test_scores, threshold


def export_model(scorer: FraudScorer, split: Split, directory: Path) -> tuple[Path, float]:
    """Export the scorer to ONNX and check parity on real rows; return ``(path, max diff)``."""
    inputs = {"numeric": split.numeric[:512], "categorical": split.categorical[:512]}
    path = export_onnx(
        scorer,
        inputs,
        ["fraud_probability", "anomaly_score"],
        directory / "fraud-scorer.onnx",
        {"numeric": {0: "batch"}, "categorical": {0: "batch"}},
    )
    return path, check_parity(scorer, path, inputs)


def int8_plan(test: Split) -> Int8Plan:
    """Dynamic INT8 of the two small Gemm stacks, gated on the test split's PR-AUC."""
    inputs = {"numeric": test.numeric.numpy(), "categorical": test.categorical.numpy()}
    labels = test.labels.numpy()

    def evaluate(path: Path) -> dict[str, float]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probability = session.run(["fraud_probability"], inputs)[0]
        return {"pr_auc": binary_report(labels, probability, MAX_FPR)["pr_auc"]}

    return Int8Plan(
        dynamic_int8(),
        "dynamic",
        "fully connected layers only (Gemm), no convolution to calibrate: weights INT8 ahead "
        "of time, activations quantized per call",
        evaluate,
        (PR_AUC,),
    )


def model_metadata(
    spec: FeatureSpec,
    preprocessor: TabularPreprocessor,
    metrics: dict,
    threshold: float,
    args: argparse.Namespace,
) -> dict:
    """Everything the service and a reader need besides the weights (see training.registry)."""
    return {
        "task": "fraud-scoring",
        "inputs": [
            {
                "name": "numeric",
                "dtype": "float32",
                "shape": ["batch", len(spec.numeric)],
                "columns": list(spec.numeric),
            },
            {
                "name": "categorical",
                "dtype": "int64",
                "shape": ["batch", len(spec.categorical)],
                "columns": list(spec.categorical),
            },
        ],
        "outputs": [
            {"name": "fraud_probability", "dtype": "float32", "shape": ["batch"]},
            {"name": "anomaly_score", "dtype": "float32", "shape": ["batch"]},
        ],
        "labels": ["legitimate", "fraud"],
        "preprocessing": {
            "feature_spec": spec.to_dict(),
            "in_graph": "log1p on log_scaled columns, standardise, one-hot categorical codes",
            "mean": preprocessor.mean.tolist(),
            "std": preprocessor.std.tolist(),
        },
        "decision": {"threshold": threshold, "max_validation_fpr": MAX_FPR, "rule": THRESHOLD_RULE},
        "metrics": metrics,
        "headline_metrics": {k: metrics["mlp"][k] for k in ("pr_auc", "roc_auc")},
        "training": {"area": "fraud", "preset": args.preset, "seed": args.seed},
    }


def write_plots(
    directory: Path, splits: list[Split], test_scores: dict, curves: dict, threshold: float
) -> None:
    """PR and ROC curves, score histograms and training curves next to metrics.json."""
    labels = splits[2].labels.numpy()
    plot_pr_roc(directory / "pr_roc.png", labels, test_scores)
    plot_score_histogram(
        directory / "score_histogram.png",
        labels,
        test_scores["mlp"],
        threshold,
        "fraud_probability on the test split",
    )
    plot_score_histogram(
        directory / "anomaly_histogram.png",
        labels,
        np.log10(test_scores["autoencoder"]),
        np.nan,
        "log10 anomaly_score on the test split",
    )
    plot_training_curves(
        directory / "training_curves.png",
        {
            "mlp train loss": curves["mlp"]["train_loss"],
            "mlp validation PR-AUC": curves["mlp"]["validation"],
            "autoencoder train loss": curves["autoencoder"]["train_loss"],
        },
        "loss / PR-AUC",
    )


def run(args: argparse.Namespace) -> str:
    """Train, evaluate, export, register and report; return the headline numbers."""
    if args.preset == "seed-example":
        return seed_example.run(args)
    started = time.perf_counter()
    # A network of a few thousand weights: more threads only add synchronisation (and spin
    # badly when the cores are shared), so training uses one.
    torch.set_num_threads(1)
    preset = PRESETS[args.preset]
    spec, frames = load_frames(args, preset)
    preprocessor, splits = to_splits(spec, frames)
    scorer, curves = train_models(splits, preprocessor, preset, args)
    metrics, test_scores, threshold = evaluate(scorer, splits, args.seed)
    summary = (
        f"test PR-AUC mlp={metrics['mlp']['pr_auc']:.4f} "
        f"logistic={metrics['logistic_regression']['pr_auc']:.4f} "
        f"gbt={metrics['gradient_boosted_trees']['pr_auc']:.4f} "
        f"autoencoder={metrics['autoencoder']['pr_auc']:.4f}"
    )
    if args.dry_run:
        return summary
    directory = report_dir("fraud", args.preset)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path, parity = export_model(scorer, splits[2], Path(scratch))
        metadata = model_metadata(spec, preprocessor, metrics, threshold, args)
        int8 = build_int8(onnx_path, int8_plan(splits[2]), Path(scratch))
        stored, variants = register_with_variants(
            MODEL_NAME, onnx_path, metadata, [int8], args.register
        )
    write_plots(directory, splits, test_scores, curves, threshold)
    write_metrics(
        directory,
        {
            "area": "fraud",
            "preset": args.preset,
            "seed": args.seed,
            "preset_config": asdict(preset),
            "data": {
                "source": "simulated" if args.data is None else str(args.data),
                **{
                    name: {"rows": len(frame), "positives": int(frame[spec.label].sum())}
                    for name, frame in zip(("train", "validation", "test"), frames, strict=True)
                },
            },
            "models": metrics,
            "threshold": {"value": threshold, "rule": THRESHOLD_RULE},
            "parity_max_abs_diff": parity,
            "variants": variants,
            "parameters": {
                "mlp": _count(scorer.classifier),
                "autoencoder": _count(scorer.autoencoder),
            },
            "registered": {"name": MODEL_NAME, "version": stored["version"]}
            if args.register
            else None,
            "duration_seconds": round(time.perf_counter() - started, 1),
        },
    )
    return f"{summary}; report in {directory}"


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


AREA = TrainingArea(
    name="fraud",
    models=(MODEL_NAME,),
    presets=PRESETS,
    add_arguments=add_arguments,
    run=run,
    full_minutes=1.5,  # on 2 cores; ensure trains the quickest first
)
