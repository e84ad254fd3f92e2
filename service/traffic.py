"""Request accounting: one worker's count of its requests, in one place.

``Traffic`` holds what the worker's middlewares and its data plane read about the requests it
has: how many BentoML's request path has started (``started``, counted in its timeout
middleware, where a request is first seen: ``service.bentoml_compat``), how many passed
admission with their whole body (``in_flight``: ``service.admission``), whether it drains after
SIGTERM (``draining``: ``service.shutdown``) and which stepwise models' waiting queues are full
(``full_queues``, kept by their schedulers' counts). ``alone()`` tells a request that no other
one has started (inline inference calls: ``service.batching.MicroBatcher``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Traffic:
    """One worker's traffic state (touched from its event loop; ``full_queues`` also from a
    step scheduler's thread, one change at a time under that scheduler's lock)."""

    started: int = 0
    in_flight: int = 0
    draining: bool = False
    full_queues: set[str] = field(default_factory=set)  # stepwise models refusing newcomers

    def alone(self) -> bool:
        """Whether the asking request is the only one this worker has started and not
        answered."""
        return self.started <= 1

    def queue_filled(self, model: str, full: bool) -> None:
        """Record whether stepwise ``model``'s waiting queue is full (its scheduler's counts)."""
        if full:
            self.full_queues.add(model)
        else:
            self.full_queues.discard(model)
