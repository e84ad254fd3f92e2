"""Stepwise models: every active sequence advances one step per call, together, as it streams.

A ``StepProgram`` says how one model starts a sequence (``start``, e.g. a prompt's prefill,
run as its own call) and advances a list of them by one step in one batched call (``step``).
The ``StepScheduler`` owns the loop: between steps it admits waiting sequences (at most
``max_active`` advance together; at most ``max_waiting`` wait, beyond that ``QueueFullError``),
drops sequences that finished or whose client left, and hands each step's outputs to each
request's stream as they are produced. A request is a group of one or more sequences (a list
of prompts, ``n``, ``best_of``), admitted whole or not at all, each sequence advancing on its
own like any other.

The loop runs in one dedicated thread (ONNX Runtime releases the GIL), never on the event
loop, and steps on without waiting for the event loop to send what it produced: each round's
outputs, every stream's, reach the event loop in one ``call_soon_threadsafe``. The thread runs
at most ``RUN_AHEAD`` hand-overs ahead of the event loop running them, so a client that leaves
stops its sequence within a few steps. A stream whose reader fell behind takes its waiting
outputs at once, joined by ``StepProgram.coalesce``: when sending costs more than stepping,
events carry several steps' outputs instead of slowing the steps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from service.errors import QueueFullError

State = TypeVar("State")
# hand-overs the step thread may post before the event loop has run them (see the docstring)
RUN_AHEAD = 8


class StepProgram(Protocol[State]):
    """How one stepwise model advances its sequences; called only from the step thread."""

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
    loop: asyncio.AbstractEventLoop  # the one its reader runs on
    state: State | None = None
    left: bool = False  # finished, or the client stopped reading


# what the step thread hands an event loop: each item for its queue
_Delivery = list[tuple[asyncio.Queue[Any], Any]]


class StepScheduler(Generic[State]):
    """Runs ``program`` for every admitted request; ``admit`` gives one request's view.

    ``on_change(active, waiting)`` is called whenever either count changes (gauges), from the
    event loop or the step thread, one call at a time, in the order of the changes;
    ``on_step(sequences, seconds)`` after each batched step, from the step thread (metrics).
    ``interval_s``: a request's iterator gives its outputs at most once per ``interval_s``
    (its first at once), those produced meanwhile joined (``StepProgram.coalesce``).
    """

    def __init__(
        self,
        program: StepProgram[State],
        *,
        max_active: int,
        max_waiting: int,
        on_change: Callable[[int, int], None] | None = None,
        on_step: Callable[[int, float], None] | None = None,
        interval_s: float = 0.0,
    ) -> None:
        self._program = program
        self._interval_s = interval_s
        self._max_active = max_active
        self._max_waiting = max_waiting
        self._on_change = on_change
        self._on_step = on_step
        # Under ``_lock``: every count, and the thread's wakeups.
        self._lock = threading.Condition()
        self._arriving: list[_Sequence[State]] = []  # admitted in the event loop's current turn
        self._waiting: deque[_Sequence[State]] = deque()
        self._active: list[_Sequence[State]] = []
        # per event loop: hand-overs posted to it and not yet run there
        self._unrun: dict[asyncio.AbstractEventLoop, int] = {}
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def counts(self) -> tuple[int, int]:
        """``(active, waiting)`` sequences."""
        with self._lock:
            return len(self._active), len(self._waiting) + len(self._arriving)

    def admit(self, requests: Sequence[Any]) -> AsyncIterator[tuple[int, Any]]:
        """Queue one request's sequences (one per item of ``requests``, at least one) now,
        all or none: ``QueueFullError`` when they would pass ``max_waiting`` waiting
        sequences. Returns one iterator of ``(index in requests, output)`` for all of them,
        each sequence's outputs in order; closing it early frees every place. The step thread
        sees the sequences once the event loop's current turn ends (so requests admitted in
        one turn start together)."""
        if not requests:
            raise ValueError("a request has at least one sequence")
        with self._lock:
            if self._closed:
                raise RuntimeError("the step scheduler is closed")
            waiting = len(self._waiting) + len(self._arriving)
            if waiting + len(requests) > self._max_waiting:
                raise QueueFullError(
                    f"{waiting} sequences already waiting, {len(requests)} more asked "
                    f"(limit {self._max_waiting})"
                )
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            group = [_Sequence(request, i, queue, loop) for i, request in enumerate(requests)]
            if not self._arriving:
                loop.call_soon(self._hand_over)
            self._arriving.extend(group)
            self._changed()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="stepwise", daemon=True)
                self._thread.start()
        return self._outputs(group)

    def _hand_over(self) -> None:
        """The sequences admitted in the loop's last turn now wait for the step thread."""
        with self._lock:
            self._waiting.extend(self._arriving)
            self._arriving.clear()
            self._lock.notify()

    async def _outputs(self, group: list[_Sequence[State]]) -> AsyncIterator[tuple[int, Any]]:
        queue, running = group[0].outputs, len(group)
        loop, next_at = group[0].loop, 0.0
        try:
            while running:
                waiting = [await queue.get()]
                if self._interval_s:
                    if loop.time() < next_at:  # let this interval's outputs gather
                        await asyncio.sleep(next_at - loop.time())
                    next_at = loop.time() + self._interval_s
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
        with self._lock:
            for queued in (self._arriving, self._waiting):
                if sequence in queued:
                    queued.remove(sequence)
                    self._changed()
            self._lock.notify()

    def close(self) -> None:
        """Release the step thread once no sequence runs (from any thread); the scheduler
        takes no more requests."""
        with self._lock:
            self._closed = True
            self._lock.notify()

    def _changed(self) -> None:
        """Report the counts (under ``_lock``)."""
        if self._on_change is not None:
            self._on_change(len(self._active), len(self._waiting) + len(self._arriving))

    def _work(self) -> None:
        """The step thread: start waiting sequences while there is room, advance the active
        ones by one step, hand the outputs over; until closed."""
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    self._drop_left()
                    if (self._waiting or self._active) and not self._too_far_ahead():
                        break
                    self._lock.wait()
                starting = []
                while self._waiting and len(self._active) + len(starting) < self._max_active:
                    starting.append(self._waiting.popleft())
            if starting:
                self._hand_to_loops(self._start(starting))
            batch = [sequence for sequence in self._active if not sequence.left]
            if batch:
                self._hand_to_loops(self._step(batch))

    def _hand_to_loops(self, delivery: list[tuple[_Sequence[State], Any]]) -> None:
        """Forget the sequences that finished, then post ``delivery`` to its readers' event
        loops, one call per loop (a reader told its sequence ended sees it gone)."""
        with self._lock:
            self._drop_left()
        by_loop: dict[asyncio.AbstractEventLoop, _Delivery] = {}
        for sequence, item in delivery:
            by_loop.setdefault(sequence.loop, []).append((sequence.outputs, item))
        for loop, items in by_loop.items():
            with self._lock:
                self._unrun[loop] = self._unrun.get(loop, 0) + 1
            try:
                loop.call_soon_threadsafe(self._delivered, loop, items)
            except RuntimeError:  # the loop is closed: nobody reads these any more
                self._delivered(loop, [])

    def _start(self, starting: list[_Sequence[State]]) -> list[tuple[_Sequence[State], Any]]:
        """Start each sequence (its own call), active from then on; their first outputs."""
        delivery: list[tuple[_Sequence[State], Any]] = []
        for sequence in starting:
            try:
                sequence.state = self._program.start(sequence.request)
            except Exception as exc:  # the request fails alone
                sequence.left = True
                delivery.append((sequence, exc))
                continue
            self._take_outputs(sequence, delivery)
        with self._lock:
            self._active.extend(s for s in starting if s.state is not None)
            self._changed()  # the started left the waiting count, failed or not
        return delivery

    def _step(self, batch: list[_Sequence[State]]) -> list[tuple[_Sequence[State], Any]]:
        """Advance ``batch`` by one step in one call; its outputs."""
        delivery: list[tuple[_Sequence[State], Any]] = []
        started = time.perf_counter()
        try:
            self._program.step([sequence.state for sequence in batch])
        except Exception as exc:  # the failure belongs to every sequence of the step
            for sequence in batch:
                sequence.left = True
                delivery.append((sequence, exc))
            return delivery
        if self._on_step is not None:
            self._on_step(len(batch), time.perf_counter() - started)
        for sequence in batch:
            self._take_outputs(sequence, delivery)
        return delivery

    def _take_outputs(
        self, sequence: _Sequence[State], delivery: list[tuple[_Sequence[State], Any]]
    ) -> None:
        for output in self._program.take_outputs(sequence.state):
            delivery.append((sequence, (sequence.index, output)))
        if self._program.finished(sequence.state):
            delivery.append((sequence, (sequence.index, _END)))
            sequence.left = True

    def _delivered(self, loop: asyncio.AbstractEventLoop, items: _Delivery) -> None:
        """On ``loop``, the readers' event loop: each item into its queue."""
        for queue, item in items:
            queue.put_nowait(item)
        with self._lock:
            self._unrun[loop] -= 1
            self._lock.notify()

    def _too_far_ahead(self) -> bool:
        """Whether an open event loop has ``RUN_AHEAD`` hand-overs still to run (under
        ``_lock``); a closed one's are forgotten."""
        for loop in [loop for loop in self._unrun if loop.is_closed()]:
            del self._unrun[loop]
        return any(unrun >= RUN_AHEAD for unrun in self._unrun.values())

    def _drop_left(self) -> None:
        """Forget the active sequences that finished or whose client left (under ``_lock``)."""
        kept = [sequence for sequence in self._active if not sequence.left]
        if len(kept) != len(self._active):
            self._active = kept
            self._changed()
