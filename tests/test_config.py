"""Every ``DLSERVE_*`` setting: its default, a good value read from the environment, and a bad
value refused with a message naming the variable and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from service import registry
from service.config import ENV_PREFIX, Settings, SettingsError
from service.cpus import available_cpus

# field -> (a valid value as the environment holds it, what it becomes, a bad value, the rule)
CASES = {
    "provider": (" CUDA ", "cuda", "tpu", "'auto', 'cpu' or 'cuda'"),
    "models": ("fraud, image", ("fraud", "image"), "fraud,speech", "unknown areas ['speech']"),
    "area_modules": ("", (), "no.such.module", "'no.such.module' cannot be imported"),
    "workers": ("2", 2, "0", "greater than or equal to 1"),
    "intra_op_threads": ("0", 0, "-1", "greater than or equal to 0"),
    "max_body_bytes": ("2048", 2048, "lots", "valid integer"),
    "grpc_port": ("9001", 9001, "70000", "less than or equal to 65535"),
    "max_batch_rows": ("64", 64, "0", "greater than or equal to 1"),
    "max_wait_ms": ("5", 5, "-5", "greater than or equal to 0"),
    "max_queue_rows": ("10", 10, "0", "greater than or equal to 1"),
    "max_request_tokens": ("4096", 4096, "0", "greater than or equal to 1"),
    "max_batch_tokens": ("16384", 16384, "many", "valid integer"),
    "max_request_pixels": ("1000000", 1_000_000, "0", "greater than or equal to 1"),
    "max_completion_tokens": ("512", 512, "0", "greater than or equal to 1"),
    "max_active_sequences": ("4", 4, "0", "greater than or equal to 1"),
    "max_waiting_sequences": ("0", 0, "-1", "greater than or equal to 0"),
    "stream_interval_ms": ("5", 5.0, "1001", "less than or equal to 1000"),
    "max_concurrent_requests": ("8", 8, "0", "greater than or equal to 1"),
    "request_read_timeout_s": ("5", 5, "0", "greater than or equal to 1"),
    "refusal_delay_ms": ("0", 0, "5001", "less than or equal to 5000"),
    "shutdown_delay_s": ("0", 0, "-1", "greater than or equal to 0"),
    "shutdown_grace_s": ("5", 5, "0", "greater than or equal to 1"),
    "api_keys": (
        "old-key-0123456789, new-key-0123456789",
        (SecretStr("old-key-0123456789"), SecretStr("new-key-0123456789")),
        "long-enough-key-0123,short",
        "at least 16 characters",
    ),
    "api_keys_file": ("/run/secrets/keys", Path("/run/secrets/keys"), "keys", "absolute path"),
    "protect_metrics": ("true", True, "maybe", "valid boolean"),
    "log_level": ("DEBUG", "debug", "verbose", "'debug', 'info', 'warning' or 'error'"),
    "log_format": ("json", "json", "xml", "'text' or 'json'"),
    "batch_dir": ("/srv/jobs", Path("/srv/jobs"), "jobs", "must be an absolute path"),
    "batch_retention_s": ("7200", 7200, "60", "greater than or equal to 3600"),
    "batch_max_rows": ("500", 500, "0", "greater than or equal to 1"),
    "batch_max_output_bytes": ("4096", 4096, "100", "greater than or equal to 1024"),
    "batch_max_tokens": ("1000", 1000, "0", "greater than or equal to 1"),
    "batch_max_jobs": ("4", 4, "0", "greater than or equal to 1"),
    "batch_max_queued": ("0", 0, "-1", "greater than or equal to 0"),
    "model_poll_s": ("0.5", 0.5, "-1", "greater than or equal to 0"),
    "pinned_models": (
        "fraud-scorer:abc, image-classifier:def",
        ("fraud-scorer:abc", "image-classifier:def"),
        "fraud-scorer",
        "is not `name:version` of a served model",
    ),
    "rollouts": (
        '{"fraud-scorer": {"candidate": "abc", "mode": "canary"}}',
        {"fraud-scorer": {"candidate": "abc", "mode": "canary"}},
        '{"fraud-scorer": 10}',
        "valid dictionary",
    ),
    "rollout_key_header": ("x-client-id", "x-client-id", "X Client", "should match pattern"),
    "rollout_shadow_max_in_flight": ("4", 4, "0", "greater than or equal to 1"),
    "payload_log_dir": ("/srv/payloads", Path("/srv/payloads"), "logs", "absolute path"),
    "payload_log_rate": (
        "fraud-scorer=0.1, text-generator=1",
        ("fraud-scorer=0.1", "text-generator=1"),
        "fraud-scorer=1.5",
        "is not model=share with a share from 0 to 1",
    ),
    "payload_log_redact": ("amount, hour", ("amount", "hour"), "amount,a b", "not a field name"),
    "payload_log_queue": ("16", 16, "0", "greater than or equal to 1"),
    "payload_log_queue_bytes": ("2048", 2048, "10", "greater than or equal to 1024"),
    "payload_log_max_record_bytes": ("4096", 4096, "10", "greater than or equal to 1024"),
    "payload_log_part_records": ("10", 10, "0", "greater than or equal to 1"),
    "payload_log_flush_s": ("0.5", 0.5, "0", "greater than 0"),
    "payload_log_max_bytes": ("1048576", 1048576, "1", "greater than or equal to 1024"),
    "payload_log_max_age_s": ("3600", 3600, "59", "greater than or equal to 60"),
    "precision": (
        "INT8, fraud-scorer=fp32",
        ("int8", "fraud-scorer=fp32"),
        "fraud-scorer=int4",
        "unknown precision 'int4'",
    ),
    "access_log": ("true", True, "sometimes", "valid boolean"),
    "tracing": ("1", True, "sampled", "valid boolean"),
    "request_metrics": ("false", False, "few", "valid boolean"),
    "lean_path": ("false", False, "mostly", "valid boolean"),
    "lean_areas": ("fraud, image", ("fraud", "image"), "fraud,nope", "unknown areas ['nope']"),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)


def test_every_setting_is_tested() -> None:
    assert set(CASES) == set(Settings.model_fields)


def test_defaults_without_environment() -> None:
    settings = registry.settings_from_env()
    assert settings.provider == "auto" and settings.workers == available_cpus()
    assert not settings.access_log and not settings.tracing and settings.request_metrics
    assert settings.models == tuple(registry.all_areas()) and "fraud" in settings.models
    assert settings.area_modules == () and settings.max_wait_ms == 0
    assert settings.batch_retention_s == 86400


@pytest.mark.parametrize("field", sorted(CASES))
def test_a_good_value_is_read(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    raw, expected, _, _ = CASES[field]
    monkeypatch.setenv(ENV_PREFIX + field.upper(), raw)
    assert getattr(registry.settings_from_env(), field) == expected


@pytest.mark.parametrize("field", sorted(CASES))
def test_a_bad_value_names_the_variable_and_the_rule(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    _, _, bad, rule = CASES[field]
    variable = ENV_PREFIX + field.upper()
    monkeypatch.setenv(variable, bad)
    with pytest.raises(SettingsError) as raised:
        registry.settings_from_env()
    assert rule in str(raised.value) and variable in str(raised.value)


def test_a_payload_log_share_of_an_unknown_model_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DLSERVE_PAYLOAD_LOG_RATE", "fraud-scorer=0.1,fraud=0.5")
    with pytest.raises(
        SettingsError, match=r"DLSERVE_PAYLOAD_LOG_RATE names unknown models \['fraud'\]"
    ):
        registry.settings_from_env()


def test_public_lists_every_setting_by_variable() -> None:
    shown = registry.settings_from_env().public()
    assert set(shown) == {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def test_a_batch_token_budget_below_the_request_budget_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_PREFIX + "MAX_REQUEST_TOKENS", "4096")
    monkeypatch.setenv(ENV_PREFIX + "MAX_BATCH_TOKENS", "2048")
    with pytest.raises(SettingsError, match=r"DLSERVE_MAX_BATCH_TOKENS \(2048\) must be at least"):
        registry.settings_from_env()
