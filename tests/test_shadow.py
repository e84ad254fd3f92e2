"""The shadow batcher in-process (``service.shadow``): shadowed requests coalesced into few
candidate calls, every row compared, a full buffer dropping (counted) without waiting, and a
failing candidate reported, never raised. The candidate is an async function the test holds
on an event."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batching import Arrays
from service.shadow import Flush, ShadowBatcher, compare


def rows(first: int, count: int) -> Arrays:
    """``count`` rows numbered from ``first`` (input ``x``)."""
    return {"x": np.arange(first, first + count, dtype=np.float64)}


class Candidate:
    """Answers ``x / 100`` per row once ``go`` is set; records each call's rows (and sets
    ``called``)."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.called = asyncio.Event()
        self.calls: list[list[float]] = []

    async def __call__(self, inputs: Arrays) -> Arrays:
        self.calls.append(inputs["x"].tolist())
        self.called.set()
        await self.go.wait()
        return {"score": inputs["x"] / 100}


def test_offers_are_joined_into_few_calls_and_a_full_buffer_drops_at_once() -> None:
    async def scenario() -> tuple[Candidate, list[Flush], list[bool], ShadowBatcher]:
        candidate, flushes = Candidate(), []
        done = asyncio.Event()

        def on_flush(flush: Flush) -> None:
            flushes.append(flush)
            if sum(f.requests for f in flushes) == 20:
                done.set()

        batcher = ShadowBatcher(candidate, on_flush, capacity=20, flush_rows=8, flush_seconds=0.005)
        offered = [batcher.offer(rows(n, 1), np.array([n / 100])) for n in range(8)]
        await candidate.called.wait()  # 8 rows fill a flush: its call starts, held on go
        assert candidate.calls == [list(map(float, range(8)))]
        # 12 more fit beside the 8 in the call; the 5 after are dropped while the call waits
        offered += [batcher.offer(rows(n, 1), np.array([n / 100])) for n in range(8, 25)]
        assert batcher.pending == 20
        candidate.go.set()
        await done.wait()  # the second flush is full; the last 4 rows go on their timer
        return candidate, flushes, offered, batcher

    candidate, flushes, offered, batcher = asyncio.run(scenario())
    assert offered == [True] * 20 + [False] * 5
    assert [len(call) for call in candidate.calls] == [8, 8, 4]
    assert [f.requests for f in flushes] == [8, 8, 4] and batcher.pending == 0
    for flush in flushes:  # every row compared with its own served score, in order
        assert flush.error is None and flush.outputs is not None
        assert flush.served_answers is not None
        comparison = compare(flush.served_answers, flush.outputs["score"], 1e-9)
        assert comparison.rows == comparison.agreeing == flush.rows
        assert flush.seconds.shape == (flush.requests,) and (flush.seconds >= 0).all()


def test_a_flush_joins_requests_of_several_rows_up_to_its_rows() -> None:
    async def scenario() -> list[Flush]:
        candidate, flushes = Candidate(), []
        candidate.go.set()
        done = asyncio.Event()

        def on_flush(flush: Flush) -> None:
            flushes.append(flush)
            if sum(f.requests for f in flushes) == 4:
                done.set()

        batcher = ShadowBatcher(candidate, on_flush, capacity=10, flush_rows=6, flush_seconds=0.005)
        for first in (0, 3, 6, 9):  # 3 rows each: two per call of at most 6 rows
            assert batcher.offer(rows(first, 3), np.arange(first, first + 3) / 100)
        await done.wait()
        return flushes

    flushes = asyncio.run(scenario())
    assert [(f.requests, f.rows) for f in flushes] == [(2, 6), (2, 6)]
    joined = np.concatenate([f.outputs["score"] for f in flushes if f.outputs is not None])
    assert joined.tolist() == (np.arange(12) / 100).tolist()


def test_a_failing_candidate_is_reported_and_a_closed_batcher_takes_nothing() -> None:
    async def failing(inputs: Arrays) -> Arrays:
        raise RuntimeError("the candidate broke")

    async def scenario() -> tuple[list[Flush], bool, int]:
        flushes: list[Flush] = []
        done = asyncio.Event()

        def on_flush(flush: Flush) -> None:
            flushes.append(flush)
            done.set()

        batcher = ShadowBatcher(failing, on_flush, capacity=4, flush_rows=2, flush_seconds=60)
        assert batcher.offer(rows(0, 1), None) and batcher.offer(rows(1, 1), None)
        await done.wait()
        assert batcher.offer(rows(2, 1), None)  # buffered on its (long) timer
        batcher.close()  # drops it
        return flushes, batcher.offer(rows(3, 1), None), batcher.pending

    flushes, taken_after_close, pending = asyncio.run(scenario())
    (flush,) = flushes
    assert isinstance(flush.error, RuntimeError) and flush.outputs is None
    assert flush.requests == 2 and flush.served_answers is None
    assert not taken_after_close and pending == 0


@pytest.mark.parametrize("within, agreeing", [(0.0, 1), (0.1, 2), (0.5, 3)])
def test_compare_counts_rows_within_the_difference(within: float, agreeing: int) -> None:
    served, candidate = np.array([0.1, 0.5, 0.9]), np.array([[0.1], [0.6], [0.5]])
    comparison = compare(served, candidate, within + 1e-12)
    assert (comparison.rows, comparison.agreeing) == (3, agreeing)
    assert comparison.abs_difference == pytest.approx(0.5)
