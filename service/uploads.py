"""Multipart files read in memory: a route handler's ``UploadedFile`` parameters.

BentoML hands a route a ``Path`` parameter's file as a temporary file: it parses the body
again with Starlette's form parser, then writes the file into a per-request temporary
directory, and the route reads it back and BentoML deletes it; for one small image that cost
more than decoding it (docs/BENCHMARKS.md). A handler parameter typed ``UploadedFile`` gets the
file's bytes instead: ``UploadGuard`` has already read the body in memory (within the body size
limit), parsed and checked it, and its files are taken from there (``uploaded_files``): one
parse, nothing on disk.

To BentoML such a field is still a file (a ``Path`` parameter): the route's schema, its
OpenAPI entry, its ``/v1/models`` description and its upload form stay those of a file field.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from service.multipart_guard import uploaded_files


class _InMemory:
    """Marks ``UploadedFile``."""


UploadedFile = Annotated[bytes, _InMemory()]
Model = TypeVar("Model", bound=BaseModel)


def in_memory_fields(handler: Callable[..., Any]) -> frozenset[str]:
    """The names of ``handler``'s parameters typed ``UploadedFile``."""
    hints = typing.get_type_hints(handler, include_extras=True)
    return frozenset(name for name, hint in hints.items() if hint == UploadedFile)


def as_file(parameter: inspect.Parameter) -> inspect.Parameter:
    """``parameter`` as BentoML documents and parses an uploaded file: typed ``Path``."""
    return parameter.replace(annotation=Path)


def in_memory_input(spec: type[Model], fields: frozenset[str]) -> type[Model]:
    """``spec`` (a route's input model, whose fields are exactly ``fields``) taking its files
    from ``uploaded_files`` as bytes; same name and module, so the OpenAPI names do not change.
    """
    if set(spec.model_fields) != fields:
        raise ValueError(f"{spec.__name__}: an in-memory upload takes files only, not {fields}")

    async def from_http_request(cls: type[Model], request: Request, serde: Any) -> Model:
        return cls.model_construct(**uploaded_files(request))

    namespace = {
        "__module__": spec.__module__,
        "__qualname__": spec.__qualname__,
        "from_http_request": classmethod(from_http_request),
    }
    in_memory: type[Model] = type(spec.__name__, (spec,), namespace)
    return in_memory
