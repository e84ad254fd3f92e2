"""Per request: the key a rollout assigns it by, and the model versions that served it.

``RolloutKeys`` (ASGI middleware, outermost) gives every HTTP request a ``RequestRouting``
keyed by the header ``DLSERVE_ROLLOUT_KEY_HEADER`` (else ``x-request-id``; else none, and a
canary draws at random). The data plane notes in it the version that answered each model
(``note_answered``), and a shadow rollout the candidate version that also ran the request
(``note_shadow``); both do nothing outside an HTTP request (gRPC, batch jobs).
``current_routing()`` is the one place to read it: the payload log reads it after the answer
(the object is the request's own).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"


@dataclass
class RequestRouting:
    """One request's versions: ``answered`` maps a model to the version that answered it,
    ``shadows`` to the candidate version that also ran it (as a shadow)."""

    key: str | None
    answered: dict[str, str] = field(default_factory=dict)
    shadows: dict[str, str] = field(default_factory=dict)


_ROUTING: ContextVar[RequestRouting | None] = ContextVar("dlserve_routing", default=None)


def current_routing() -> RequestRouting | None:
    """This request's ``RequestRouting`` (``None`` outside an HTTP request)."""
    return _ROUTING.get()


def note_answered(model: str, version: str) -> None:
    """Model ``model``'s version ``version`` answered (part of) the current request."""
    routing = _ROUTING.get()
    if routing is not None:
        routing.answered[model] = version


def note_shadow(model: str, version: str) -> None:
    """The current request also ran on ``model``'s shadow version ``version`` (rollouts)."""
    routing = _ROUTING.get()
    if routing is not None:
        routing.shadows[model] = version


class RolloutKeys:
    """ASGI middleware: every HTTP request gets its ``RequestRouting``, keyed by the header
    ``header`` (else ``x-request-id``; else no key: a random assignment)."""

    def __init__(self, app: ASGIApp, header: str) -> None:
        self.app = app
        self.header = header.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = request_id = None
        for name, value in scope["headers"]:
            if name == self.header:
                key = value
            elif name == REQUEST_ID_HEADER:
                request_id = value
        chosen = key if key is not None else request_id
        token = _ROUTING.set(RequestRouting(chosen.decode("latin-1") if chosen else None))
        try:
            await self.app(scope, receive, send)
        finally:
            _ROUTING.reset(token)
