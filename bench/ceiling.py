"""The in-process ceiling: ONNX Runtime alone, same model, same batch size, no HTTP."""

from __future__ import annotations

import time

import numpy as np

from core.model_store import LoadedModel


def ceiling_rows_per_second(
    model: LoadedModel,
    inputs: dict[str, np.ndarray],
    seconds: float = 2.0,
    release_arena: bool = True,
) -> tuple[float, float]:
    """Run ``inputs`` back to back for ``seconds``; return ``(rows/s, median ms per call)``.
    ``release_arena``: as ``LoadedModel.run`` (online calls: yes; a batch job's chunks: no)."""
    rows = len(next(iter(inputs.values())))
    model.run(inputs, release_arena)
    durations = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        model.run(inputs, release_arena)
        durations.append(time.perf_counter() - started)
    return rows * len(durations) / sum(durations), float(np.median(durations)) * 1e3
