"""Assertions shared by the HTTP tests of every route."""

from __future__ import annotations

import httpx


def assert_names_field_and_rule(response: httpx.Response, loc: list, message: str) -> None:
    """A 400 whose ``detail`` has an entry at ``loc`` whose message contains ``message``."""
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(entry["loc"] == loc and message in entry["msg"] for entry in detail), detail
