import pytest

from service.config import Settings, SettingsError


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DLSERVE_PROVIDER", "DLSERVE_MODELS", "DLSERVE_MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.provider == "auto" and "fraud" in settings.models


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DLSERVE_PROVIDER", "tpu", "DLSERVE_PROVIDER"),
        ("DLSERVE_MODELS", "fraud,speech", "unknown areas"),
        ("DLSERVE_MAX_BATCH_ROWS", "0", "at least 1"),
        ("DLSERVE_MAX_BODY_BYTES", "lots", "not an integer"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()
