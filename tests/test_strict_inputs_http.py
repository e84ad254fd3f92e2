"""Strict inputs: JSON types must match the schema (no strings or booleans as numbers, no
numbers as strings) and unknown fields are a 400 at every level, on every JSON route."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from harness.http_checks import assert_names_field_and_rule
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.service import ENDPOINTS, DLServe

ROW = transactions(1)[0]


def _row(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(ROW), **changes}


def _objects(schema: Any) -> list[dict[str, Any]]:
    """Every object schema with properties inside ``schema`` ($defs included)."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            found.append(schema)
        for value in schema.values():
            found += _objects(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _objects(value)
    return found


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.route for e in ENDPOINTS])
def test_every_request_object_refuses_unknown_fields(endpoint: Any) -> None:
    schema = DLServe.apis[endpoint.api_name].input_spec.model_json_schema()
    objects = _objects(schema)
    assert objects and all(obj.get("additionalProperties") is False for obj in objects), schema


# case id -> (route, body, loc of the error)
LOOSE = {
    "boolean as an integer": (
        "/v1/fraud/score",
        {"transactions": [_row(hour=True)]},
        ["transactions", 0, "hour"],
    ),
    "string as a number": (
        "/v1/fraud/score",
        {"transactions": [_row(amount="12.5")]},
        ["transactions", 0, "amount"],
    ),
    "string as a boolean": (
        "/v1/fraud/score",
        {"transactions": [_row(card_present="yes")]},
        ["transactions", 0, "card_present"],
    ),
    "integer as a boolean": (
        "/v1/fraud/score",
        {"transactions": [_row(new_device=1)]},
        ["transactions", 0, "new_device"],
    ),
    "fractional integer": (
        "/v1/fraud/score",
        {"transactions": [_row(account_age_days=3.5)]},
        ["transactions", 0, "account_age_days"],
    ),
    "unknown top-level field": (
        "/v1/fraud/score",
        {"transactions": [ROW], "extra": 1},
        ["extra"],
    ),
    "unknown nested field": (
        "/v1/fraud/score",
        {"transactions": [_row(extra=1)]},
        ["transactions", 0, "extra"],
    ),
    "sentiment unknown field": ("/v1/sentiment", {"texts": ["good"], "modle": "rnn"}, ["modle"]),
    "number as a text": ("/v1/sentiment", {"texts": [5]}, ["texts", 0]),
    "image batch unknown field": (
        "/v1/images/classify_batch",
        {"images": ["aGk="], "k": 3},
        ["k"],
    ),
    "generator count as a string": ("/v1/images/generate", {"n": "2"}, ["n"]),
    "generator seed as a boolean": ("/v1/images/generate", {"seed": True}, ["seed"]),
}


@pytest.mark.http
@pytest.mark.parametrize(("route", "body", "loc"), LOOSE.values(), ids=LOOSE)
def test_loose_json_is_a_400_naming_the_field(
    server: LocalServer, route: str, body: dict, loc: list
) -> None:
    response = httpx.post(server.url + route, json=body, timeout=30)
    assert_names_field_and_rule(response, loc, "")


@pytest.mark.http
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "To be", "max_tokens": "4"}, "max_tokens"),
        ({"prompt": "To be", "stream": "true"}, "stream"),
        (
            {"prompt": "To be", "stream_options": {"include_usage": True, "x": 1}},
            "stream_options.x",
        ),
        ({"prompt": "To be", "best_of": "2"}, "best_of"),
        ({"prompt": "To be", "best_off": 2}, "best_off"),
    ],
)
def test_loose_completion_requests_are_400_in_openai_shape(
    server: LocalServer, body: dict, param: str
) -> None:
    response = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.http
def test_an_integer_is_still_a_number(server: LocalServer) -> None:
    response = httpx.post(
        server.url + "/v1/fraud/score", json={"transactions": [_row(amount=12)]}, timeout=30
    )
    assert response.status_code == 200, response.text
