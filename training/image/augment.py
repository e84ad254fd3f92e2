"""Light augmentation for 28x28 images: random shifts of up to 2 pixels and left-right flips."""

from __future__ import annotations

import torch

MAX_SHIFT = 2


def augment(images: torch.Tensor, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """A copy of ``images`` ``[N, H, W]``, each shifted by its own random offset (edges filled
    with 0, the background) and flipped left-right with probability 1/2 (torch's RNG)."""
    count, height, width = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, count, 1))
    rows = (offsets[0] + torch.arange(height))[:, :, None]
    columns = (offsets[1] + torch.arange(width))[:, None, :]
    flip = torch.rand(count, 1, 1) < 0.5
    columns = torch.where(flip, columns.flip(-1), columns)
    return padded[torch.arange(count)[:, None, None], rows, columns]
