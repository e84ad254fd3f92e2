"""Coalesced shadow runs: a shadow rollout's sampled requests joined into few candidate calls.

``ShadowBatcher.offer(inputs, served_answers)`` runs on the event loop after the served version
answered; its whole cost is an append to a buffer, so that shadowing a request costs the served
route next to nothing. It returns ``False`` (the request is dropped; the caller counts it)
when ``capacity`` shadowed requests are already buffered or in the candidate's call: it never
waits and never raises. A **flush** joins the buffered requests, in arrival order, up to
``flush_rows`` rows (at least one request), into one awaited call of ``run`` (the candidate's
micro-batcher: the model runs off the event loop) once the buffer holds ``flush_rows`` rows or
``flush_seconds`` after a row entered an empty buffer, whichever comes first. At most one
flush is in flight; rows that came meanwhile go in the next one, at once if they fill it.
Each flush ends in one call of ``on_flush(Flush)`` with the candidate's outputs or its error:
every offered request is in exactly one ``Flush`` unless ``close()`` came first.

``compare`` is the one comparison of a flush's served and candidate answers (class bins or
scores), vectorised over every row of the flush.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.batching import Arrays, Join, concatenate

Run = Callable[[Arrays], Awaitable[Arrays]]


@dataclass(frozen=True)
class Comparison:
    """Rows compared, rows that agree (the same class; or scores that differ by at most
    ``agree_within``), and the sum of the scores' absolute differences (0 for classes)."""

    rows: int
    agreeing: int
    abs_difference: float


def compare(
    served: np.ndarray,
    candidate: np.ndarray,
    agree_within: float,
    by: Literal["class", "score"] = "score",
) -> Comparison:
    """The served and the candidate answers of the same rows (any shape, same size), compared
    value by value: class bins by equality (``by="class"``), scores within ``agree_within``."""
    if by == "class":
        agreeing = int(np.count_nonzero(np.ravel(candidate) == np.ravel(served)))
        return Comparison(int(np.size(served)), agreeing, 0.0)
    difference = np.abs(
        np.asarray(candidate, np.float64).ravel() - np.asarray(served, np.float64).ravel()
    )
    return Comparison(
        difference.size,
        int(np.count_nonzero(difference <= agree_within)),
        float(difference.sum()),
    )


@dataclass
class Flush:
    """One candidate call for ``requests`` shadowed requests (``rows`` rows in all):
    ``seconds[i]`` is request ``i``'s time from its offer to the candidate's answer (or
    failure); ``served_answers`` the served version's answer of every row, its class bins or
    its scores (``None`` when a request had none); ``outputs`` the candidate's, or ``error``
    why the call failed."""

    requests: int
    rows: int
    seconds: np.ndarray
    served_answers: np.ndarray | None
    outputs: Arrays | None = None
    error: BaseException | None = None


class ShadowBatcher:
    """Buffers shadowed requests and flushes them through ``run`` (see the module docstring).
    Lives on one event loop; ``offer`` and ``close`` are called on it."""

    def __init__(
        self,
        run: Run,
        on_flush: Callable[[Flush], None],
        *,
        capacity: int,
        flush_rows: int,
        flush_seconds: float,
        join: Join = concatenate,
    ) -> None:
        self._run = run
        self._on_flush = on_flush
        self._join = join
        self.capacity = capacity
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._inputs: list[Arrays] = []
        self._answers: list[np.ndarray | None] = []
        self._offered: list[float] = []  # perf_counter at each offer
        self._rows: list[int] = []
        self._buffered_rows = 0
        self._in_call = 0  # requests in the flush in flight
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Shadowed requests buffered or in the candidate's call."""
        return len(self._inputs) + self._in_call

    def offer(self, inputs: Arrays, served_answers: np.ndarray | None) -> bool:
        """Buffer one request's rows and its served scores; ``False`` when full (dropped)."""
        if self._closed or len(self._inputs) + self._in_call >= self.capacity:
            return False
        rows = len(next(iter(inputs.values())))
        self._inputs.append(inputs)
        self._answers.append(served_answers)
        self._offered.append(time.perf_counter())
        self._rows.append(rows)
        self._buffered_rows += rows
        if self._flushing is not None:
            return True  # the flush in flight takes these rows next
        if self._buffered_rows >= self.flush_rows:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.flush_seconds, self._start_flush
            )
        return True

    def close(self) -> None:
        """Drop what is buffered and take no more; a flush in flight still reports."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._take(len(self._inputs))

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is None and self._inputs:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._inputs:
                await self._flush_once()
                if self._buffered_rows < self.flush_rows:
                    break  # the rest waits for more rows or its timer
        finally:
            self._flushing = None
        if self._inputs and self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(
                self.flush_seconds, self._start_flush
            )

    async def _flush_once(self) -> None:
        count, rows = 1, self._rows[0]
        while count < len(self._rows) and rows + self._rows[count] <= self.flush_rows:
            rows += self._rows[count]
            count += 1
        inputs, scores, offered = self._take(count)
        known = [score for score in scores if score is not None]
        served = np.concatenate(known) if len(known) == count else None
        self._in_call = count
        outputs: Arrays | None = None
        error: BaseException | None = None
        try:
            outputs = await self._run(inputs[0] if count == 1 else self._join(inputs))
        except Exception as exc:  # the candidate's failure is reported, never raised
            error = exc
        finally:
            self._in_call = 0
        seconds = time.perf_counter() - np.asarray(offered)
        self._on_flush(Flush(count, rows, seconds, served, outputs, error))

    def _take(self, count: int) -> tuple[list[Arrays], list[np.ndarray | None], list[float]]:
        """Remove and return the first ``count`` buffered requests."""
        inputs, self._inputs = self._inputs[:count], self._inputs[count:]
        answers, self._answers = self._answers[:count], self._answers[count:]
        offered, self._offered = self._offered[:count], self._offered[count:]
        self._buffered_rows -= sum(self._rows[:count])
        del self._rows[:count]
        return inputs, answers, offered
