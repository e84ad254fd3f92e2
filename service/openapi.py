"""dlserve's OpenAPI document (``GET /docs.json``): BentoML's, corrected to what the routes
answer.

BentoML declares OpenAPI 3.0 for schemas in JSON Schema 2020-12, errors as ``{"error": str,
"detail": str}`` (dlserve's ``detail`` is a list of ``{loc, msg, type}``), documents a task's
submission with its status' schema, lists task states it never sends, leaves out a streaming
route's events, drops ``null`` and union members from a JSON body's inline schema and names its
own version in ``info``, and leaves out the routes mounted beside its own and any security
scheme. ``openapi_document`` rewrites those parts (the mounted routes from
``service.openapi_mounted``; with API keys set, a bearer scheme on every operation but the
open paths);
``OpenAPIDocument`` serves the result in place of BentoML's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.openapi_mounted import SCHEMAS as MOUNTED_SCHEMAS

PATH = "/docs.json"
# BentoML says 3.0.2, but its schemas are pydantic's JSON Schema 2020-12 (numeric
# ``exclusiveMinimum``, ``const``, ``type: null``): the dialect of OpenAPI 3.1.
OPENAPI_VERSION = "3.1.0"
VERSION = "v1"  # the API's, as in its routes
ABOUT = "Model-serving API. Every model, its state and its routes: `GET /v1/models`."
REF = "#/components/schemas/"
BENTOML_ERRORS = ("InvalidArgument", "NotFound", "InternalServerError")
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error dlserve answers: a summary and, per problem, where and which rule.",
    "required": ["error", "detail"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "additionalProperties": False,
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
BEARER = "bearer"
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key of DLSERVE_API_KEYS or DLSERVE_API_KEYS_FILE (when any is set).",
}
# One server-sent event: its ``data`` is a JSON chunk, then ``[DONE]``.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}
# BentoML's task states (``_bentoml_impl.tasks.result.ResultStatus``), as /status sends them.
TASK_STATES = ["pending", "in_progress", "completed", "failed", "canceled"]
TASK_SUBMITTED: dict[str, Any] = {
    "type": "object",
    "title": "TaskSubmitted",
    "required": ["task_id", "status"],
    "properties": {
        "task_id": {"type": "string"},
        "status": {"enum": TASK_STATES, "type": "string"},
    },
}


def openapi_document(
    bentoml_document: dict[str, Any],
    protocol_errors: dict[str, dict[str, Any]],
    event_streams: frozenset[str],
    query: dict[str, tuple[dict[str, Any], ...]],
    mounted: dict[str, dict[str, Any]],
    open_paths: frozenset[str] | None,
) -> dict[str, Any]:
    """BentoML's document with dlserve's ``info``, every operation's error answers as the
    ``Error`` schema (or, for a path of ``protocol_errors``, that schema) under ``default``, the
    task routes' real answers, server-sent events as another answer of ``event_streams``' paths,
    the query parameters of ``query`` (path -> parameter objects), the ``mounted`` routes'
    path items, and, when API keys are set, the bearer key scheme on every operation outside
    ``open_paths`` (``None``: no keys are set, no operation needs one)."""
    document = json.loads(json.dumps(bentoml_document))  # a copy, with string keys as served
    document["openapi"] = OPENAPI_VERSION
    document["info"] = {
        "title": document["info"]["title"],
        "version": VERSION,
        "description": ABOUT,
    }
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in BENTOML_ERRORS:
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    schemas["TaskSubmitted"] = TASK_SUBMITTED
    if "TaskStatusResponse" in schemas:
        schemas["TaskStatusResponse"]["properties"]["status"]["enum"] = TASK_STATES
    for path, item in document["paths"].items():
        error = protocol_errors.get(path, {"$ref": REF + "Error"})
        for operation in item.values():
            _correct_responses(operation, error)
            _refer_to_input_schema(operation, schemas)
            if path in query:
                operation.setdefault("parameters", []).extend(query[path])
            if path in event_streams:
                content = operation["responses"]["200"]["content"]
                content["text/event-stream"] = {"schema": SSE_EVENT}
    document["paths"].update(json.loads(json.dumps(mounted)))
    schemas.update(MOUNTED_SCHEMAS)
    if open_paths is not None:
        document["components"]["securitySchemes"] = {BEARER: BEARER_SCHEME}
        for path, item in document["paths"].items():
            for operation in item.values():
                operation["security"] = [] if path in open_paths else [{BEARER: []}]
    return document


def _refer_to_input_schema(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A JSON body's schema as the route's input component (pydantic's), not BentoML's inline
    copy, which drops ``null`` from optional fields and all but the first of a union."""
    name = f"{operation.get('x-bentoml-name')}__Input"
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and name in schemas:
        body["schema"] = {"$ref": REF + name}


def _correct_responses(operation: dict[str, Any], error: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status in [status for status in responses if status[0] in "45"]:
        del responses[status]
    responses["default"] = {
        "description": "Error",
        "content": {"application/json": {"schema": error}},
    }
    answer = responses.get("200", {}).get("content", {}).get("application/json", {})
    name = operation.get("x-bentoml-name", "")
    if name.endswith(("_submit", "_retry")) and answer.get("schema") == {
        "$ref": REF + "TaskStatusResponse"
    }:
        answer["schema"] = {"$ref": REF + "TaskSubmitted"}


class OpenAPIDocument:
    """ASGI middleware: ``GET /docs.json`` answers ``build()`` (made once, at the first call)."""

    def __init__(self, app: ASGIApp, build: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.build = build
        self.document: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self.document is None:
            self.document = self.build()
        await JSONResponse(self.document)(scope, receive, send)
