"""Graceful shutdown of a worker on SIGTERM (what ``docker stop`` and Kubernetes send).

``bentoml serve`` forwards SIGTERM to each worker, a uvicorn server. ``GracefulShutdown``
takes the signal from uvicorn and, at once, marks the worker draining: ``/readyz`` answers
503 and every answer closes its connection (``service.admission``). For ``delay_s`` it keeps
serving (load balancers see the 503 and stop sending), then hands the signal to uvicorn,
which stops accepting connections and waits for the requests in flight. ``grace_s`` after
the signal, requests still running are cut and the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

from service.admission import Traffic

log = logging.getLogger("dlserve")


class GracefulShutdown:
    """Drains one worker on SIGTERM; ``install`` it from inside the running server."""

    def __init__(self, traffic: Traffic, delay_s: float, grace_s: float) -> None:
        self.traffic = traffic
        self.delay_s = delay_s
        self.grace_s = grace_s
        self._server_exit: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> bool:
        """Take SIGTERM over from the uvicorn server running this code (in its main thread,
        its event loop running); False, changing nothing, when there is no such server."""
        current = signal.getsignal(signal.SIGTERM)
        if not hasattr(getattr(current, "__self__", None), "should_exit"):
            return False
        self._server_exit = current
        self._loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def _on_sigterm(self, signum: int, _: FrameType | None) -> None:
        if self.traffic.draining:
            return
        self.traffic.draining = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._schedule, signum)

    def _schedule(self, signum: int) -> None:
        assert self._loop is not None
        log.info(
            "SIGTERM: draining (%d requests in flight); /readyz answers 503, new connections "
            "are accepted for %ss, then requests in flight get up to %ss in all",
            self.traffic.in_flight,
            self.delay_s,
            self.grace_s,
        )
        self._loop.call_later(min(self.delay_s, self.grace_s), self._stop_accepting, signum)
        self._loop.call_later(self.grace_s, self._cut)

    def _stop_accepting(self, signum: int) -> None:
        log.info("draining: no new connections; %d requests in flight", self.traffic.in_flight)
        self._server_exit(signum, None)

    def _cut(self) -> None:
        server = self._server_exit.__self__
        if self.traffic.in_flight:
            log.warning(
                "shutdown grace period (%ss) over: cutting %d requests in flight",
                self.grace_s,
                self.traffic.in_flight,
            )
        server.force_exit = True
