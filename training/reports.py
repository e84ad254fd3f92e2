"""Where a training run's numbers and plots go: ``reports/<area>[-<preset>]/``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from training.precision import cpu_has_native_bf16

FULL_PRESET = "full"


def reports_root() -> Path:
    """``$DLSERVE_REPORTS`` or ``reports/`` under the current directory."""
    return Path(os.environ.get("DLSERVE_REPORTS", "reports"))


def report_dir(area: str, preset: str) -> Path:
    """``reports/<area>`` for the full preset, ``reports/<area>-<preset>`` otherwise (created)."""
    name = area if preset == FULL_PRESET else f"{area}-{preset}"
    path = reports_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit() -> str:
    """The checked-out commit (``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU a run used: its model name, the cores this process may use, and whether it
    computes bfloat16 natively (training times differ 2-5x between such machines)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return {
        "cpu": names[0] if names else "unknown",
        "cores": len(os.sched_getaffinity(0)),
        "native_bf16": cpu_has_native_bf16(cpuinfo),
    }


def write_metrics(directory: Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` (adding the git commit and the machine) and return its path."""
    path = directory / "metrics.json"
    stamped = {**metrics, "git_commit": git_commit(), "machine": machine()}
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return path


def plot_pr_roc(path: Path, labels: np.ndarray, scores: dict[str, np.ndarray]) -> Path:
    """Precision-recall and ROC curves of several scorers on the same labels, side by side."""
    figure, (pr_axis, roc_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, score in scores.items():
        precision, recall, _ = precision_recall_curve(labels, score)
        false_positive, true_positive, _ = roc_curve(labels, score)
        pr_axis.plot(recall, precision, label=name)
        roc_axis.plot(false_positive, true_positive, label=name)
    pr_axis.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    roc_axis.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        title="ROC (test)",
        xscale="log",
        xlim=(1e-4, 1),
    )
    pr_axis.legend(fontsize=8)
    roc_axis.legend(fontsize=8)
    return _save(figure, path)


def plot_score_histogram(
    path: Path, labels: np.ndarray, score: np.ndarray, threshold: float, title: str
) -> Path:
    """Score distribution per class (log counts) with the decision threshold marked."""
    figure, axis = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(float(score.min()), float(score.max()), 60)
    for value, name in ((0, "legitimate"), (1, "fraud")):
        axis.hist(score[labels == value], bins=bins, alpha=0.6, label=name, log=True)
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set(xlabel="score", ylabel="rows (log)", title=title)
    axis.legend(fontsize=8)
    return _save(figure, path)


def plot_training_curves(path: Path, curves: dict[str, list[float]], ylabel: str) -> Path:
    """One line per named curve over epochs."""
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, values in curves.items():
        axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
    axis.set(xlabel="epoch", ylabel=ylabel, title="Training curves")
    axis.legend(fontsize=8)
    return _save(figure, path)


def plot_calibration(
    path: Path, labels: np.ndarray, probabilities: dict[str, np.ndarray], bins: int = 10
) -> Path:
    """Reliability diagram: observed positive rate per predicted-probability bin, per model."""
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    edges = np.linspace(0, 1, bins + 1)
    for name, probability in probabilities.items():
        which = np.clip(np.digitize(probability, edges) - 1, 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        predicted = [probability[which == b].mean() for b in filled]
        observed = [labels[which == b].mean() for b in filled]
        axis.plot(predicted, observed, marker="o", label=name)
    axis.set(
        xlabel="predicted probability", ylabel="observed frequency", title="Calibration (test)"
    )
    axis.legend(fontsize=8)
    return _save(figure, path)


def plot_confusion_matrix(
    path: Path, matrix: np.ndarray, labels: list[str] | tuple[str, ...], title: str
) -> Path:
    """Counts of true class (rows) by predicted class (columns), each cell annotated."""
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = range(len(labels))
    axis.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(ticks, labels, fontsize=8)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    dark = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > dark else "black"
        axis.text(column, row, str(count), ha="center", va="center", fontsize=7, color=color)
    return _save(figure, path)


def plot_image_grid(
    path: Path, images: np.ndarray, row_labels: list[str] | tuple[str, ...], title: str
) -> Path:
    """``uint8`` images ``[rows, columns, H, W]`` tiled in one grayscale picture (2-pixel grey
    gaps), a label per row."""
    rows, columns, height, width = images.shape
    gap = 2
    canvas = np.full(
        (rows * (height + gap) - gap, columns * (width + gap) - gap), 96, dtype=np.uint8
    )
    for (row, column), _ in np.ndenumerate(np.empty((rows, columns))):
        top, left = row * (height + gap), column * (width + gap)
        canvas[top : top + height, left : left + width] = images[row, column]
    figure, axis = plt.subplots(figsize=(columns * 0.6 + 1.6, rows * 0.6 + 0.6))
    axis.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axis.set_yticks([r * (height + gap) + height / 2 for r in range(rows)], row_labels, fontsize=8)
    axis.set_xticks([])
    axis.set_title(title, fontsize=9)
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
