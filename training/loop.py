"""The training loop pieces every area shares: seeding, a progress bar, one epoch, scoring."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from core.progress import progress_bar

__all__ = [
    "exponential_average",
    "predict_in_batches",
    "progress_bar",
    "seed_everything",
    "train_epoch",
]

LossFn = Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def exponential_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers (batch-norm statistics
    included), ``decay`` per optimiser step: its ``module`` is evaluated and exported like the
    model itself (Polyak averaging; ``fit_best_epoch(..., average=...)`` updates it)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    bar: tqdm,
    max_steps: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    average: AveragedModel | None = None,
) -> float:
    """One pass over ``batches`` (at most ``max_steps``); return the mean training loss.

    ``scheduler``, when given, steps after every optimiser step (per-batch schedules);
    ``average``, when given, takes in the weights after every optimiser step.
    """
    model.train()
    total, steps = 0.0, 0
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if average is not None:
            average.update_parameters(model)
        total += loss.item()
        steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)
        if max_steps is not None and steps >= max_steps:
            break
    return total / max(steps, 1)


def fit_best_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    validate: Callable[[nn.Module], float],
    *,
    epochs: int,
    name: str,
    quiet: bool,
    max_steps: int | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    average: AveragedModel | None = None,
) -> dict[str, list[float]]:
    """Train ``epochs`` epochs (at most ``max_steps`` batches each) under one progress bar.

    After each epoch ``validate(model)`` scores the model in eval mode (higher is better); at
    the end the best epoch's weights are restored and the model is left in eval mode. With
    ``average`` (see ``exponential_average``), the averaged weights are scored as well and
    ``average.module`` ends with its own best epoch's weights, in eval mode. Returns the
    curves: ``train_loss`` and ``validation`` per epoch (and ``validation_averaged``).
    """
    steps = min(max_steps, len(batches)) if max_steps else len(batches)
    candidates = {"validation": model}
    if average is not None:
        candidates["validation_averaged"] = average.module
    curves: dict[str, list[float]] = {"train_loss": [], **{key: [] for key in candidates}}
    best = {key: (-np.inf, None) for key in candidates}
    with progress_bar(epochs * steps, name, quiet) as bar:
        for _ in range(epochs):
            loss = train_epoch(
                model, batches, loss_fn, optimizer, bar, max_steps, scheduler, average
            )
            curves["train_loss"].append(loss)
            for key, candidate in candidates.items():
                curves[key].append(score := float(validate(candidate.eval())))
                if score > best[key][0]:
                    best[key] = score, copy.deepcopy(candidate.state_dict())
    for key, candidate in candidates.items():
        candidate.load_state_dict(best[key][1])
        candidate.eval()
    return curves


@torch.no_grad()
def predict_in_batches(
    fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, batch_size: int = 8192
) -> np.ndarray:
    """Apply ``fn`` to row slices of ``inputs`` in eval mode; return the outputs concatenated."""
    parts = [
        fn(*(tensor[start : start + batch_size] for tensor in inputs))
        for start in range(0, len(inputs[0]), batch_size)
    ]
    return torch.cat(parts).numpy()
