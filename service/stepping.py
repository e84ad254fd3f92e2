"""Stepwise models: every active sequence advances one step per call, together, as it streams.

A ``StepProgram`` says how one model starts a sequence (``start``, e.g. a prompt's prefill,
run as its own call) and advances a list of them by one step in one batched call (``step``).
The ``StepScheduler`` owns the loop: between steps it admits waiting sequences (at most
``max_active`` advance together; at most ``max_waiting`` wait, beyond that ``QueueFullError``),
drops sequences that finished or whose client left, and hands each step's outputs to each
request's stream as they are produced. A request is a group of one or more sequences (a list
of prompts, ``n``, ``best_of``), admitted whole or not at all, each sequence advancing on its
own like any other. Model calls run in one dedicated thread (ONNX Runtime
releases the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from service.batching import cancel_from_any_thread
from service.errors import QueueFullError

State = TypeVar("State")


class StepProgram(Protocol[State]):
    """How one stepwise model advances its sequences; called only from the inference thread."""

    def start(self, request: Any) -> State:
        """A new sequence's state for ``request`` (may run the model once, e.g. a prefill)."""

    def step(self, states: Sequence[State]) -> None:
        """Advance every state by one step in one batched call (states are updated in place)."""

    def take_outputs(self, state: State) -> list[Any]:
        """The outputs ``state`` produced since the last call (JSON-ready), oldest first."""

    def finished(self, state: State) -> bool:
        """Whether ``state`` needs no further step."""

    def coalesce(self, outputs: list[Any]) -> list[Any]:
        """Outputs that waited for a slow reader, joined as it should receive them (text
        pieces into one, say), so a busy server sends fewer, larger events."""


_END = object()


@dataclass(eq=False)
class _Sequence(Generic[State]):
    request: Any
    index: int  # in its group
    outputs: asyncio.Queue[Any]  # its group's: ``(index, output)``, ``(index, _END)``, failures
    state: State | None = None
    left: bool = False  # the client stopped reading


class StepScheduler(Generic[State]):
    """Runs ``program`` for every admitted request; ``stream`` is one request's view.

    ``on_change(active, waiting)`` is called whenever either count changes (gauges);
    ``on_step(sequences, seconds)`` after each batched step (metrics).
    """

    def __init__(
        self,
        program: StepProgram[State],
        *,
        max_active: int,
        max_waiting: int,
        on_change: Callable[[int, int], None] | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        self._program = program
        self._max_active = max_active
        self._max_waiting = max_waiting
        self._on_change = on_change
        self._on_step = on_step
        self._waiting: deque[_Sequence[State]] = deque()
        self._active: list[_Sequence[State]] = []
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepwise")

    @property
    def counts(self) -> tuple[int, int]:
        """``(active, waiting)`` sequences."""
        return len(self._active), len(self._waiting)

    def admit(self, requests: Sequence[Any]) -> AsyncIterator[tuple[int, Any]]:
        """Queue one request's sequences (one per item of ``requests``, at least one) now,
        all or none: ``QueueFullError`` when they would pass ``max_waiting`` waiting
        sequences. Returns one iterator of ``(index in requests, output)`` for all of them,
        each sequence's outputs in order; closing it early frees every place."""
        if not requests:
            raise ValueError("a request has at least one sequence")
        if len(self._waiting) + len(requests) > self._max_waiting:
            raise QueueFullError(
                f"{len(self._waiting)} sequences already waiting, {len(requests)} more asked "
                f"(limit {self._max_waiting})"
            )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        group = [_Sequence(request, index, queue) for index, request in enumerate(requests)]
        self._waiting.extend(group)
        self._changed()
        self._ensure_loop()
        return self._outputs(group)

    async def _outputs(self, group: list[_Sequence[State]]) -> AsyncIterator[tuple[int, Any]]:
        queue, running = group[0].outputs, len(group)
        try:
            while running:
                waiting = [await queue.get()]
                while not queue.empty():  # the reader fell behind: take everything at once
                    waiting.append(queue.get_nowait())
                failure = next((i for i in waiting if isinstance(i, BaseException)), None)
                if failure is not None:
                    raise failure
                pending: dict[int, list[Any]] = {}
                for index, item in waiting:
                    if item is _END:
                        running -= 1
                    else:
                        pending.setdefault(index, []).append(item)
                for index, items in pending.items():
                    for item in self._program.coalesce(items) if len(items) > 1 else items:
                        yield index, item
        finally:
            for sequence in group:
                self._leave(sequence)

    def _leave(self, sequence: _Sequence[State]) -> None:
        """The client is gone or done: free a waiting place at once, an active one at the next
        step (the running step may still be using it)."""
        sequence.left = True
        if sequence in self._waiting:
            self._waiting.remove(sequence)
            self._changed()
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        """Release the step loop and its thread once no sequence runs (from any thread); the
        scheduler takes no more requests."""
        cancel_from_any_thread(self._loop_task)
        self._executor.shutdown(wait=False)

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wakeup = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        assert self._wakeup is not None
        self._wakeup.set()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(len(self._active), len(self._waiting))

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_finished()
            if not self._active and not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._admit_waiting(loop)
            if self._active:
                await self._step(loop)

    async def _admit_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start waiting sequences (each its own call) while there is room."""
        while self._waiting and len(self._active) < self._max_active:
            sequence = self._waiting.popleft()
            try:
                sequence.state = await loop.run_in_executor(
                    self._executor, self._program.start, sequence.request
                )
            except Exception as exc:  # the request fails alone
                sequence.outputs.put_nowait(exc)
                self._changed()
                continue
            self._active.append(sequence)
            self._changed()
            self._deliver(sequence)

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = [sequence for sequence in self._active if not sequence.left]
        if not batch:
            return
        started = loop.time()
        try:
            await loop.run_in_executor(
                self._executor, self._program.step, [sequence.state for sequence in batch]
            )
        except Exception as exc:  # the failure belongs to every sequence of the step
            for sequence in batch:
                sequence.outputs.put_nowait(exc)
                sequence.left = True
            return
        if self._on_step is not None:
            self._on_step(len(batch), loop.time() - started)
        for sequence in batch:
            self._deliver(sequence)

    def _deliver(self, sequence: _Sequence[State]) -> None:
        for output in self._program.take_outputs(sequence.state):
            sequence.outputs.put_nowait((sequence.index, output))
        if self._program.finished(sequence.state):
            sequence.outputs.put_nowait((sequence.index, _END))
            sequence.left = True

    def _drop_finished(self) -> None:
        kept = [sequence for sequence in self._active if not sequence.left]
        if len(kept) != len(self._active):
            self._active = kept
            self._changed()
