"""The image generator's contract: the noise a seed stands for, and the pixels that are served.

The generator graph (``image-generator``) takes ``noise`` float32 ``[n, noise_dim]`` and
``class_id`` int64 ``[n]`` and returns ``images`` float32 ``[n, 28, 28]`` in ``[0, 1]``. The
noise is not sent by clients: it is drawn from the request's seed by ``draw_noise``, so a seed
means the same images wherever the same model version runs. ``to_pixels`` turns the graph's
output into the 8-bit images that are served (and that the training judge classifies).

numpy only: no torch, training, models or service imports.
"""

from __future__ import annotations

import numpy as np

SIZE = 28


def draw_noise(seed: int, count: int, noise_dim: int) -> np.ndarray:
    """Standard normal noise ``float32 [count, noise_dim]`` for ``seed`` (a non-negative int).

    Drawn by ``np.random.Generator(np.random.PCG64(seed)).standard_normal(dtype=float32)``
    in row-major order, so the first ``k`` rows of a larger draw are the draw of ``k`` rows:
    image ``i`` of a request does not depend on how many images were asked for. PCG64 and
    NumPy's float32 ziggurat are integer and table arithmetic for 99% of draws (the rest call
    the C library's ``exp`` and ``log1pf``), so in practice the bytes are the same on any
    IEEE-754 machine. NumPy does not promise the stream across its releases (NEP 19): the
    tests pin a digest of a known draw, so an upgrade that changes it fails them.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if count < 0 or noise_dim < 1:
        raise ValueError(f"need count >= 0 and noise_dim >= 1, got {count}, {noise_dim}")
    generator = np.random.Generator(np.random.PCG64(int(seed)))
    return generator.standard_normal((count, noise_dim), dtype=np.float32)


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Float images ``[n, 28, 28]`` in ``[0, 1]`` -> ``uint8 [n, 28, 28]``: ``floor(255 x + 0.5)``
    (round half up), clipped to 0..255; NaN becomes 0. Light on dark, as the graph makes them."""
    values = np.asarray(images, dtype=np.float64)
    if values.ndim != 3 or values.shape[1:] != (SIZE, SIZE):
        raise ValueError(f"expected images [n, {SIZE}, {SIZE}], got shape {values.shape}")
    scaled = np.floor(np.nan_to_num(values, nan=0.0) * 255.0 + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)
