"""Numeric precisions of stored versions, and which stored version serves a precision.

Training registers a model's gated variants (``training.variants``: INT8 today) as versions of
the same model, before the FP32 graph they were made from, so the store's ``latest`` pointer
names the FP32 version. A variant's ``metadata.json`` holds ``precision``, ``variant_of``
(the FP32 graph's sha256) and ``gate`` (``passed`` and its checks); a version without
``precision`` is FP32 (every version stored before variants existed).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.model_store import (
    METADATA_FILE,
    ModelUnavailableError,
    latest_version,
    model_store_folder,
    read_metadata,
)
from core.precision_names import FP32, INT8, PRECISIONS, precision_of

__all__ = ["FP32", "INT8", "PRECISIONS", "precision_of", "version_for_precision"]


def _declared_precision(path: Path) -> str | None:
    """The precision a metadata file declares; ``None`` when unreadable (loading says why)."""
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return precision_of(metadata) if isinstance(metadata, dict) else None


def version_for_precision(name: str, precision: str) -> str | None:
    """The stored version of ``name`` to serve at ``precision``; ``None`` when none is stored.

    FP32: the version the store's ``latest`` pointer names (``latest_version``), unless it is a
    variant (deleting a run's FP32 version points ``latest`` at its variant). Another
    precision: the newest version of that precision whose gate passed and that was made from
    the latest version's graph (its ``variant_of.sha256``), so a variant never serves weights
    older than the FP32 version would. ``ModelUnavailableError`` when there is no such
    variant (it failed its gate, or was never made), naming the latest version.
    """
    latest = latest_version(name)
    if latest is None:
        return None
    folder = model_store_folder() / name
    if precision == FP32:
        declared = _declared_precision(folder / latest / METADATA_FILE)
        if declared not in (None, FP32):
            raise ModelUnavailableError(
                f"model {name!r}: the store's latest version {latest} is an {declared} variant, "
                f"not an {FP32} graph (its FP32 version was deleted?); delete the variant or "
                "register the model again"
            )
        return latest
    base = read_metadata(folder / latest, f"{name}:{latest}")
    if precision_of(base) == precision:
        return latest
    found = []
    for version in folder.iterdir():
        try:
            metadata = json.loads((version / METADATA_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not a version, or one caught half-written: not a candidate
        if (
            isinstance(metadata, dict)
            and precision_of(metadata) == precision
            and metadata.get("variant_of", {}).get("sha256") == base["sha256"]
            and metadata.get("gate", {}).get("passed") is True
        ):
            found.append((str(metadata.get("created_at", "")), version.name))
    if not found:
        raise ModelUnavailableError(
            f"model {name!r}: no {precision} variant of version {latest} passed its gate (the "
            f"training report says why); serve it at {FP32} (DLSERVE_PRECISION) or retrain"
        )
    return max(found)[1]
