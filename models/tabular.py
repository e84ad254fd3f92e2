"""Tabular fraud scoring: a feed-forward classifier and an autoencoder behind one preprocessor.

The preprocessing (log1p of heavy-tailed columns, standardisation, one-hot encoding of
categorical codes) is part of the module, so the exported ONNX graph takes raw feature values
and no client or batch job can scale them differently from training.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TabularConfig:
    """Sizes of the tabular models; defaults follow the seed tutorial's 64-32-1 network."""

    n_numeric: int
    category_sizes: tuple[int, ...] = ()
    hidden: tuple[int, ...] = (64, 32)
    autoencoder_hidden: tuple[int, ...] = (32, 8)
    dropout: float = 0.1


class TabularPreprocessor(nn.Module):
    """Raw features -> model features: log1p on flagged columns, standardise, one-hot codes.

    Inputs: ``numeric`` float32 [N, n_numeric] and ``categorical`` int64 [N, n_categorical]
    holding each value's index in its column's vocabulary. Output: float32 [N, out_features].
    """

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        log_mask: torch.Tensor,
        category_sizes: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))
        self.register_buffer("log_mask", log_mask.bool())
        self.category_sizes = tuple(category_sizes)
        self.out_features = mean.numel() + sum(self.category_sizes)

    @staticmethod
    def fit(
        numeric: torch.Tensor, log_mask: torch.Tensor, category_sizes: tuple[int, ...]
    ) -> TabularPreprocessor:
        """Fit the scaling constants on training rows only."""
        logged = torch.where(log_mask, torch.log1p(numeric.clamp_min(0)), numeric)
        return TabularPreprocessor(logged.mean(0), logged.std(0), log_mask, category_sizes)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        logged = torch.where(self.log_mask, torch.log1p(numeric.clamp_min(0)), numeric)
        parts = [(logged - self.mean) / self.std]
        for column, size in enumerate(self.category_sizes):
            codes = categorical[:, column : column + 1]
            vocabulary = torch.arange(size, device=codes.device)
            parts.append((codes == vocabulary).float())
        return torch.cat(parts, dim=1)


def mlp(sizes: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of the given sizes, ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class FraudClassifier(nn.Module):
    """Feed-forward network (64 ReLU, 32 ReLU, 1) returning logits [N]; sigmoid gives P(fraud)."""

    def __init__(self, in_features: int, config: TabularConfig) -> None:
        super().__init__()
        self.net = mlp((in_features, *config.hidden, 1), config.dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


class Autoencoder(nn.Module):
    """Encoder-decoder trained on legitimate rows; per-row squared error is the anomaly score."""

    def __init__(self, in_features: int, config: TabularConfig) -> None:
        super().__init__()
        hidden = config.autoencoder_hidden
        self.encoder = mlp((in_features, *hidden))
        self.decoder = mlp((hidden[-1], *reversed(hidden[:-1]), in_features))
        self.activation = nn.ReLU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.activation(self.encoder(features)))

    def reconstruction_error(self, features: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error per row, shape [N]."""
        return (self(features) - features).pow(2).mean(dim=1)


class FraudScorer(nn.Module):
    """The served graph: raw features in; ``fraud_probability``, ``anomaly_score`` out ([N])."""

    def __init__(
        self,
        preprocessor: TabularPreprocessor,
        classifier: FraudClassifier,
        autoencoder: Autoencoder,
    ) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.classifier = classifier
        self.autoencoder = autoencoder

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.preprocessor(numeric, categorical)
        probability = torch.sigmoid(self.classifier(features))
        return probability, self.autoencoder.reconstruction_error(features)
