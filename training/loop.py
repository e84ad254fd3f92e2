"""The training loop pieces every area shares: seeding, a progress bar, one epoch, scoring."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

LossFn = Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress_bar(total: int, description: str, quiet: bool, unit: str = "step") -> tqdm:
    """A bar showing steps done, rate and time left (on stderr); silent when ``quiet``."""
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
    )


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, ...]],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    bar: tqdm,
    max_steps: int | None = None,
) -> float:
    """One pass over ``batches`` (at most ``max_steps``); return the mean training loss."""
    model.train()
    total, steps = 0.0, 0
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        total += loss.item()
        steps += 1
        bar.update(1)
        bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)
        if max_steps is not None and steps >= max_steps:
            break
    return total / max(steps, 1)


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
