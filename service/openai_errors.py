"""OpenAI's error body for the routes that speak OpenAI's API (``Endpoint.errors``), and the
one-or-a-list inputs whose errors it names.

``openai_error`` turns dlserve's error body (``{"error", "detail"}``) into OpenAI's
``{"error": {message, type, param, code}}``; ``OPENAI_ERROR_SCHEMA`` is its JSON schema (the
routes' OpenAPI errors). ``one_or_list`` types a field such as ``prompt`` or ``input``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag

OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "OpenAIError",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


# The names pydantic gives a union's members in an error's ``loc`` (``stop.constrained-str``,
# ``stop.list[constrained-str].0``): not parameters.
UNION_MEMBER = re.compile(
    r"constrained-\w+|(function|lax|strict|json)-.*|\w+\[.*\]|str|int|float|bool"
)


def _param(loc: list[str | int]) -> str | None:
    """The parameter an error's ``loc`` names, dotted (``stream_options.x``), without the
    ``body`` prefix and cut before a union member's name."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, str) and UNION_MEMBER.fullmatch(part):
            break
        if part != "body":
            parts.append(str(part))
    return ".".join(parts) or None


def openai_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """dlserve's error body -> OpenAI's ``{"error": {message, type, param, code}}``: the first
    detail names the parameter (``param``) and the rule (``message``, ``code``)."""
    detail = (body.get("detail") or [{}])[0]
    param = _param(detail.get("loc", []))
    message = f"{param}: {detail['msg']}" if param and detail.get("msg") else body["error"]
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    return {"error": {"message": message, "type": kind, "param": param, "code": detail.get("type")}}


def _one_or_list_kind(value: Any) -> str:
    return "list[str]" if isinstance(value, list) else "str"


def one_or_list(item: Any, max_items: int, description: str) -> Any:
    """The type of a field holding one ``item`` or a list of 1 to ``max_items`` of them (OpenAI's
    ``prompt``, ``input``), told apart by the JSON type so that a list's own errors (too long)
    are reported rather than "not a string". The tags are the names pydantic gives union
    members, which ``param`` leaves out."""
    return Annotated[
        Annotated[item, Tag("str")]
        | Annotated[list[item], Field(min_length=1, max_length=max_items), Tag("list[str]")],
        Discriminator(_one_or_list_kind),
        Field(description=description),
    ]
