"""A payload record: what the middleware captured, and the Parquet columns it becomes.

The middleware keeps only raw bytes and a few figures on the event loop (``Captured``); the
writer thread turns a batch of them into a table (``to_table``): JSON bodies are parsed,
redacted and written back as JSON text, a rejection's field and rule are read from its error
body, and the answering version, when no hook noted it, from the answer's ``model``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

REDACTED = "[redacted]"
NOT_RECORDED = b'"[not recorded: not JSON while fields are redacted]"'

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("route", pa.string()),
        ("model", pa.string()),
        ("version", pa.string()),
        ("shadow_version", pa.string()),
        ("status", pa.int16()),
        ("latency_ms", pa.float64()),
        ("error_field", pa.string()),
        ("error_rule", pa.string()),
        ("request_type", pa.string()),
        ("request", pa.binary()),
        ("response_type", pa.string()),
        ("response", pa.binary()),
    ]
)


@dataclass
class Captured:
    """One request as captured: bodies as received and sent, before any parsing."""

    request_id: str
    started: float  # seconds since the epoch
    route: str
    model: str  # the route's model (the sampled one)
    request_type: str
    request: bytes
    response_type: str = ""
    response: bytes = b""
    status: int = 0
    latency_ms: float = 0.0
    version: str | None = None
    shadow_version: str | None = None
    answered_model: str | None = None

    @property
    def size(self) -> int:
        return len(self.request) + len(self.response)


def redact(value: Any, fields: frozenset[str]) -> Any:
    """``value`` with the value of every object key in ``fields`` replaced, at any depth, and
    the ``data`` of every V2 tensor (``{"name": ..., "data": ...}``) named in ``fields``."""
    if isinstance(value, dict):
        named_tensor = value.get("name") in fields and "data" in value
        return {
            key: REDACTED
            if key in fields or (named_tensor and key == "data")
            else redact(item, fields)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, fields) for item in value]
    return value


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def recorded_body(body: bytes, media_type: str, fields: frozenset[str]) -> bytes:
    """The body as a record holds it: redacted JSON, or as received when no field is redacted
    (a body that is not JSON cannot be redacted, so with fields set it is not recorded)."""
    if not fields:
        return body
    if "json" not in media_type:
        return NOT_RECORDED if body else body
    parsed = _parse(body)
    if parsed is None:
        return NOT_RECORDED if body else body
    return json.dumps(redact(parsed, fields), separators=(",", ":")).encode()


def rejection(status: int, body: bytes) -> tuple[str | None, str | None]:
    """``(field, rule)`` of an error answer: dlserve's first ``detail`` (its ``loc`` joined by
    dots and its ``msg``), OpenAI's ``param`` and ``message``, or the protocol's one message."""
    if status < 400:
        return None, None
    parsed = _parse(body)
    if not isinstance(parsed, dict):
        return None, None
    detail = parsed.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc") or []
        return ".".join(str(part) for part in loc) or None, str(detail[0].get("msg"))
    error = parsed.get("error")
    if isinstance(error, dict):
        return error.get("param"), error.get("message")
    return None, str(error) if error is not None else None


def answered_version(body: bytes) -> str | None:
    """The version an answer names: dlserve's ``model.version``, V2's ``model_version``."""
    parsed = _parse(body) if body[:1] == b"{" else None
    if not isinstance(parsed, dict):
        return None
    model = parsed.get("model")
    if isinstance(model, dict) and isinstance(model.get("version"), str):
        return model["version"]
    version = parsed.get("model_version")
    return version if isinstance(version, str) else None


def to_table(captured: Iterable[Captured], fields: frozenset[str]) -> pa.Table:
    """Records as a table of ``SCHEMA`` (redacted, rejections explained)."""
    rows = []
    for record in captured:
        field, rule = rejection(record.status, record.response)
        rows.append(
            {
                "request_id": record.request_id,
                "timestamp": datetime.fromtimestamp(record.started, UTC),
                "route": record.route,
                "model": record.answered_model or record.model,
                "version": record.version or answered_version(record.response),
                "shadow_version": record.shadow_version,
                "status": record.status,
                "latency_ms": record.latency_ms,
                "error_field": field,
                "error_rule": rule,
                "request_type": record.request_type,
                "request": recorded_body(record.request, record.request_type, fields),
                "response_type": record.response_type,
                "response": recorded_body(record.response, record.response_type, fields),
            }
        )
    return pa.Table.from_pylist(rows, schema=SCHEMA)
