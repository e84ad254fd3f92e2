"""The numeric precisions a stored version may declare, and how to read one: a leaf (the
settings and the model store import it; ``core.precision`` picks versions by it)."""

from __future__ import annotations

from typing import Any

FP32 = "fp32"
INT8 = "int8"
PRECISIONS = (FP32, INT8)  # what training makes (no FP16: training.variants says why)


def precision_of(metadata: dict[str, Any]) -> str:
    """The precision a stored version's metadata declares (FP32 when it declares none)."""
    return str(metadata.get("precision", FP32))
