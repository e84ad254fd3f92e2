"""``python -m bench.lean_layers``: what each layer of the lean path and of BentoML's stack costs
per request, in process, on the no-op route (``bench/noop_area.py``).

One worker's ASGI apps are built as ``bentoml serve`` builds them (``DLServe.to_asgi``, its
lifespan started) and called directly with a recorded ``POST /bench/noop`` (no socket, no
uvicorn): the whole BentoML app with the lean path off, the lean dispatcher, and the lean stack
peeled one layer at a time from the outside in (the outer accounting, then each dlserve
middleware), down to the route alone, in interleaved rounds. Each figure is the fastest of
``--rounds`` rounds of ``--requests`` calls (the least disturbed by the rest of the machine), in
µs per request; a layer's cost is the difference between the stack with it and the stack
without it. Beside them, the plain Starlette no-op ``bench.floor`` compares with
(``bench.noop_area.plain_app``), called the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.noop_area import ROUTE, plain_app

BODY = b'{"x": 1}'
PLAIN = "plain Starlette no-op (bench.floor's)"
SCOPE: dict[str, Any] = {
    "type": "http",
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": ROUTE,
    "raw_path": ROUTE.encode(),
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 3000),
}


async def per_request_us(app: Any, requests: int) -> float:
    """µs per call of ``app`` on the no-op request (every answer checked: 200)."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = time.perf_counter()
    for _ in range(requests):
        await app(dict(SCOPE, state={}), receive, send)
    elapsed = time.perf_counter() - start
    if set(statuses) != {200}:
        raise RuntimeError(f"the no-op answered {sorted(set(statuses))}")
    return elapsed / requests * 1e6


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """``app``'s lifespan started (BentoML makes the service instance there) for the block, and
    shut down after it (BentoML's task store thread ends there: the process can exit)."""
    started, stopped = asyncio.Event(), asyncio.Event()
    messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()
        elif message["type"].startswith("lifespan.shutdown"):
            stopped.set()

    task = asyncio.get_running_loop().create_task(app({"type": "lifespan"}, messages.get, send))
    await messages.put({"type": "lifespan.startup"})
    await started.wait()
    try:
        yield
    finally:
        await messages.put({"type": "lifespan.shutdown"})
        await stopped.wait()
        await task


def layers(stack: Any) -> list[tuple[str, Any]]:
    """The lean stack and each stack below it: (outermost layer's name, app)."""
    peeled = []
    app = stack
    while hasattr(app, "app") or hasattr(app, "named"):
        peeled.append((type(app).__name__, app))
        app = getattr(app, "app", None)
        if app is None:
            break
    return peeled


async def measure(requests: int, rounds: int) -> list[tuple[str, float]]:
    from service import lean_path, service

    bentoml_app = service.DLServe.to_asgi()
    assert isinstance(bentoml_app, lean_path.LeanDispatch)
    stack, route = bentoml_app.lean, bentoml_app.lean
    while hasattr(route, "app"):
        route = route.app
    route = route.named[ROUTE]  # LeanRoutes -> the no-op's NamedRoute
    subjects = [
        ("BentoML's app (lean path off)", bentoml_app.bentoml_app),
        ("lean dispatcher", bentoml_app),
        *((f"lean stack from {name}", app) for name, app in layers(stack)),
        ("the route alone (NamedRoute)", route),
        (PLAIN, plain_app),
    ]
    async with lifespan(bentoml_app):
        return await fastest(subjects, requests, rounds)


async def fastest(
    subjects: list[tuple[str, Any]], requests: int, rounds: int
) -> list[tuple[str, float]]:
    """Each subject's fastest round (µs per request), the subjects interleaved in each round."""
    figures: dict[str, list[float]] = {name: [] for name, _ in subjects}
    for _name, app in subjects:  # warm-up
        await per_request_us(app, min(requests, 200))
    for _ in range(rounds):
        for name, app in subjects:
            figures[name].append(await per_request_us(app, requests))
    return [(name, min(values)) for name, values in figures.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lean_layers", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    os.environ.update(
        {
            "DLSERVE_AREA_MODULES": "bench.noop_area",
            "DLSERVE_MODELS": "noop",
            "DLSERVE_LEAN_AREAS": "noop",
            "DLSERVE_MODEL_POLL_S": "0",
        }
    )
    figures = asyncio.run(measure(args.requests, args.rounds))
    layered, plain = figures[:-1], figures[-1]
    below = [value for _, value in layered[1:]] + [0.0]
    print(f"{'app called':<48}{'µs/request':>12}{'this layer':>12}")
    for (name, value), inner in zip(layered, below, strict=True):
        layer = "" if name.startswith("BentoML") else f"{value - inner:>12.1f}"
        print(f"{name:<48}{value:>12.1f}{layer}")
    print(f"{plain[0]:<48}{plain[1]:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
