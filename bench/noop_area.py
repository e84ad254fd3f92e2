"""The floor bench's no-op route, served two ways: as a plug-in area of dlserve's own server
(``DLSERVE_AREA_MODULES=bench.noop_area``: ``POST /bench/noop`` parses its small JSON body as
every route does and answers a constant) and as a plain Starlette app under uvicorn
(``uvicorn bench.noop_area:plain_app``: reads the body, answers the same constant)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from service.area import Area, Endpoint, ServedModels

ROUTE = "/bench/noop"


async def noop(models: ServedModels, x: int = 0) -> dict:
    """Answer a constant."""
    return JSONResponse({"ok": True})


AREA = Area(
    name="noop",
    models=(),
    endpoints=(Endpoint(ROUTE, noop, models=(), counted_as=lambda models, body: "noop"),),
)


async def plain_noop(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"ok": True})


async def ping(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


plain_app = Starlette(
    routes=[Route(ROUTE, plain_noop, methods=["POST"]), Route("/ping", ping, methods=["GET"])]
)
