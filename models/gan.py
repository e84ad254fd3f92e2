"""Conditional GAN for 28x28 Fashion-MNIST images: DCGAN-style convolutions, class conditioned.

``Generator`` is what gets exported: ``noise`` float32 ``[N, noise_dim]`` and ``class_id``
int64 ``[N]`` in, ``images`` float32 ``[N, 28, 28]`` in ``[0, 1]`` out, light on dark like
Fashion-MNIST. It conditions on the class twice: the class embedding is concatenated to the
noise, and every batch norm takes a class-specific scale and shift (conditional batch norm,
as in SNGAN and BigGAN). ``Discriminator`` scores an image given its class with a projection
head (Miyato & Koyama, "cGANs with Projection Discriminator", 2018): an unconditional score
plus the inner product of the class embedding with the image's features; its layers are
spectrally normalised. Only the generator is served.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

SIDE = 28


@dataclass(frozen=True)
class GANConfig:
    """Sizes. The generator has ``g_width`` channels at 7x7 and half that at 14x14; the
    discriminator has ``d_width`` at 14x14, twice that at 7x7 and four times at 4x4."""

    n_classes: int = 10
    noise_dim: int = 64
    class_dim: int = 16  # class embedding concatenated to the generator's noise
    g_width: int = 128
    d_width: int = 64


class ConditionalBatchNorm(nn.Module):
    """2-d batch norm without its own affine part, then a per-class scale (around 1) and shift."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(n_classes, channels)
        self.shift = nn.Embedding(n_classes, channels)
        nn.init.zeros_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, class_id: torch.Tensor) -> torch.Tensor:
        scale = 1 + self.scale(class_id)[:, :, None, None]
        return self.norm(x) * scale + self.shift(class_id)[:, :, None, None]


class Generator(nn.Module):
    """``(noise [N, noise_dim], class_id [N])`` -> images ``[N, 28, 28]`` in ``[0, 1]``.

    Linear to ``g_width x 7 x 7``, then two stride-2 4x4 transposed convolutions (7 -> 14 ->
    28), conditional batch norm and ReLU between them, a sigmoid at the end.
    """

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        width = config.g_width
        self.embed = nn.Embedding(config.n_classes, config.class_dim)
        self.project = nn.Linear(config.noise_dim + config.class_dim, width * 7 * 7, bias=False)
        self.norm0 = ConditionalBatchNorm(width, config.n_classes)
        self.up1 = nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False)
        self.norm1 = ConditionalBatchNorm(width // 2, config.n_classes)
        self.up2 = nn.ConvTranspose2d(width // 2, 1, 4, stride=2, padding=1)

    def forward(self, noise: torch.Tensor, class_id: torch.Tensor) -> torch.Tensor:
        x = self.project(torch.cat([noise, self.embed(class_id)], dim=1))
        x = x.view(-1, self.config.g_width, 7, 7)
        x = torch.relu(self.norm0(x, class_id))
        x = torch.relu(self.norm1(self.up1(x), class_id))
        return torch.sigmoid(self.up2(x).float()).squeeze(1)


class Discriminator(nn.Module):
    """``(images [N, 28, 28] in [0, 1], class_id [N])`` -> real-vs-generated score ``[N]``.

    Three stride-2 convolutions (28 -> 14 -> 7 -> 4) with leaky ReLU, summed over positions;
    the score is a linear function of those features plus their inner product with the
    class's embedding (the projection). Spectral norm on every layer.
    """

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        width = config.d_width
        self.features = nn.Sequential(
            spectral_norm(nn.Conv2d(1, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
        )
        self.score = spectral_norm(nn.Linear(4 * width, 1))
        self.embed = spectral_norm(nn.Embedding(config.n_classes, 4 * width))

    def forward(self, images: torch.Tensor, class_id: torch.Tensor) -> torch.Tensor:
        features = self.features(images.unsqueeze(1) * 2 - 1).sum(dim=(2, 3)).float()
        projection = (self.embed(class_id).float() * features).sum(dim=1)
        return self.score(features).squeeze(1).float() + projection


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
