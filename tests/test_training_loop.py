"""The shared fit loop: best-epoch selection, and the moving average of the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.loop import exponential_average, fit_best_epoch


def test_the_average_follows_every_step_and_each_copy_keeps_its_own_best_epoch() -> None:
    """SGD on loss = w moves w by -0.1 a step; the score prefers w near -0.55, which the raw
    weights come nearest at the end of epoch 2 and the lagging average at the end of epoch 3."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = exponential_average(model, decay=0.8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.zeros(1),)] * 3
    curves = fit_best_epoch(
        model,
        batches,
        lambda m, _: m.weight.sum(),
        optimizer,
        lambda m: -abs(float(m.weight) + 0.55),
        epochs=3,
        name="test",
        quiet=True,
        average=average,
    )
    raw = [-0.1 * step for step in range(1, 10)]
    averaged = [raw[0]]
    for value in raw[1:]:
        averaged.append(0.8 * averaged[-1] + 0.2 * value)
    assert curves["validation"] == pytest.approx([-abs(raw[i] + 0.55) for i in (2, 5, 8)], abs=1e-6)
    expected = [-abs(averaged[i] + 0.55) for i in (2, 5, 8)]
    assert curves["validation_averaged"] == pytest.approx(expected, abs=1e-6)
    assert float(model.weight) == pytest.approx(raw[5])  # epoch 2: -0.6
    assert float(average.module.weight) == pytest.approx(averaged[8])  # epoch 3: -0.567
    assert not model.training and not average.module.training
