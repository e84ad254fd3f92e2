"""Sums: a linear regressor trained to add up four numbers (the add-an-area recipe's area)."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from models.sums import SumConfig, SumRegressor

from training.areas import TrainingArea
from training.export import check_parity, export_onnx
from training.registry import register_model
from training.reports import report_dir, write_metrics

STORE_NAME = "sum-regressor"


@dataclass(frozen=True)
class Preset:
    """Optimiser steps on 64 random rows each."""

    steps: int


PRESETS = {"smoke": Preset(steps=200), "full": Preset(steps=2000)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags of its own."""


def train(model: SumRegressor, steps: int, generator: torch.Generator) -> float:
    """Fit ``model`` to the sums of uniform rows in [-10, 10]; the last batch's squared error."""
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        rows = torch.rand(64, 4, generator=generator) * 20 - 10
        loss = torch.nn.functional.mse_loss(model(rows), rows.sum(dim=1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return float(loss)


def run(args: argparse.Namespace) -> str:
    """Train, export with the parity gate, optionally register, report; return the figures."""
    preset = PRESETS[args.preset]
    generator = torch.Generator().manual_seed(args.seed)
    model = SumRegressor(SumConfig())
    error = train(model, 1 if args.dry_run else preset.steps, generator)
    if args.dry_run:
        return f"one step, mse {error:.3f}"
    metadata = {
        "task": "regression",
        "inputs": [{"name": "numbers", "dtype": "float32", "shape": ["batch", 4]}],
        "outputs": [{"name": "total", "dtype": "float32", "shape": ["batch"]}],
        "metrics": {"mse": error},
    }
    entry: dict = {"mse": error}
    with tempfile.TemporaryDirectory() as scratch:
        example = {"numbers": torch.rand(3, 4, generator=generator)}
        path = export_onnx(
            model, example, ["total"], Path(scratch) / "model.onnx", {"numbers": {0: "batch"}}
        )
        entry["parity"] = check_parity(
            model, path, {"numbers": torch.rand(5, 4, generator=generator)}
        )
        if args.register:
            stored = register_model(STORE_NAME, path, metadata)
            entry["registered"] = {"name": stored["name"], "version": stored["version"]}
    directory = report_dir("sums", args.preset)
    write_metrics(directory, {"area": "sums", "preset_config": asdict(preset), **entry})
    return f"mse {error:.4f}, parity {entry['parity']:.2g}; report in {directory}"


AREA = TrainingArea(
    name="sums",
    models=(STORE_NAME,),
    presets=PRESETS,
    add_arguments=add_arguments,
    run=run,
    full_minutes=1,
)
