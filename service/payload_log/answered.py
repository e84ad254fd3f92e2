"""Which model versions answered the current request: the payload log's one hook.

``PayloadLog`` (the middleware) opens an ``Answered`` for each request it records
(``answering``); code below it in the same request notes what ran: the data plane calls
``note_version`` with the version that answered, and a shadow rollout calls ``note_shadow``
with the version it also ran the request on. Outside a recorded request both do nothing, so
the callers need not know whether the request is logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class Answered:
    """The versions noted for one request (``None``: none noted)."""

    model: str | None = None
    version: str | None = None
    shadow_version: str | None = None


_CURRENT: ContextVar[Answered | None] = ContextVar("dlserve_payload_answered", default=None)


@contextmanager
def answering() -> Iterator[Answered]:
    """An ``Answered`` that ``note_version``/``note_shadow`` fill within this block."""
    answered = Answered()
    token = _CURRENT.set(answered)
    try:
        yield answered
    finally:
        _CURRENT.reset(token)


def note_version(model: str, version: str) -> None:
    """Model ``model``'s version ``version`` answered the current request."""
    answered = _CURRENT.get()
    if answered is not None:
        answered.model, answered.version = model, version


def note_shadow(version: str) -> None:
    """The current request also ran on the shadow version ``version`` (rollouts)."""
    answered = _CURRENT.get()
    if answered is not None:
        answered.shadow_version = version
