"""The error-shaping and counting middlewares on small in-process apps: whatever an app answers
with an error (plain text, a JSON list, pydantic's entries, an exception's 500) leaves as
dlserve's ``{"error", "detail": [{loc, msg, type}]}``, and 4xx and 500 are counted under the
model the request names."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from service.batch.job import QuotaError
from service.errors import (
    FINAL_ERROR_HEADER,
    BodyLimitMiddleware,
    ProtocolErrors,
    QueueFullError,
    TooLargeError,
    message_only,
    to_error_body,
)
from service.metrics import RejectedRequestCounter
from service.openai_errors import openai_error

PYDANTIC_ENTRY = {
    "type": "int_type",
    "loc": ["rows", 0, "hour"],
    "msg": "Input should be a valid integer",
    "input": "3",
    "ctx": {"x": 1},
    "url": "https://errors.pydantic.dev/2.14/v/int_type",
}


async def answer(request: Request) -> Response:
    """``?kind=``: the error the app answers, after reading the body (as BentoML does)."""
    await request.body()
    kind = request.query_params["kind"]
    if kind == "crash":
        raise RuntimeError("boom /srv/secret.py")
    if kind == "list":  # as BentoML answers a 415 or a 4xx BentoMLException
        return JSONResponse([{"error": "media type refused"}], 415)
    if kind == "pydantic":
        return JSONResponse({"error": "1 validation error", "detail": [PYDANTIC_ENTRY]}, 400)
    if kind == "busy":
        return JSONResponse({"error": "full"}, 503, headers={"Retry-After": "1"})
    if kind in ("429", "499"):  # counted where decided: overloaded, client disconnects
        return JSONResponse({"error": kind}, int(kind))
    return PlainTextResponse("fine")


def _client(app: Starlette, **routes: object) -> TestClient:
    return TestClient(ProtocolErrors(app, routes=routes), raise_server_exceptions=False)


APP = Starlette(routes=[Route("/v1/x", answer, methods=["POST"])])


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("POST", "/v1/x?kind=crash", 500, "Internal Server Error"),
        ("PUT", "/v1/x?kind=ok", 405, "Method Not Allowed"),
        ("GET", "/nowhere", 404, "Not Found"),
        ("POST", "/v1/x?kind=list", 415, "media type refused"),
        ("POST", "/v1/x?kind=busy", 503, "full"),
    ],
)
def test_every_error_leaves_in_dlserve_shape(
    method: str, path: str, status: int, error: str
) -> None:
    response = _client(APP).request(method, path)
    assert response.status_code == status
    assert response.json() == {"error": error, "detail": []}
    assert response.headers["content-type"] == "application/json"
    assert "boom" not in response.text


def test_validation_entries_keep_only_loc_msg_and_type() -> None:
    response = _client(APP).post("/v1/x?kind=pydantic")
    assert response.json()["detail"] == [
        {"loc": ["rows", 0, "hour"], "msg": "Input should be a valid integer", "type": "int_type"}
    ]
    assert "pydantic.dev" not in response.text


def test_headers_are_kept_and_successes_pass_untouched() -> None:
    client = _client(APP)
    assert client.post("/v1/x?kind=busy").headers["retry-after"] == "1"
    ok = client.post("/v1/x?kind=ok")
    assert ok.status_code == 200 and ok.text == "fine"


def test_a_protocol_route_gets_its_own_shape_of_the_normalised_body() -> None:
    def shape(status: int, body: dict) -> dict:
        return {"protocol_error": body["error"], "status": status}

    response = _client(APP, **{"/v1/x": shape}).put("/v1/x?kind=ok")
    assert response.json() == {"protocol_error": "Method Not Allowed", "status": 405}


def test_a_protocol_tree_gets_its_shape_on_every_path_under_it_and_nowhere_else() -> None:
    tree = Starlette(
        routes=[
            Route("/v2/models/m/infer", answer, methods=["POST"]),
            Route("/v2x", answer, methods=["POST"]),
        ]
    )
    client = TestClient(
        ProtocolErrors(tree, routes={}, prefixes={"/v2": message_only}),
        raise_server_exceptions=False,
    )
    assert client.post("/v2/models/m/infer?kind=pydantic").json() == {"error": "1 validation error"}
    assert client.get("/v2/nowhere").json() == {"error": "Not Found"}
    assert client.get("/v2").json() == {"error": "Not Found"}
    assert client.post("/v2x?kind=list").json() == {"error": "media type refused", "detail": []}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", {"error": "Bad Request", "detail": []}),
        (b'{"detail": "Not here"}', {"error": "Not here", "detail": []}),
        (b'{"error": "x", "detail": "a string"}', {"error": "x", "detail": []}),
        (
            b'[{"error": "x"}, {"error": "y"}]',
            {"error": '[{"error": "x"}, {"error": "y"}]', "detail": []},
        ),
    ],
)
def test_odd_bodies_become_the_shape(body: bytes, expected: dict) -> None:
    assert to_error_body(400, body) == expected


def _count(model: str, outcome: str) -> float:
    labels = {"model": model, "outcome": outcome}
    return REGISTRY.get_sample_value("dlserve_predictions_total", labels) or 0.0


@pytest.mark.parametrize(
    ("kind", "outcome"), [("crash", "error"), ("pydantic", "rejected"), ("list", "rejected")]
)
def test_4xx_and_500_are_counted_under_the_model_the_body_names(kind: str, outcome: str) -> None:
    def model_of(body: bytes) -> str:
        return json.loads(body)["model"] if body else "default-model"

    app = RejectedRequestCounter(APP, routes={"/v1/x": model_of})
    client = TestClient(app, raise_server_exceptions=False)
    before = _count("named-model", outcome), _count("default-model", outcome)
    client.post(f"/v1/x?kind={kind}", json={"model": "named-model"})
    client.post(f"/v1/x?kind={kind}")
    assert (_count("named-model", outcome), _count("default-model", outcome)) == (
        before[0] + 1,
        before[1] + 1,
    )


@pytest.mark.parametrize("kind", ["ok", "busy", "429", "499"])
def test_successes_503_429_and_499_are_left_to_where_they_are_decided(kind: str) -> None:
    app = RejectedRequestCounter(APP, routes={"/v1/x": lambda body: "left-model"})
    TestClient(app).post(f"/v1/x?kind={kind}")
    assert all(_count("left-model", outcome) == 0 for outcome in ("error", "rejected"))


def test_a_typed_error_is_rendered_once_in_its_routes_protocol_shape() -> None:
    """The route renders the data plane's error in OpenAI's shape itself; the middleware, whose
    shape for the route would wrap the body again, sends it untouched (no JSON round trip)."""
    refusal = QueueFullError("the waiting queue is full")

    async def refuse(request: Request) -> Response:
        return refusal.answer(openai_error)

    def wrap_again(status: int, body: dict) -> dict:
        return {"wrapped": body}

    app = Starlette(routes=[Route("/v1/x", refuse, methods=["POST"])])
    response = _client(app, **{"/v1/x": wrap_again}).post("/v1/x")
    assert response.status_code == 429
    assert response.json() == openai_error(429, refusal.body())
    assert response.json()["error"]["type"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "1"
    assert FINAL_ERROR_HEADER not in response.headers


def test_size_refusals_are_typed_413s_with_their_documented_bodies() -> None:
    quota = QuotaError("the file has more than 10 rows (DLSERVE_BATCH_MAX_ROWS)")
    assert isinstance(quota, TooLargeError) and quota.status == 413
    assert quota.body() == {
        "error": str(quota),
        "detail": [{"loc": ["body", "file"], "msg": str(quota), "type": "job_too_large"}],
    }
    limited = TestClient(BodyLimitMiddleware(APP, max_bytes=1024))
    response = limited.post("/v1/x?kind=ok", content=b"x" * 1025)
    assert response.status_code == 413
    assert response.json() == {
        "error": "request body larger than 1024 bytes",
        "detail": [
            {"loc": ["body"], "msg": "body must be at most 1024 bytes", "type": "body_too_large"}
        ],
    }
    assert limited.post("/v1/x?kind=ok", content=b"x" * 1024).status_code == 200
