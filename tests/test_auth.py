"""API keys, in-process: the guard refuses a missing, malformed or unknown key with 401 on
every path but the open ones, accepts each configured key (rotation), and keys are read from
the environment and from a file, with a clear error when the file is unusable."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from service import auth
from service.config import ENV_PREFIX, Settings, SettingsError

OLD, NEW = "old-key-0123456789abcdef", "new-key-0123456789abcdef"


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


def client(keys: tuple[str, ...], protect_metrics: bool = False) -> TestClient:
    settings = Settings(protect_metrics=protect_metrics)
    guard = auth.ApiKeyGuard(ok_app, keys=keys, open_paths=auth.open_paths(settings))
    return TestClient(guard)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {OLD}",
        "Bearer wrong-key-0123456789",
        f"Bearer {OLD}x",
    ],
)
@pytest.mark.parametrize(
    "path", ["/v1/fraud/score", "/v1/batch/jobs/submit", "/v1/models", "/v2/x"]
)
def test_a_missing_or_wrong_key_gets_401(header: str | None, path: str) -> None:
    headers = {} if header is None else {"authorization": header}
    response = client((OLD, NEW)).post(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"][0]["loc"] == ["header", "authorization"]
    assert OLD not in response.text and NEW not in response.text


@pytest.mark.parametrize("key", [OLD, NEW])
def test_every_configured_key_is_accepted(key: str) -> None:
    response = client((OLD, NEW)).post(
        "/v1/fraud/score", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    lower_scheme = client((OLD, NEW)).post("/v1/models", headers={"authorization": f"bearer {key}"})
    assert lower_scheme.status_code == 200


@pytest.mark.parametrize(
    "path", ["/livez", "/readyz", "/healthz", "/docs.json", "/metrics", "/ui", "/ui/app.js"]
)
def test_probes_docs_and_metrics_stay_open(path: str) -> None:
    assert client((OLD,)).get(path).status_code == 200


def test_metrics_can_be_protected() -> None:
    protected = client((OLD,), protect_metrics=True)
    assert protected.get("/metrics").status_code == 401
    assert protected.get("/metrics", headers={"Authorization": f"Bearer {OLD}"}).status_code == 200
    assert protected.get("/readyz").status_code == 200


def test_without_keys_there_is_no_access_control() -> None:
    assert client(()).post("/v1/fraud/score").status_code == 200


def test_keys_come_from_the_variable_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"\n{NEW}\n\n  third-key-0123456789  \n")
    monkeypatch.setenv("DLSERVE_API_KEYS", OLD)
    monkeypatch.setenv("DLSERVE_API_KEYS_FILE", str(key_file))
    settings = Settings.from_env()
    assert auth.configured_keys(settings) == (OLD, NEW, "third-key-0123456789")
    assert OLD not in str(settings.public()), "a key would be written to the log"


@pytest.mark.parametrize("value", ["", " , ", ",,", "  "])
def test_a_variable_holding_no_key_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DLSERVE_API_KEYS", value)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env()
    assert "DLSERVE_API_KEYS=" in str(raised.value) and "holds no key" in str(raised.value)


@pytest.mark.parametrize(
    ("content", "rule"),
    [(None, "cannot read it"), ("\n\n", "holds no key"), ("short\n", "at least 16 characters")],
)
def test_an_unusable_key_file_is_named(tmp_path: Path, content: str | None, rule: str) -> None:
    key_file = tmp_path / "keys"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(SettingsError) as raised:
        auth.configured_keys(Settings(api_keys_file=key_file))
    assert "DLSERVE_API_KEYS_FILE" in str(raised.value) and rule in str(raised.value)
