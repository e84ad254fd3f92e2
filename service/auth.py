"""Optional API keys: ``Authorization: Bearer KEY`` on every route but the open ones.

Keys come from ``DLSERVE_API_KEYS`` (comma list) and ``DLSERVE_API_KEYS_FILE`` (one per line,
e.g. a mounted Kubernetes Secret); several keys may be valid at once, so a key is rotated by
adding the new one, moving clients over, then removing the old one. No key configured: no
access control. ``ApiKeyGuard`` guards every path except ``open_paths`` (probes, the OpenAPI
document and page; ``/metrics`` unless ``DLSERVE_PROTECT_METRICS``), so routes added later
(areas, batch jobs, admin) are guarded without being named. Keys are compared as SHA-256
digests with ``hmac.compare_digest`` against every key: the time taken does not depend on
how much of a key was right, nor on which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import MIN_API_KEY_CHARS, Settings, SettingsError
from service.errors import error_response, field_error
from service.paths import DOCUMENT_PREFIXES, METRICS_PATH, OPEN_PATHS


def read_key_file(path: Path) -> tuple[str, ...]:
    """The keys in ``path``, one per line (blank lines skipped); ``SettingsError`` naming
    ``DLSERVE_API_KEYS_FILE`` when it cannot be read, holds none, or a key is too short."""
    where = f"DLSERVE_API_KEYS_FILE={str(path)!r}"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"{where}: cannot read it ({reason})") from None
    keys = tuple(line.strip() for line in lines if line.strip())
    if not keys:
        raise SettingsError(f"{where}: holds no key")
    if any(len(key) < MIN_API_KEY_CHARS for key in keys):
        raise SettingsError(f"{where}: every key must have at least {MIN_API_KEY_CHARS} characters")
    return keys


def configured_keys(settings: Settings) -> tuple[str, ...]:
    """Every accepted key: ``DLSERVE_API_KEYS`` then the keys file's (empty: no access control)."""
    keys = tuple(key.get_secret_value() for key in settings.api_keys)
    if settings.api_keys_file is not None:
        keys += read_key_file(settings.api_keys_file)
    return keys


def open_paths(settings: Settings) -> frozenset[str]:
    """The paths that never need a key under ``settings``."""
    return OPEN_PATHS if settings.protect_metrics else OPEN_PATHS | {METRICS_PATH}


class ApiKeyGuard:
    """ASGI middleware: a request to a path outside ``open_paths`` needs ``Authorization:
    Bearer KEY`` with one of ``keys``; otherwise 401 with ``WWW-Authenticate: Bearer``, before
    the body is read. With no keys, every request passes."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], open_paths: Iterable[str]) -> None:
        self.app = app
        self.digests = key_digests(keys)
        self.open_paths = frozenset(open_paths)

    def allows(self, scope: Scope) -> bool:
        """Whether the request may go on: an open path, or a valid bearer key."""
        path = scope.get("path", "")
        if not self.digests or path in self.open_paths or path.startswith(DOCUMENT_PREFIXES):
            return True
        return bearer_matches(
            dict(scope.get("headers", [])).get(b"authorization", b""), self.digests
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allows(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "missing or invalid API key",
            [
                field_error(
                    ["header", "authorization"],
                    "send `Authorization: Bearer KEY` with a valid API key",
                    "unauthorized",
                )
            ],
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def key_digests(keys: Iterable[str]) -> tuple[bytes, ...]:
    """What ``bearer_matches`` compares against: the digest of each accepted key."""
    return tuple(_digest(key.encode()) for key in keys)


def bearer_matches(header: bytes, digests: tuple[bytes, ...]) -> bool:
    """Whether ``header`` (an ``Authorization`` value, HTTP header or gRPC metadata) is
    ``Bearer KEY`` with a key among ``digests``' (compared in constant time, against all)."""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return False
    presented = _digest(token.strip())
    matched = False
    for digest in digests:  # no early exit: the same work whichever key matches
        matched |= hmac.compare_digest(presented, digest)
    return matched


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()
