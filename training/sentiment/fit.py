"""Batches of tokenised texts, a fit loop that keeps the best validation epoch, and scoring."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from core.text_encoding import TextEncoder
from training.loop import fit_best_epoch
from training.sentiment.data import TextSplit

BUCKET_BATCHES = 50  # shuffled batches are formed from pools this many batches large


def bucketed_batches(
    lengths: list[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Shuffled batches of similar-length texts (less padding): shuffle, sort each pool of
    ``BUCKET_BATCHES`` batches by length, cut it into batches, shuffle the batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def text_loader(
    split: TextSplit, encoder: TextEncoder, batch_size: int, generator: torch.Generator | None
) -> DataLoader:
    """Batches of ``(input_ids, attention_mask, labels)``, each padded to its longest text.

    Shuffled in length buckets when ``generator`` is given, in split order otherwise.
    """

    def collate(indices: list[int]) -> tuple[torch.Tensor, ...]:
        arrays, _ = encoder.encode([split.texts[i] for i in indices])
        labels = torch.tensor(split.labels[indices], dtype=torch.float32)
        return (
            torch.from_numpy(arrays["input_ids"]),
            torch.from_numpy(arrays["attention_mask"]),
            labels,
        )

    if generator is None:
        return DataLoader(range(len(split.texts)), batch_size=batch_size, collate_fn=collate)
    lengths = [len(text) for text in split.texts]
    batches = bucketed_batches(lengths, batch_size, generator)
    return DataLoader(range(len(split.texts)), batch_sampler=batches, collate_fn=collate)


def logit_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    input_ids, attention_mask, labels = batch
    return torch.nn.functional.binary_cross_entropy_with_logits(
        model(input_ids, attention_mask), labels
    )


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module, split: TextSplit, encoder: TextEncoder, batch_size: int = 128
) -> np.ndarray:
    """P(positive) of every text of ``split``, in order (eval mode)."""
    model.eval()
    parts = [
        torch.sigmoid(model(input_ids, attention_mask))
        for input_ids, attention_mask, _ in text_loader(split, encoder, batch_size, None)
    ]
    return torch.cat(parts).numpy()


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    validate: Callable[[torch.nn.Module], float],
    epochs: int,
    name: str,
    quiet: bool,
    max_steps: int | None = None,
) -> tuple[torch.nn.Module, dict[str, list[float]]]:
    """Train ``epochs`` epochs (``max_steps`` per epoch at most) with the logit loss and keep
    the weights of the epoch with the best ``validate(model)`` (higher is better).

    Returns the model in eval mode and its curves (training loss, validation score per epoch).
    """
    curves = fit_best_epoch(
        model,
        loader,
        logit_loss,
        optimizer,
        validate,
        epochs=epochs,
        name=name,
        quiet=quiet,
        max_steps=max_steps,
    )
    return model, curves
