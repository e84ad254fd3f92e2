"""Admission: a bound on the requests one worker handles at once, refused at once beyond it.

A request is counted (``Traffic.in_flight``) only once its whole body has arrived: a client
that sends headers and then nothing holds no place (``service.read_deadline`` bounds how long
it may take). Two middlewares share the count. ``AdmissionGate``, outside the body's reading,
answers 503 with ``Retry-After`` while the worker is full, before the body is read (a refused
upload is never received); ``AdmissionLimit``, once the body is in, refuses the same way if the
worker filled meanwhile, else counts the request until it is answered. Nothing queues, so the
requests that are accepted keep a latency bounded by the limit, whatever the offered load.
Probes, ``/metrics`` and the API documents (``service.paths``) are never counted nor refused,
nor are the ``self_bounded`` routes: those of stepwise models, bounded by their step scheduler
(``DLSERVE_MAX_ACTIVE_SEQUENCES`` + ``DLSERVE_MAX_WAITING_SEQUENCES``, 429 beyond, as OpenAI's
clients expect), which the generic 503 would otherwise pre-empt. While a stepwise model's
waiting queue is full (``Traffic.full_queues``, kept by its scheduler's counts), the gate
answers its routes that 429 itself, before the body is read or parsed: at three times the
bound, refusals parsed and validated by the route took the CPU the step loop needed.
While the worker drains after SIGTERM (``Traffic.draining``, see ``service.shutdown``), every
answer carries ``Connection: close`` so clients open their next connection elsewhere.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response, field_error
from service.metrics import PREDICTIONS
from service.paths import uncounted
from service.traffic import Traffic


class _Admission:
    """What both admission middlewares share: the bound, the count and the exempt paths
    (``self_bounded``: a stepwise route -> the model whose scheduler bounds it)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        traffic: Traffic,
        routes: dict[str, str],
        self_bounded: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.traffic = traffic
        self.routes = routes
        self.self_bounded = self_bounded or {}

    def exempt(self, path: str) -> bool:
        """Whether ``path`` is never counted nor refused."""
        return uncounted(path) or path in self.self_bounded


class AdmissionGate(_Admission):
    """ASGI middleware, outside the body's reading: while ``limit`` requests are in flight,
    the next one (exempt paths aside) gets 503 with ``Retry-After: 1``
    at once, its body unread, counted as ``overloaded`` under its route's model (``routes``:
    path -> model name); while a stepwise model's queue is full, its routes get 429 the same
    way. Counts nothing itself; adds ``Connection: close`` while draining."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._closing(send) if self.traffic.draining else send
        path = scope["path"]
        stepwise = self.self_bounded.get(path)
        if stepwise is not None and stepwise in self.traffic.full_queues:
            await refuse_queue_full(stepwise, scope, receive, send)
            return
        if self.traffic.in_flight >= self.limit and not self.exempt(path):
            await refuse(self.limit, self.routes, scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _closing(send: Send) -> Send:
        """``send`` adding ``Connection: close`` to the answer (the worker is draining)."""

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return closing


class AdmissionLimit(_Admission):
    """ASGI middleware, once the body has arrived: at most ``limit`` requests at once (exempt
    paths aside); the next one is refused as ``AdmissionGate`` refuses."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.traffic.in_flight >= self.limit:
            await refuse(self.limit, self.routes, scope, receive, send)
            return
        self.traffic.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.traffic.in_flight -= 1


async def refuse(
    limit: int, routes: dict[str, str], scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer 503 "overloaded" with ``Retry-After: 1``, counted under the route's model."""
    message = f"overloaded: {limit} requests already in progress on this worker; retry"
    rule = f"at most {limit} requests at once (DLSERVE_MAX_CONCURRENT_REQUESTS)"
    await _refusal(503, routes.get(scope["path"]), message, rule)(scope, receive, send)


async def refuse_queue_full(model: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer 429 with ``Retry-After: 1`` (stepwise ``model``'s waiting queue is full), counted
    as ``overloaded`` under the model, as its scheduler refuses inside the route."""
    message = f"model {model!r} is busy: its waiting queue is full; retry"
    rule = (
        "at most DLSERVE_MAX_WAITING_SEQUENCES requests wait for a place among the "
        "DLSERVE_MAX_ACTIVE_SEQUENCES being generated"
    )
    await _refusal(429, model, message, rule)(scope, receive, send)


def _refusal(status: int, model: str | None, message: str, rule: str) -> ASGIApp:
    """The refusal's answer (``Retry-After: 1``), counted as ``overloaded`` under ``model``."""
    if model is not None:
        PREDICTIONS.labels(model=model, outcome="overloaded").inc()
    detail = [field_error(["request"], rule, "overloaded")]
    return error_response(status, message, detail, headers={"Retry-After": "1"})
