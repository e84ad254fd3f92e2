"""A toy area without a model, declared in the test suite: ``POST /v1/toy/hold`` answers a
server-sent event stream whose first event says the request runs (it passed admission), then
holds the request, counted by the admission bound, until its client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from service.area import Area, Endpoint, ServedModels


async def hold(models: ServedModels, tag: str = "held") -> AsyncIterator[dict[str, Any]]:
    """Stream ``{"held": tag}``, then nothing until the client leaves."""

    async def events() -> AsyncIterator[dict[str, Any]]:
        yield {"held": tag}
        await asyncio.Event().wait()  # never set: ends when the client leaves

    return events()


AREA = Area(name="toy-hold", models=(), endpoints=(Endpoint("/v1/toy/hold", hold, models=()),))
