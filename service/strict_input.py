"""Strict request schemas: what a route's typed parameters say, and nothing looser.

BentoML builds each route's input model from the handler's signature in pydantic's lax mode, so
``"hour": true``, ``"amount": "12.5"`` and ``"card_present": "yes"`` pass, and unknown top-level
fields are ignored. ``strict_input`` derives a model that refuses unknown top-level fields and
validates JSON bodies in strict mode at every level (an integer still counts as a number).
Unknown fields inside nested objects are refused by each request model's own
``extra="forbid"`` (a test checks every route's schema for it).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

Model = TypeVar("Model", bound=BaseModel)


def strict_input(spec: type[Model]) -> type[Model]:
    """``spec`` (BentoML's input model of a route) with unknown fields refused and its JSON
    bodies validated strictly; same name and module, so the OpenAPI names do not change."""

    def model_validate_json(cls: type[Model], json_data: Any, **kwargs: Any) -> Model:
        return super(strict, cls).model_validate_json(json_data, **{**kwargs, "strict": True})

    namespace = {
        "__module__": spec.__module__,
        "__qualname__": spec.__qualname__,
        "model_config": ConfigDict(extra="forbid"),
        "model_validate_json": classmethod(model_validate_json),
    }
    strict: type[Model] = type(spec.__name__, (spec,), namespace)
    return strict
