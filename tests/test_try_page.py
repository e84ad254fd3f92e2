"""The try-it page's routes in-process (``service/try_page.py``): its files only, answered from
memory with their media types and a policy that keeps the page on this origin; any other name
(``..``, encoded slashes, absolute paths, the module itself) is a 404; the page needs no key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service import try_page
from service.paths import uncounted

CLIENT = TestClient(try_page.build_app())
ASSETS = try_page.load_assets()


def test_the_page_and_its_files_are_answered_with_their_media_types() -> None:
    assert {"index.html", "app.js", "style.css"} <= set(ASSETS)
    page = CLIENT.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == (try_page.FOLDER / "index.html").read_bytes()
    assert CLIENT.get("/ui/").content == page.content
    for name, media_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        answer = CLIENT.get(f"/ui/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].startswith(media_type)
        assert answer.content == (try_page.FOLDER / name).read_bytes()
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"] == try_page.CONTENT_SECURITY_POLICY


def test_the_page_loads_nothing_from_elsewhere() -> None:
    policy = try_page.CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    page = ASSETS["index.html"].body.decode()
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/ui/app.js" in referenced and "/ui/style.css" in referenced
    for reference in referenced:  # this origin's paths, in-page anchors, no icon: no CDN
        local = reference.startswith(("/", "#")) and not reference.startswith("//")
        assert local or reference == "data:,", reference
    for name, asset in ASSETS.items():
        assert b"http://" not in asset.body and b"https://" not in asset.body, name


def test_a_known_version_is_not_sent_again() -> None:
    first = CLIENT.get("/ui/app.js")
    again = CLIENT.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    stale = CLIENT.get("/ui/app.js", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == first.content


@pytest.mark.parametrize(
    "path",
    [
        "/ui/missing.js",
        "/ui/..%2Ftry_page.py",
        "/ui/%2e%2e/try_page.py",
        "/ui/..%2F..%2Fpyproject.toml",
        "/ui/%2Fetc%2Fpasswd",
        "/ui/ui/app.js",
        "/ui/app.js/",
        "/ui/.%2Fapp.js",
        "/ui/..%5Ctry_page.py",
        "/ui/__init__.py",
    ],
)
def test_any_other_name_is_not_found(path: str) -> None:
    answer = CLIENT.get(path)
    assert answer.status_code == 404, path
    assert answer.json()["error"] == "not a file of the try-it page (/ui)"


def test_only_reads_are_answered() -> None:
    assert CLIENT.post("/ui").status_code == 405
    assert CLIENT.put("/ui/app.js").status_code == 405
    assert CLIENT.head("/ui/app.js").status_code == 200


def test_only_the_files_with_known_suffixes_are_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>x</p>")
    (tmp_path / "notes.txt").write_text("not served")
    (tmp_path / "folder.js").mkdir()
    assert set(try_page.load_assets(tmp_path)) == {"index.html"}
    with pytest.raises(RuntimeError, match=r"index\.html"):
        try_page.build_app(try_page.load_assets(tmp_path / "folder.js"))


def test_the_page_is_never_counted_by_the_admission_limit() -> None:
    assert uncounted("/ui") and uncounted("/ui/app.js") and not uncounted("/uix")
