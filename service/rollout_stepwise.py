"""Rollouts of stepwise models (``service.rollout``): what a canary watches of a stream.

A stepwise request (one stream or completion, one or more sequences) runs on one version, as
the canary's key hash chose it when the request took its generation (``Rollout.route``).
``watched`` passes the request's outputs through unchanged and, once every sequence ended,
tells the rollout the request's seconds and each sequence's end (finish reason and tokens
generated, read by the spec's ``SequenceEnd``); a failure in the stream is the version's
error. A client that leaves early counts for neither: its request ended neither way.

``SequenceFigures`` are one version's output distribution: the completion length, in tokens,
over ``LENGTH_BUCKETS``, and the finish reasons' frequencies; their drift from the served
version's is the PSI over each (``service.rollout.psi``, the same floor and bound).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from service.area import SequenceEnd

# Completion lengths in tokens (one token is one character for the text generator); +Inf added.
LENGTH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

Ends = list[tuple[str, int]]


class SequenceFigures:
    """One version's finished sequences: lengths (tokens, bucketed) and finish reasons."""

    def __init__(self) -> None:
        self.lengths = np.zeros(len(LENGTH_BUCKETS) + 1, dtype=np.int64)
        self.finish_reasons: dict[str, int] = {}

    def ended(self, ends: Ends) -> None:
        for reason, tokens in ends:
            self.lengths[bisect_left(LENGTH_BUCKETS, tokens)] += 1
            self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1

    def paired(self, reference: SequenceFigures) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``reference``'s and these counts over the same bins, per distribution: lengths,
        and finish reasons over the reasons either version gave (the drift's inputs)."""
        reasons = sorted(reference.finish_reasons.keys() | self.finish_reasons.keys())
        return {
            "completion_tokens": (reference.lengths, self.lengths),
            "finish_reasons": (
                np.array([reference.finish_reasons.get(r, 0) for r in reasons]),
                np.array([self.finish_reasons.get(r, 0) for r in reasons]),
            ),
        }

    def describe(self) -> dict[str, Any]:
        bounds = [*LENGTH_BUCKETS, "+Inf"]
        return {
            "sequences": int(self.lengths.sum()),
            "completion_tokens": dict(zip(map(str, bounds), self.lengths.tolist(), strict=True)),
            "finish_reasons": dict(sorted(self.finish_reasons.items())),
        }


async def watched(
    outputs: AsyncIterator[tuple[int, Any]],
    sequence_end: SequenceEnd,
    completed: Callable[[Ends, float], None],
    failed: Callable[[], None],
    clock: Callable[[], float],
) -> AsyncIterator[tuple[int, Any]]:
    """``outputs`` unchanged; at their end ``completed(ends, seconds)``, on a failure in them
    ``failed()``; neither when the reader leaves early. Closes ``outputs`` in every case."""
    started = clock()
    ends: Ends = []
    try:
        async for item in outputs:
            end = sequence_end.of(item[1])
            if end is not None:
                ends.append(end)
            yield item
    except Exception:
        failed()
        raise
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
    completed(ends, clock() - started)
