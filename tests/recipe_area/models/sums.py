"""Sums: one linear layer that learns to add up four numbers (the add-an-area recipe's area)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SumConfig:
    """How many numbers a row holds."""

    width: int = 4


class SumRegressor(nn.Module):
    """``numbers`` [batch, width] -> ``total`` [batch]."""

    def __init__(self, config: SumConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(config.width, 1)

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.linear(numbers).squeeze(1)
