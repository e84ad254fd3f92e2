"""Admission: a bound on the requests one worker handles at once, refused at once beyond it.

``AdmissionLimit`` counts the requests in flight (``Traffic.in_flight``). A request beyond
``limit`` is answered 503 with ``Retry-After`` before its body is read: nothing queues, so the
requests that are accepted keep a latency bounded by the limit, whatever the offered load.
Probes and ``/metrics`` are never counted nor refused. While the worker drains after SIGTERM
(``Traffic.draining``, see ``service.shutdown``), every answer carries ``Connection: close``
so clients open their next connection elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response, field_error
from service.metrics import PREDICTIONS

PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


@dataclass
class Traffic:
    """One worker's traffic state, shared by the admission limit, readiness and shutdown."""

    in_flight: int = 0
    draining: bool = False


class AdmissionLimit:
    """ASGI middleware: at most ``limit`` requests at once (paths of ``PROBE_PATHS`` aside);
    the next one gets 503 with ``Retry-After: 1`` at once and counts as ``overloaded`` under
    its route's model (``routes``: path -> model name, as ``RejectedRequestCounter``'s)."""

    def __init__(self, app: ASGIApp, limit: int, traffic: Traffic, routes: dict[str, str]) -> None:
        self.app = app
        self.limit = limit
        self.traffic = traffic
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._closing(send) if self.traffic.draining else send
        if scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if self.traffic.in_flight >= self.limit:
            await self._refuse(scope, receive, send)
            return
        self.traffic.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.traffic.in_flight -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self.routes.get(scope["path"])
        if model is not None:
            PREDICTIONS.labels(model=model, outcome="overloaded").inc()
        limit = self.limit
        response = error_response(
            503,
            f"overloaded: {limit} requests already in progress on this worker; retry",
            [
                field_error(
                    ["request"],
                    f"at most {limit} requests at once (DLSERVE_MAX_CONCURRENT_REQUESTS)",
                    "overloaded",
                )
            ],
            headers={"Retry-After": "1"},
        )
        await response(scope, receive, send)

    @staticmethod
    def _closing(send: Send) -> Send:
        """``send`` adding ``Connection: close`` to the answer (the worker is draining)."""

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return closing
