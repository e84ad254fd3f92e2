"""Deadlines for answers to start, kept for every request of a worker with one timer.

BentoML's timeout (``traffic.timeout``) gives a request a 504 when no answer has started after
``timeout_s``. ``asyncio.timeout`` per request does that at about 4 µs a request (a
``Timeout`` object, a timer scheduled and cancelled); ``AnswerDeadlines`` does it at about a
quarter of that: every request has the same timeout, so the deadlines come in the order the
requests arrive, one dict in arrival order holds them, and one timer (at the oldest deadline)
serves them all. A request that is due and has no answer started has its task cancelled;
``Deadline.expired_here`` then tells the request's own code to answer 504 (a cancellation from
elsewhere, such as shutdown, is passed on, as ``asyncio.timeout`` passes it on).
"""

from __future__ import annotations

import asyncio
import itertools


class Deadline:
    """One request's deadline: its task, when it is due, whether this deadline cancelled it."""

    __slots__ = ("cancelling", "due", "expired", "key", "task")

    def __init__(self, key: int, task: asyncio.Task, due: float) -> None:
        self.key = key
        self.task = task
        self.due = due
        self.cancelling = task.cancelling()  # cancellations already asked before this deadline
        self.expired = False

    def expired_here(self) -> bool:
        """On a ``CancelledError`` in the task: whether it is this deadline's own (then the
        cancellation is withdrawn and the request answers 504), not one from elsewhere."""
        return self.expired and self.task.uncancel() <= self.cancelling


class AnswerDeadlines:
    """Answer-start deadlines of a worker's requests, all ``timeout_s`` long, on one event loop."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._pending: dict[int, Deadline] = {}  # arrival order = deadline order
        self._keys = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Deadline:
        """The current task's deadline, ``timeout_s`` from now; ``answered`` ends it."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None, "a deadline needs a task to cancel"
        deadline = Deadline(next(self._keys), task, loop.time() + self.timeout_s)
        if self._timer_loop is not loop:  # a new loop (tests): a closed one's requests are gone
            self._pending.clear()
            self._timer, self._timer_loop = None, loop
        self._pending[deadline.key] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline.due, self._expire_due)
        return deadline

    def answered(self, deadline: Deadline) -> None:
        """The answer started (or the request ended): ``deadline`` can no longer expire."""
        self._pending.pop(deadline.key, None)

    def _expire_due(self) -> None:
        """Cancel every task whose deadline has passed, then wait for the next deadline."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._pending:
            deadline = next(iter(self._pending.values()))
            if deadline.due > now:
                self._timer = loop.call_at(deadline.due, self._expire_due)
                return
            del self._pending[deadline.key]
            deadline.expired = True
            deadline.task.cancel()
