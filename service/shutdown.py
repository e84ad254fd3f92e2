"""Graceful shutdown of a worker on SIGTERM (what ``docker stop`` and Kubernetes send).

``bentoml serve`` forwards SIGTERM to each worker, a uvicorn server. ``GracefulShutdown``
takes the signal from uvicorn and, at once, marks the worker draining: ``/readyz`` answers
503 and every answer closes its connection (``service.admission``). For ``delay_s`` it keeps
serving (load balancers see the 503 and stop sending), then shuts the listening socket down
(``SHUT_RD``: new connections are refused, not queued) and, ``SETTLE_S`` later (connections
accepted last send their request), hands the signal to uvicorn, which closes the connections
without a request and waits for the requests in flight. ``grace_s`` after the
signal, requests still running are cut and the worker exits.

The listening socket is inherited: ``bentoml serve``'s arbiter and every worker hold it. uvicorn
only closes the worker's copy, so until the arbiter exited the kernel kept completing new
connections nobody would accept, and reset them all at exit (~10 per SIGTERM under keep-alive
load). ``shutdown`` acts on the socket itself, for every process: all workers get SIGTERM
together (``docker stop``, a pod's termination), so none is left serving on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
from types import FrameType
from typing import Any

from service.traffic import Traffic

log = logging.getLogger("dlserve")
SETTLE_S = 0.5  # between no longer listening and closing the connections without a request


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
        server = self._server_exit.__self__
        try:
            for listening in getattr(server, "servers", []):
                self._stop_listening(server, listening)
        except Exception:  # never keep the worker from stopping
            log.exception("could not shut the listening socket down")
        # uvicorn closes every connection without a request at once: give those accepted last
        # (a client may connect, then send a moment later) time to send theirs, else they are
        # reset.
        assert self._loop is not None
        self._loop.call_later(SETTLE_S, self._server_exit, signum, None)

    def _stop_listening(self, server: Any, listening: asyncio.Server) -> None:
        """Stop ``listening`` for every process sharing its sockets: new connections are
        refused from now on; those the kernel already completed are served by ``server``'s
        HTTP protocol (as uvicorn's own ``create_protocol`` makes it)."""
        assert self._loop is not None
        protocol = functools.partial(
            server.config.http_protocol_class,
            config=server.config,
            server_state=server.server_state,
            app_state=server.lifespan.state,
        )
        shared = [sock.dup() for sock in listening.sockets]
        listening.close()  # first: a shut-down socket is always readable, accept() fails
        for sock in shared:
            sock.setblocking(False)
            # Shutting down resets the connections waiting to be accepted: take them first.
            with contextlib.suppress(OSError):  # none left, or another worker shut it down
                while True:
                    accepted, _ = sock.accept()
                    self._loop.create_task(self._loop.connect_accepted_socket(protocol, accepted))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
            sock.close()

    def _cut(self) -> None:
        server = self._server_exit.__self__
        if self.traffic.in_flight:
            log.warning(
                "shutdown grace period (%ss) over: cutting %d requests in flight",
                self.grace_s,
                self.traffic.in_flight,
            )
        server.force_exit = True
