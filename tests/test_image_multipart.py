"""``POST /v1/images/classify`` over real HTTP with malformed multipart bodies: each one is a
400 naming ``image`` (BentoML 1.4 alone answered several of them with a 500)."""

from __future__ import annotations

import httpx
import pytest

from harness.http_checks import assert_names_field_and_rule
from harness.images import encode, load_test_images
from harness.local_server import LocalServer
from tests.multipart_bodies import MULTIPART, form_body, form_part

pytestmark = pytest.mark.http
ROUTE = "/v1/images/classify"
EXPECTED = "expected one file in the multipart field 'image'"
PNG = encode(load_test_images(1)[0][0])  # starts with b"\x89PNG": not UTF-8


def _post(server: LocalServer, body: bytes, content_type: str | None = MULTIPART) -> httpx.Response:
    headers = {"content-type": content_type} if content_type is not None else {}
    return httpx.post(server.url + ROUTE, content=body, headers=headers, timeout=30)


# case id -> (content type, body, expected error type)
MALFORMED = {
    "binary file under another field": (
        MULTIPART,
        form_body(form_part("file", PNG)),
        "one_file_required",
    ),
    "no boundary": (
        "multipart/form-data",
        form_body(form_part("image", PNG)),
        "multipart_required",
    ),
    "wrong boundary": (
        "multipart/form-data; boundary=other",
        form_body(form_part("image", PNG)),
        "invalid_multipart",
    ),
    "truncated in the file": (
        MULTIPART,
        form_body(form_part("image", PNG))[:-100],
        "invalid_multipart",
    ),
    "no closing boundary": (MULTIPART, form_part("image", PNG), "invalid_multipart"),
    "raw bytes": ("application/octet-stream", PNG, "multipart_required"),
    "url-encoded form": (
        "application/x-www-form-urlencoded",
        b"image=picture",
        "multipart_required",
    ),
    "json": ("application/json", b'{"image": "picture"}', "multipart_required"),
    "empty body": (None, b"", "multipart_required"),
    "empty multipart body": (MULTIPART, b"", "invalid_multipart"),
    "two image files": (
        MULTIPART,
        form_body(form_part("image", PNG), form_part("image", PNG)),
        "one_file_required",
    ),
    "image and another file": (
        MULTIPART,
        form_body(form_part("image", PNG), form_part("file", PNG)),
        "one_file_required",
    ),
    "image without a file name": (
        MULTIPART,
        form_body(form_part("image", PNG, filename=None)),
        "one_file_required",
    ),
    "part without a name": (MULTIPART, form_body(form_part(None, PNG)), "one_file_required"),
    "file name too long": (
        MULTIPART,
        form_body(form_part("image", PNG, filename="a" * 300 + ".png")),
        "invalid_file_name",
    ),
}


def test_a_hand_built_upload_is_classified(server: LocalServer) -> None:
    response = _post(server, form_body(form_part("image", PNG)))
    assert response.status_code == 200, response.text
    assert response.json()["model"]["name"] == "image-classifier"


@pytest.mark.parametrize(("content_type", "body", "kind"), MALFORMED.values(), ids=MALFORMED)
def test_malformed_uploads_get_400_naming_image(
    server: LocalServer, content_type: str | None, body: bytes, kind: str
) -> None:
    response = _post(server, body, content_type)
    assert_names_field_and_rule(response, ["image"], EXPECTED)
    assert [entry["type"] for entry in response.json()["detail"]] == [kind]
    assert response.json()["error"].startswith("image: ")
    assert "Traceback" not in response.text and "/tmp" not in response.text


def test_service_still_classifies_after_malformed_uploads(server: LocalServer) -> None:
    for content_type, body, _ in MALFORMED.values():
        _post(server, body, content_type)
    assert httpx.get(server.url + "/readyz").status_code == 200
    response = httpx.post(server.url + ROUTE, files={"image": ("shoe.png", PNG)}, timeout=30)
    assert response.status_code == 200, response.text
