"""Bodies BentoML would answer with a 500, or fetch from a URL, on every route: a JSON route's
body sent as a form (415), and the batch job's malformed uploads (400 naming the field)."""

from __future__ import annotations

import httpx
import pytest

from harness.local_server import LocalServer
from service.multipart_guard import MAX_FILENAME_BYTES
from tests.multipart_bodies import MULTIPART, form_body, form_part

pytestmark = pytest.mark.http
JSON_ROUTES = ["/v1/fraud/score", "/v1/sentiment", "/v1/images/classify_batch", "/v1/completions"]
SUBMIT_ROUTES = ["/v1/batch/jobs/submit", "/v1/batch/jobs"]
CSV = b"amount\n1\n"


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", MULTIPART, "application/x-www-form-urlencoded"],
    ids=["multipart without boundary", "multipart", "url-encoded form"],
)
def test_a_json_route_refuses_a_form_body_with_415(
    server: LocalServer, route: str, content_type: str
) -> None:
    response = httpx.post(
        server.url + route, content=b"{}", headers={"content-type": content_type}, timeout=30
    )
    assert response.status_code == 415, response.text
    if route == "/v1/completions":  # OpenAI's error shape
        error = response.json()["error"]
        assert error["param"] == "header.content-type" and "application/json" in error["message"]
        return
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["header", "content-type"] and "application/json" in detail[0]["msg"]


# case id -> (content type, body, field named, error type)
BAD_UPLOADS = {
    "no boundary": ("multipart/form-data", b"{}", "file", "multipart_required"),
    "json": ("application/json", b'{"file": "x"}', "file", "multipart_required"),
    "file name over the limit": (
        MULTIPART,
        form_body(form_part("file", CSV, filename="a" * (MAX_FILENAME_BYTES + 1) + ".csv")),
        "file",
        "invalid_file_name",
    ),
    "part without a name": (
        MULTIPART,
        form_body(form_part("file", CSV, "rows.csv"), form_part(None, CSV)),
        "file",
        "one_file_required",
    ),
    "a URL instead of a file": (
        MULTIPART,
        form_body(form_part("file", b"https://example.com/rows.csv", filename=None)),
        "file",
        "one_file_required",
    ),
    "a local URL instead of a file": (
        MULTIPART,
        form_body(form_part("file", b"file:///etc/passwd", filename=None)),
        "file",
        "one_file_required",
    ),
    "two files": (
        MULTIPART,
        form_body(form_part("file", CSV, "a.csv"), form_part("file", CSV, "b.csv")),
        "file",
        "one_file_required",
    ),
    "a file as the model": (
        MULTIPART,
        form_body(form_part("file", CSV, "rows.csv"), form_part("model", b"\xff\xfe")),
        "model",
        "plain_field_required",
    ),
    "an unknown field": (
        MULTIPART,
        form_body(form_part("file", CSV, "rows.csv"), form_part("extra", b"1", filename=None)),
        "file",
        "one_file_required",
    ),
}


@pytest.mark.parametrize("route", SUBMIT_ROUTES)
@pytest.mark.parametrize(
    ("content_type", "body", "field", "kind"), BAD_UPLOADS.values(), ids=BAD_UPLOADS
)
def test_a_malformed_job_upload_is_400_naming_the_field(
    server: LocalServer, route: str, content_type: str, body: bytes, field: str, kind: str
) -> None:
    response = httpx.post(
        server.url + route, content=body, headers={"content-type": content_type}, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == [
        {"loc": [field], "msg": response.json()["detail"][0]["msg"], "type": kind}
    ]
    assert "Traceback" not in response.text and "/tmp" not in response.text


def test_a_well_formed_job_upload_is_still_accepted(server: LocalServer) -> None:
    body = form_body(
        form_part("file", CSV, "rows.csv"), form_part("model", b"fraud", filename=None)
    )
    response = httpx.post(
        server.url + "/v1/batch/jobs/submit", content=body, headers={"content-type": MULTIPART}
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) >= {"task_id", "status"}
