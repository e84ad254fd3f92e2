"""API keys on a real server: every operation of the OpenAPI document (every area's routes,
the batch job task routes) and the mounted routes answer 401 without a valid key, before any
work; each configured key (from the variable and from the file) is accepted; probes, docs and
`/metrics` stay open; no key is ever written to the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.local_server import LocalServer
from harness.payloads import transactions
from service.paths import OPEN_PATHS

pytestmark = pytest.mark.http
ENV_KEY, FILE_KEY = "env-key-0123456789abcdef", "file-key-0123456789abcdef"
# Routes mounted beside BentoML's (not in /docs.json), the admin load route among them.
MOUNTED = [
    ("GET", "/v1/models"),
    ("GET", "/v1/batch/jobs/some-job/scores"),
    ("POST", "/v1/models/fraud-scorer/load"),
    ("GET", "/v2"),
    ("GET", "/v2/models/fraud-scorer"),
    ("GET", "/v2/models/fraud-scorer/ready"),
    ("POST", "/v2/models/fraud-scorer/infer"),
]


@pytest.fixture
def keyed_server(stored_models: dict[str, dict], tmp_path: Path) -> Iterator[LocalServer]:
    key_file = tmp_path / "keys"
    key_file.write_text(FILE_KEY + "\n")
    env = {
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_API_KEYS": ENV_KEY,
        "DLSERVE_API_KEYS_FILE": str(key_file),
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz")


def operations(server: LocalServer) -> list[tuple[str, str]]:
    """(method, path) of every operation in ``/docs.json`` but the open paths, plus the
    routes mounted beside BentoML's (path parameters filled in)."""
    document = httpx.get(server.url + "/docs.json", timeout=10).json()
    listed = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in document["paths"].items()
        for method in item
        if path not in OPEN_PATHS and path != "/metrics"
    ]
    return listed + MOUNTED


def test_every_route_needs_a_key_and_each_key_is_accepted(keyed_server: LocalServer) -> None:
    listed = operations(keyed_server)
    assert ("POST", "/v1/fraud/score") in listed and ("POST", "/v1/sentiment") in listed
    assert any(path.startswith("/v1/batch/jobs/") for _, path in listed)
    for method, path in listed:
        for headers in ({}, {"Authorization": "Bearer not-a-key-0123456789"}):
            answer = httpx.request(method, keyed_server.url + path, headers=headers, timeout=10)
            assert answer.status_code == 401, (method, path, answer.status_code, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"

    body = {"transactions": transactions(1)}
    for key in (ENV_KEY, FILE_KEY):
        headers = {"Authorization": f"Bearer {key}"}
        scored = httpx.post(keyed_server.url + "/v1/fraud/score", json=body, headers=headers)
        assert scored.status_code == 200, scored.text
        assert httpx.get(keyed_server.url + "/v1/models", headers=headers).status_code == 200

    for path in ("/livez", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(keyed_server.url + path, timeout=10).status_code == 200, path
    logs = keyed_server.logs(tail=None)
    assert ENV_KEY not in logs and FILE_KEY not in logs
    assert "access control: 2 API keys" in logs
