"""The per-model plug-in of batch jobs, and how the job finds it.

An area module ``service/<module>.py`` declares ``BATCH = BatchAdapter(...)`` (or a tuple of
adapters, one per model) at top level; the batch job finds it there (by that declaration) and
scores the model with no batch code of its own. The adapter's functions are the ones the HTTP
route uses, so both paths share them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from service.batching import Arrays
from service.served_model import ModelSpec

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchAdapter:
    """How to score one model from a table chunk.

    ``validate(table) -> (columns, reasons)``: numpy input columns for every row and, per row,
    ``None`` or why the row is rejected. ``encode(columns, metadata)``: valid rows' columns and
    the stored model's metadata -> ``(graph inputs, fields)``, where ``fields`` are output
    fields known before inference (e.g. a text's ``truncated`` flag; often none). The HTTP
    route uses the same encoding. ``to_columns(outputs, metadata)``: graph outputs -> the output
    fields, one array each. ``input_columns``: the columns to read; ``categorical_columns``:
    those of them holding a few distinct strings, which Parquet inputs deliver
    dictionary-encoded (cheaper to read and to check than one string per row).
    ``batch_size``: rows per chunk and ONNX Runtime call when the job does not say, sized to
    the model's memory per row.
    """

    spec: ModelSpec
    input_columns: tuple[str, ...]
    validate: Callable[[pa.Table], tuple[Columns, np.ndarray]]
    encode: Callable[[Mapping[str, np.ndarray], dict[str, Any]], tuple[Arrays, Columns]]
    to_columns: Callable[[Arrays, dict[str, Any]], Columns]
    categorical_columns: tuple[str, ...] = ()
    batch_size: int = 8192


class UnknownModelError(LookupError):
    """No area module offers a batch adapter for the requested model."""


def _area_modules() -> list[str]:
    """Modules of the ``service`` package that declare a top-level ``BATCH``."""
    package = Path(__file__).resolve().parents[1]
    declares = re.compile(r"^BATCH\s*[:=]", re.MULTILINE)
    return [
        f"service.{path.stem}"
        for path in sorted(package.glob("*.py"))
        if declares.search(path.read_text(encoding="utf-8"))
    ]


def all_adapters() -> list[BatchAdapter]:
    """Every declared adapter, in module order and then declaration order."""
    declared = [importlib.import_module(name).BATCH for name in _area_modules()]
    return [
        adapter
        for batch in declared
        for adapter in (batch if isinstance(batch, tuple) else (batch,))
    ]


def find_adapter(model: str) -> BatchAdapter:
    """The adapter whose model-store name or area is ``model`` (an area with several models:
    the first one its module declares)."""
    adapters = all_adapters()
    for adapter in adapters:
        if model in (adapter.spec.area, adapter.spec.name):
            return adapter
    offered = sorted({adapter.spec.area for adapter in adapters} | {a.spec.name for a in adapters})
    raise UnknownModelError(f"no batch adapter for model {model!r}; available: {offered}")
