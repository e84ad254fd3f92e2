"""Light augmentation for 28x28 images: random shifts, left-right flips and random erasing."""

from __future__ import annotations

import torch

MAX_SHIFT = 2
ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.25)  # share of the image a random-erasing box covers
ERASE_ASPECT = (0.3, 3.3)  # box height / width


def shift_and_flip(images: torch.Tensor, max_shift: int = MAX_SHIFT) -> torch.Tensor:
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


def random_erase(images: torch.Tensor, probability: float = ERASE_PROBABILITY) -> torch.Tensor:
    """A copy of ``images`` ``[N, H, W]`` where, with ``probability`` each, one box covering
    ERASE_AREA of the image at an aspect in ERASE_ASPECT is filled with uniform noise
    (Zhong et al., "Random Erasing Data Augmentation", 2017)."""
    count, height, width = images.shape
    area = torch.empty(count).uniform_(*ERASE_AREA) * height * width
    log_aspect = torch.empty(count).uniform_(*torch.tensor(ERASE_ASPECT).log().tolist())
    box_h = (area * log_aspect.exp()).sqrt().round().clamp(1, height).long()
    box_w = (area / log_aspect.exp()).sqrt().round().clamp(1, width).long()
    top = (torch.rand(count) * (height - box_h + 1)).long()
    left = (torch.rand(count) * (width - box_w + 1)).long()
    rows, columns = torch.arange(height)[None, :], torch.arange(width)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    inside_columns = (columns >= left[:, None]) & (columns < (left + box_w)[:, None])
    chosen = (torch.rand(count) < probability)[:, None, None]
    box = inside_rows[:, :, None] & inside_columns[:, None, :] & chosen
    noise = torch.randint(0, 256, images.shape, dtype=images.dtype)
    return torch.where(box, noise, images)


def augment(images: torch.Tensor) -> torch.Tensor:
    """The training augmentation: shift and flip, then random erasing."""
    return random_erase(shift_and_flip(images))
