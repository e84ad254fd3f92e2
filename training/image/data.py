"""Fashion-MNIST from IDX files (gzipped or not) in a folder, split into train/validation/test.

The default folder is the Debian package ``dataset-fashion-mnist``'s; ``$DLSERVE_FASHION_MNIST``
or ``--data-dir`` point elsewhere (the official downloads use the same file names).
"""

from __future__ import annotations

import argparse
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.areas import TrainingError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


class DataError(TrainingError):
    """The data folder lacks a file or holds one that is not the expected IDX array."""


@dataclass
class Split:
    """Raw ``uint8`` images ``[N, 28, 28]`` (light on dark) and ``int64`` labels ``[N]``."""

    images: np.ndarray
    labels: np.ndarray

    def head(self, rows: int | None) -> Split:
        return self if rows is None else Split(self.images[:rows], self.labels[:rows])


def default_dir() -> Path:
    return Path(os.environ.get("DLSERVE_FASHION_MNIST", DEFAULT_DIR))


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the folder of the Fashion-MNIST IDX files."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the Fashion-MNIST IDX files (.gz or not) (default: "
        "$DLSERVE_FASHION_MNIST or /usr/share/datasets/fashion-mnist)",
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file (``path`` or ``path.gz``) as a ``uint8`` array; DataError if malformed."""
    candidates = [path.with_name(path.name + ".gz"), path]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise DataError(f"{path.name}[.gz] not found in {path.parent} (see --data-dir)")
    opener = gzip.open if found.suffix == ".gz" else open
    with opener(found, "rb") as handle:
        raw = handle.read()
    header = np.frombuffer(raw[:4], dtype=">i4")[0] if len(raw) >= 4 else -1
    if header != magic:
        raise DataError(f"{found} is not an IDX file with magic number {magic}")
    ndim = magic & 0xFF
    shape = tuple(int(d) for d in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">i4"))
    data = np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).copy()
    if data.size != int(np.prod(shape)):
        raise DataError(f"{found} holds {data.size} values, header says {shape}")
    return data.reshape(shape)


def load_split(directory: Path, name: str) -> Split:
    """The ``train`` or ``test`` split of the IDX files in ``directory``."""
    images_file, labels_file = _FILES[name]
    images = read_idx(directory / images_file, _IMAGES_MAGIC)
    labels = read_idx(directory / labels_file, _LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    return Split(images, labels)


def load_splits(directory: Path, validation_rows: int, seed: int) -> tuple[Split, Split, Split]:
    """Train and validation (a seeded random hold-out of the training file), and test."""
    train, test = load_split(directory, "train"), load_split(directory, "test")
    order = np.random.default_rng(seed).permutation(len(train.labels))
    held, kept = order[:validation_rows], order[validation_rows:]
    return (
        Split(train.images[kept], train.labels[kept]),
        Split(train.images[held], train.labels[held]),
        test,
    )
