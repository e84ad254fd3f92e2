"""BentoML's per-request extras follow the settings: access log and tracing off, request metrics
on by default; BentoML reads the configuration it is given."""

from __future__ import annotations

import pytest
from opentelemetry.util.http import ExcludeList

from service.config import ENV_PREFIX, Settings
from service.extras import EVERY_URL, UNLOGGED_PATHS, service_config

ROUTES = ("/v1/fraud/score", "/v1/images/classify")


def settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name in ("access_log", "tracing", "request_metrics"):
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)
    for name, value in values.items():
        monkeypatch.setenv(ENV_PREFIX + name.upper(), value)
    return Settings.from_env()


def test_cheap_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = service_config(settings(monkeypatch), ROUTES)
    assert config["logging"] == {"access": {"enabled": False}}  # metrics skip only the probes
    excluded = ExcludeList(config["tracing"]["excluded_urls"])
    assert all(excluded.url_disabled(f"http://127.0.0.1:3000{route}") for route in ROUTES)


def test_everything_on(monkeypatch: pytest.MonkeyPatch) -> None:
    config = service_config(settings(monkeypatch, access_log="1", tracing="1"), ROUTES)
    assert config == {"logging": {"access": {"enabled": True}}}  # BentoML's own tracing


def test_request_metrics_off_skips_the_routes_and_the_probes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = service_config(settings(monkeypatch, request_metrics="false"), ROUTES)
    assert config["logging"]["access"]["skip_paths"] == [*UNLOGGED_PATHS, *ROUTES]
    assert config["tracing"]["excluded_urls"] == [EVERY_URL]


def test_bentoml_accepts_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from _bentoml_sdk.service.config import validate

    config = service_config(settings(monkeypatch, request_metrics="false"), ROUTES)
    assert validate(config)["tracing"]["excluded_urls"] == [EVERY_URL]
