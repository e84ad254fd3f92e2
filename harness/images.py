"""Fashion-MNIST test images as the files a client uploads (shared by the image tests)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from training.image.data import default_dir, load_split


def load_test_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images (uint8 [N, 28, 28]) and labels of the Fashion-MNIST test split."""
    split = load_split(default_dir(), "test").head(count)
    return split.images, split.labels


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    """``pixels`` saved as an image file in ``fmt`` (optionally converted to ``mode`` first)."""
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
