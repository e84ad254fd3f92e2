"""Adaptive micro-batching: rows from concurrent requests share one ONNX Runtime call.

BentoML's own batching (``batchable=True``) only fits routes whose body and response are bare
lists; dlserve's routes answer ``{"model": ..., "results": [...]}``, so batching happens here,
in-process, behind the route. One inference runs at a time per model; requests that arrive
while it runs are joined into the next call (up to ``max_batch_rows``), so batches grow with
load and an idle service adds no waiting. ``max_wait_ms`` optionally holds an open batch a
little longer for more rows; a batch that fills (``max_batch_rows``) meanwhile goes at once.
Beyond ``max_queue_rows`` waiting rows, new requests are refused with ``OverloadedError``
rather than queued without bound. With a ``width`` (per-row cost, e.g.
a token sequence's length), a call also stays within ``max_batch_cost`` = rows x the widest
joined request. A request whose caller stopped waiting (cancelled) is dropped before its call.

With ``inline_rows``, a request of at most that many rows that finds the batcher idle (no call
running, nothing queued, no ``max_wait_ms``) and, per ``alone()``, no other request in the
worker that could join it, is run at once in the caller's thread, the event loop's: for a model
whose small calls cost less than the hop to the inference thread and back (~90 µs of CPU per
request; a fraud call of 1 to 100 rows takes 11-30 µs). Nothing can arrive while such a call
runs (it holds the loop), so it still is the only call of its model. Under concurrent load
every call goes through the thread as before: there the hop is shared by the requests joined
into one call, and the call runs beside the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import OverloadedError

Arrays = dict[str, np.ndarray]


Join = Callable[[list[Arrays]], Arrays]


def concatenate(parts: list[Arrays]) -> Arrays:
    """Rows of every request, stacked along axis 0 (the default join)."""
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def concatenate_padded(parts: list[Arrays], pad_value: int = 0) -> Arrays:
    """Like ``concatenate``, first right-padding axis 1 of every request's arrays with
    ``pad_value`` to the longest among them (token sequences of different lengths)."""
    width = {name: max(part[name].shape[1] for part in parts) for name in parts[0]}
    return concatenate(
        [
            {
                name: np.pad(
                    value,
                    [(0, 0), (0, width[name] - value.shape[1])] + [(0, 0)] * (value.ndim - 2),
                    constant_values=pad_value,
                )
                for name, value in part.items()
            }
            for part in parts
        ]
    )


def sequence_length(name: str) -> Callable[[Arrays], int]:
    """A request's per-row cost: the length (axis 1) of its input ``name`` (token sequences)."""
    return lambda inputs: int(inputs[name].shape[1])


@dataclass
class _Pending:
    inputs: Arrays
    rows: int
    width: int
    future: asyncio.Future[Arrays]


class MicroBatcher:
    """Joins concurrent ``submit`` calls into batched calls of ``infer``.

    ``infer`` takes arrays whose first axis is rows and returns arrays with the same first
    axis; it runs in one dedicated thread (or inline, see below). ``on_batch(rows, seconds,
    outputs)`` is called in the calling thread after each call (metrics). ``join`` stacks
    several requests' inputs into one batch (default: ``concatenate``; ``concatenate_padded``
    for token sequences). ``width``, ``max_batch_cost``, ``inline_rows`` and ``alone``: see the
    module's docstring (``None``: rows only; 0: every call in the inference thread; ``None``:
    always alone).
    """

    def __init__(
        self,
        infer: Callable[[Arrays], Arrays],
        *,
        max_batch_rows: int,
        max_wait_ms: float = 0.0,
        max_queue_rows: int = 100_000,
        on_batch: Callable[[int, float, Arrays], None] | None = None,
        join: Join = concatenate,
        width: Callable[[Arrays], int] | None = None,
        max_batch_cost: int | None = None,
        inline_rows: int = 0,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        self._infer = infer
        self._join = join
        self._width = width
        self._max_batch_cost = max_batch_cost
        self._max_batch_rows = max_batch_rows
        self._max_wait = max_wait_ms / 1000
        self._max_queue_rows = max_queue_rows
        self._on_batch = on_batch
        self._inline_rows = 0 if max_wait_ms else inline_rows
        self._alone = alone or (lambda: True)
        self._calling = False  # a batch is in the inference thread
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._full: asyncio.Event | None = None  # queued rows reached max_batch_rows
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def submit(self, inputs: Arrays) -> Arrays:
        """Queue one request's rows and wait for its slice of the batched outputs."""
        rows = len(next(iter(inputs.values())))
        if self._queued_rows + rows > self._max_queue_rows:
            raise OverloadedError(
                f"{self._queued_rows} rows already waiting (limit {self._max_queue_rows})"
            )
        idle = not self._queue and not self._calling
        if rows <= self._inline_rows and idle and self._alone():
            return self._infer_and_record(inputs, rows)
        loop = asyncio.get_running_loop()
        self._ensure_worker(loop)
        width = self._width(inputs) if self._width is not None else 1
        pending = _Pending(inputs, rows, width, loop.create_future())
        self._queue.append(pending)
        self._queued_rows += rows
        assert self._wakeup is not None and self._full is not None
        self._wakeup.set()
        if self._queued_rows >= self._max_batch_rows:
            self._full.set()
        return await pending.future

    def close(self) -> None:
        """Release the batching task and the inference thread once no request waits (from any
        thread); the batcher takes no more requests."""
        cancel_from_any_thread(self._worker)
        self._executor.shutdown(wait=False)

    def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup, self._full = asyncio.Event(), asyncio.Event()
            self._worker = loop.create_task(self._run())

    def _take_batch(self) -> list[_Pending]:
        """Pop queued requests, in arrival order, up to ``max_batch_rows`` and
        ``max_batch_cost`` (at least one); requests whose caller left are dropped."""
        batch: list[_Pending] = []
        rows = width = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # cancelled: nobody waits for these rows
                self._queue.popleft()
                self._queued_rows -= pending.rows
                continue
            wider = max(width, pending.width)
            if batch and not self._fits(rows + pending.rows, wider):
                break
            batch.append(self._queue.popleft())
            rows, width = rows + pending.rows, wider
        self._queued_rows -= rows
        return batch

    def _fits(self, rows: int, width: int) -> bool:
        within_cost = self._max_batch_cost is None or rows * width <= self._max_batch_cost
        return rows <= self._max_batch_rows and within_cost

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if self._max_wait and self._queued_rows < self._max_batch_rows:
                    await self._hold_open_batch()
                batch = self._take_batch()
                if not batch:
                    continue
                self._calling = True
                try:
                    outputs = await loop.run_in_executor(self._executor, self._call, batch)
                except Exception as exc:  # the failure belongs to every request in the batch
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    continue
                finally:
                    self._calling = False
                start = 0
                for pending in batch:
                    if not pending.future.done():  # a cancelled request is simply skipped
                        stop = start + pending.rows
                        pending.future.set_result(
                            {name: value[start:stop] for name, value in outputs.items()}
                        )
                    start += pending.rows

    async def _hold_open_batch(self) -> None:
        """Wait ``max_wait_ms`` for more rows, or less if the batch fills first."""
        assert self._full is not None
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), self._max_wait)

    def _call(self, batch: list[_Pending]) -> Arrays:
        joined = batch[0].inputs if len(batch) == 1 else self._join([p.inputs for p in batch])
        return self._infer_and_record(joined, sum(p.rows for p in batch))

    def _infer_and_record(self, inputs: Arrays, rows: int) -> Arrays:
        started = time.perf_counter()
        outputs = self._infer(inputs)
        if self._on_batch is not None:
            self._on_batch(rows, time.perf_counter() - started, outputs)
        return outputs


def cancel_from_any_thread(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` from any thread (its loop may be gone already)."""
    if task is not None and not task.done():
        loop = task.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
