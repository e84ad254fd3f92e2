"""The seed tutorial's own example, reproduced: 64-32-1 network on ``make_classification``.

``make_classification(n_samples=1000, n_features=10, n_classes=2, random_state=42)``, split by
``train_test_split(test_size=0.2, random_state=42)``, Adam, binary cross-entropy, 10 epochs,
batch 32; test accuracy over 5 seeds (the split is fixed, the seed changes the weights).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from models.tabular import FraudClassifier, TabularConfig
from training.loop import progress_bar, seed_everything, train_epoch
from training.reports import report_dir, write_metrics

SEEDS = (0, 1, 2, 3, 4)
EPOCHS = 10
BATCH_SIZE = 32


def _bce(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    features, labels = batch
    return torch.nn.functional.binary_cross_entropy_with_logits(model(features), labels)


def accuracy_for_seed(seed: int, dry_run: bool, quiet: bool) -> float:
    """Train the seed network with ``seed``; return its test accuracy."""
    features, labels = make_classification(
        n_samples=1000, n_features=10, n_classes=2, random_state=42
    )
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, random_state=42
    )
    generator = seed_everything(seed)
    model = FraudClassifier(10, TabularConfig(n_numeric=10, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters())
    data = TensorDataset(torch.tensor(x_train).float(), torch.tensor(y_train).float())
    loader = DataLoader(data, batch_size=BATCH_SIZE, shuffle=True, generator=generator)
    epochs = 1 if dry_run else EPOCHS
    with progress_bar(epochs * len(loader), f"seed-example seed {seed}", quiet) as bar:
        for _ in range(epochs):
            train_epoch(model, loader, _bce, optimizer, bar, max_steps=1 if dry_run else None)
    model.eval()
    with torch.no_grad():
        predicted = model(torch.tensor(x_test).float()) > 0
    return float((predicted.numpy() == y_test).mean())


def run(args: argparse.Namespace) -> str:
    """Train over ``SEEDS``; write each accuracy, mean, min and max; return the summary."""
    started = time.perf_counter()
    accuracies = {seed: accuracy_for_seed(seed, args.dry_run, args.quiet) for seed in SEEDS}
    values = list(accuracies.values())
    summary = {
        "mean": round(statistics.mean(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }
    if not args.dry_run:
        write_metrics(
            report_dir("fraud", "seed-example"),
            {
                "area": "fraud",
                "preset": "seed-example",
                "seeds": list(SEEDS),
                "data": {"source": "sklearn make_classification", "train": 800, "test": 200},
                "test_accuracy": {
                    "per_seed": {str(k): round(v, 4) for k, v in accuracies.items()},
                    **summary,
                },
                "duration_seconds": round(time.perf_counter() - started, 1),
            },
        )
    return (
        f"test accuracy over {len(SEEDS)} seeds mean={summary['mean']:.4f} "
        f"min={summary['min']:.4f} max={summary['max']:.4f}"
    )
