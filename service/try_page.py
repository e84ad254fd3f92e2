"""The try-it page: ``GET /ui`` (or ``/ui/``) answers ``service/ui/index.html``, and
``GET /ui/NAME`` the file ``NAME`` of ``service/ui/`` (the page's script and styles).

Plain HTML, CSS and JavaScript, no build step, nothing loaded from elsewhere (the
``Content-Security-Policy`` lets the browser fetch only this origin: it works offline). The
files are read once, when the module is imported (a few tens of KB), and answered from memory:
a request costs one dictionary lookup, never a file-system access, so no path (``..``, encoded
slashes, links) can reach another file; any other name under ``/ui/`` answers 404. The page
needs no key (``service/paths.py``); the API calls it makes carry the key its user gives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.errors import error_response
from service.paths import UI_ROOT

FOLDER = Path(__file__).parent / "ui"
PAGE = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only this origin: its files, the API it calls, and the images the API answers as data: URLs
# (generated images) or the user's own file (blob: preview). No inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag): a new version of the page shows at once
}


@dataclass(frozen=True)
class Asset:
    """One file of the page, as answered."""

    body: bytes
    media_type: str
    etag: str


def load_assets(folder: Path = FOLDER) -> dict[str, Asset]:
    """Every file directly in ``folder`` whose suffix is in ``MEDIA_TYPES``, by file name."""
    assets = {}
    for path in sorted(folder.iterdir()):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is not None and path.is_file():
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            assets[path.name] = Asset(body, media_type, etag)
    return assets


def answer(asset: Asset, request: Request) -> Response:
    """``asset``, or 304 when the browser holds this version (``If-None-Match``)."""
    headers = {**HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def build_app(assets: dict[str, Asset] | None = None) -> Starlette:
    """The page's routes, with full paths (mounted at ``/``, as ``/v2``'s): ``GET`` and
    ``HEAD`` only."""
    files = load_assets() if assets is None else assets
    if PAGE not in files:
        raise RuntimeError(f"the try-it page's {PAGE} is missing from {FOLDER}")

    async def page(request: Request) -> Response:
        return answer(files[PAGE], request)

    async def asset(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return error_response(404, f"not a file of the try-it page ({UI_ROOT})")
        return answer(found, request)

    return Starlette(
        routes=[
            Route(UI_ROOT, page, methods=["GET"]),
            Route(f"{UI_ROOT}/", page, methods=["GET"]),
            Route(f"{UI_ROOT}/{{name:path}}", asset, methods=["GET"]),
        ]
    )
