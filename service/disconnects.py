"""A client that leaves before sending its whole body is not a server error.

BentoML reads a body inside the route and answers 500, with a traceback logged at ERROR, when
the client disconnects part-way (Starlette's ``ClientDisconnect``), so 5xx alerts would fire on
client behaviour. ``BodyBeforeApp`` reads the whole body first: a request whose client left
is never handed to the app, is answered 499 (nginx's "client closed request"; the server
drops it, but BentoML's request metrics and access log record it as such), counted in
``dlserve_client_disconnects_total`` and logged at INFO without a traceback.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_response, replay_body
from service.metrics import CLIENT_DISCONNECTS

log = logging.getLogger("dlserve")
CLIENT_CLOSED_REQUEST = 499


class BodyBeforeApp:
    """ASGI middleware: the app gets a request only once its body has fully arrived.

    The body is held in memory, so add this middleware behind the body size limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                await self._client_left(scope, receive, send, sum(map(len, chunks)))
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(b"".join(chunks), receive), send)

    async def _client_left(self, scope: Scope, receive: Receive, send: Send, got: int) -> None:
        CLIENT_DISCONNECTS.inc()
        log.info(
            "client left before sending its whole body (%d bytes received): %s %s",
            got,
            scope.get("method", ""),
            scope.get("path", ""),
        )
        response = error_response(CLIENT_CLOSED_REQUEST, "client closed the request")
        await response(scope, receive, send)
