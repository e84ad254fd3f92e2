"""Loading versions while serving, in-process: fault isolation of every failure kind, the swap,
requests finishing on the version they started on, pinning, the training state."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from core import training_status
from core.model_store import ModelUnavailableError, load_model
from core.text_generation import SamplingParams
from harness.payloads import transactions
from service import registry
from service.areas.fraud import Transaction, to_arrays
from service.areas.text import MODEL as TEXT_MODEL
from service.areas.text.program import encode_request
from service.config import Settings, SettingsError
from service.served_model import ModelNotReadyError, ServedModel, request_scope
from tests import model_versions as mv

NAME = "fraud-scorer"
SPEC = registry.area_of(NAME).spec_by_name[NAME]
INPUTS = to_arrays([Transaction(**row) for row in transactions(3)])


def sample_value(name: str, **labels: str) -> float:
    """This process's value of a metric sample (0 when never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def add_version(fraud_model: dict) -> Iterator[Callable[..., str]]:
    """Register versions of the fraud scorer (copies of the smoke-trained one, optionally
    damaged) in the session's store; removed afterwards."""
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    originals: dict[str, str] = {}
    added: list[tuple[str, str]] = []

    def add(alter: mv.Alter | None = None, name: str = NAME) -> str:
        original = originals.setdefault(name, (store / name / "latest").read_text().strip())
        added.append((name, mv.new_version(store, name, alter, store / name / original)))
        return added[-1][1]

    yield add
    for name, version in reversed(added):
        mv.remove_version(store, name, version)


def _served(settings: Settings | None = None) -> ServedModel:
    return ServedModel(SPEC, settings or Settings.from_env(), in_training=lambda name: None)


DAMAGES = {
    "truncated metadata": (mv.truncate_metadata, "metadata.json is unreadable"),
    "metadata without sha256": (mv.drop_metadata_key("sha256"), r"lacks \['sha256'\]"),
    "metadata without preprocessing": (
        mv.drop_metadata_key("preprocessing"),
        "preprocessing: Field required",
    ),
    "graph refused, sha matching": (mv.change_onnx_keeping_sha, "ONNX Runtime refused"),
    "graph altered": (mv.change_onnx_only, "sha256 of model.onnx"),
    "failing warm-up": (mv.break_warm_up, "warm-up inference failed"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_each_failure_kind_makes_the_model_unavailable_with_its_reason(
    damage: str, add_version: Callable[..., str]
) -> None:
    alter, reason = DAMAGES[damage]
    version = add_version(alter)
    served = _served()
    assert served.ready is None and served.state == "unavailable"
    assert served.reason is not None
    assert version in served.reason
    entry = served.describe([{"route": "/v1/fraud/score", "request_schema": {}}])
    assert entry["status"] == "unavailable"
    assert entry["last_load"]["outcome"] == "failed"
    assert entry["last_load"]["version"] == version
    assert re.search(reason, entry["reason"]), entry["reason"]
    with pytest.raises(ModelNotReadyError, match=reason):
        asyncio.run(served.predict(INPUTS))


def test_the_core_loader_names_each_failure(add_version: Callable[..., str]) -> None:
    for alter, reason in DAMAGES.values():
        if "Field required" in reason:  # the area's contract reads it, not the loader
            continue
        version = add_version(alter)
        with pytest.raises(ModelUnavailableError, match=reason):
            load_model(f"{NAME}:{version}", "cpu")


def test_a_new_version_is_swapped_in_and_running_requests_finish_on_the_old(
    add_version: Callable[..., str], fraud_model: dict
) -> None:
    served = _served()
    old = served.acquire()  # a request running on the served version
    assert old.ready.version == fraud_model["version"]
    loads_before = sample_value("dlserve_model_loads_total", model=NAME, outcome="ok")
    version = add_version()
    attempt = served.refresh()
    assert attempt is not None and attempt.outcome == "ok" and attempt.version == version
    assert served.ready is not None and served.ready.version == version
    assert sample_value("dlserve_model_loads_total", model=NAME, outcome="ok") == loads_before + 1
    assert (
        sample_value(
            "dlserve_model_info", model=NAME, version=fraud_model["version"], provider="cpu"
        )
        == 0
    )
    assert sample_value("dlserve_model_info", model=NAME, version=version, provider="cpu") == 1
    # the old version still answers the request that holds it, then is released
    assert old.retired and not old.closed
    outputs = asyncio.run(old.runner.submit(INPUTS))
    assert outputs["fraud_probability"].shape == (3,)
    served.release(old)
    assert old.closed
    ready, _ = asyncio.run(served.predict(INPUTS))
    assert ready.version == version
    assert served.refresh() is None  # nothing new: nothing loaded


def test_a_stream_running_across_a_swap_finishes_on_its_version(
    add_version: Callable[..., str], text_model: dict
) -> None:
    """Stepwise: the old version's scheduler is released only once its last stream ends."""
    spec = registry.area_of(TEXT_MODEL).spec_by_name[TEXT_MODEL]
    served = ServedModel(spec, Settings.from_env(), in_training=lambda name: None)
    old = served.acquire()  # the generation serving now (released at once)
    served.release(old)

    async def stream_across_a_swap() -> tuple[str, int]:
        request = encode_request(old.ready, "ROMEO:\n", 20, SamplingParams(1.0, 1.0, 0), seed=3)
        used, outputs = served.stream([request])
        chunks = [await anext(outputs)]
        new = add_version(name=TEXT_MODEL)
        assert served.refresh() is not None and served.ready.version == new
        assert old.retired and not old.closed  # the stream still runs on it
        chunks += [chunk async for chunk in outputs]
        return used.version, len(chunks)

    version, chunks = asyncio.run(stream_across_a_swap())
    assert version == text_model["version"] and chunks >= 2
    assert old.closed  # released after its last stream


def test_a_request_runs_on_the_version_it_read_even_across_a_swap(
    add_version: Callable[..., str], fraud_model: dict
) -> None:
    served = _served()

    async def request() -> tuple[str, str]:
        with request_scope():
            seen = served.ready_for_request()
            assert seen is not None
            served.refresh()  # a swap between reading the model and predicting
            answered, _ = await served.predict(INPUTS)
            return seen.version, answered.version

    add_version()
    seen, answered = asyncio.run(request())
    assert seen == answered == fraud_model["version"]
    assert served.ready is not None and served.ready.version != seen


@pytest.mark.parametrize(
    "damage", ["graph altered", "graph refused, sha matching", "failing warm-up"]
)
def test_a_corrupt_new_version_leaves_the_old_one_serving_with_the_reason(
    damage: str, add_version: Callable[..., str], fraud_model: dict
) -> None:
    alter, reason = DAMAGES[damage]
    served = _served()
    failed_before = sample_value("dlserve_model_loads_total", model=NAME, outcome="failed")
    version = add_version(alter)
    attempt = served.refresh()
    assert attempt is not None and attempt.outcome == "failed" and attempt.version == version
    assert served.ready is not None and served.ready.version == fraud_model["version"]
    assert served.state == "ready"
    entry = served.describe([{"route": "/v1/fraud/score", "request_schema": {}}])
    assert entry["status"] == "ready" and entry["version"] == fraud_model["version"]
    assert entry["last_load"]["outcome"] == "failed" and entry["last_load"]["version"] == version
    assert re.search(reason, entry["last_load"]["reason"])
    after = sample_value("dlserve_model_loads_total", model=NAME, outcome="failed")
    assert after == failed_before + 1
    assert served.refresh() is None  # a failed version is not retried by polling
    forced = served.refresh(force=True)  # the load route retries it
    assert forced is not None and forced.outcome == "failed"
    ready, _ = asyncio.run(served.predict(INPUTS))
    assert ready.version == fraud_model["version"]


def test_a_version_caught_half_written_is_retried_by_polling_once_complete(
    add_version: Callable[..., str],
) -> None:
    """A first registration or a copy into a mounted store, read before its files are all
    there: polling retries it after a delay (here 1 s), and serves it once complete."""
    served = _served(Settings(model_poll_s=0.5))
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    metadata = {}

    def half_written(folder: Path) -> None:
        metadata["text"] = (folder / "metadata.json").read_text()
        mv.truncate_metadata(folder)

    version = add_version(half_written)
    attempt = served.refresh()
    assert attempt is not None and attempt.outcome == "failed"
    (store / NAME / version / "metadata.json").write_text(metadata["text"])  # complete now
    assert served.refresh() is None  # not before the delay
    time.sleep(1.1)
    attempt = served.refresh()
    assert attempt is not None and attempt.outcome == "ok"
    assert served.ready is not None and served.ready.version == version


def test_a_pinned_version_is_never_swapped(
    add_version: Callable[..., str], fraud_model: dict
) -> None:
    settings = Settings(pinned_models=(f"{NAME}:{fraud_model['version']}",))
    served = _served(settings)
    add_version()
    assert served.refresh() is None
    assert served.ready is not None and served.ready.version == fraud_model["version"]
    assert (
        served.describe([{"route": "/x", "request_schema": {}}])["pinned"] == fraud_model["version"]
    )


def test_a_pin_must_name_a_served_model_and_a_version(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("fraud-scorer", "no-such-model:abc", "fraud-scorer:"):
        monkeypatch.setenv("DLSERVE_PINNED_MODELS", bad)
        with pytest.raises(SettingsError, match="DLSERVE_PINNED_MODELS"):
            registry.settings_from_env()  # the pins are checked against the declared models


def test_a_model_being_trained_says_so() -> None:
    served = ServedModel(
        SPEC.__class__("no-such-model"), Settings.from_env(), in_training=lambda name: "training"
    )
    assert served.state == "training" and "training" in (served.reason or "")
    gone = ServedModel(
        SPEC.__class__("no-such-model"), Settings.from_env(), in_training=lambda name: None
    )
    assert gone.state == "unavailable" and "train it first" in (gone.reason or "")


def test_the_training_status_file_names_the_models_of_a_live_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    training_status.write_status(["fraud-scorer"], ["image-classifier"])
    assert training_status.status_path().parent == tmp_path.resolve()
    assert training_status.training_state("fraud-scorer") == "training"
    assert training_status.training_state("image-classifier") == "waiting"
    assert training_status.training_state("text-generator") is None
    path = training_status.status_path()
    path.write_text(path.read_text().replace(str(os.getpid()), "999999999"))  # a dead trainer
    assert training_status.training_state("fraud-scorer") is None
    path.write_text("{trunc")
    assert training_status.training_state("fraud-scorer") is None
    training_status.clear_status()
    assert not path.exists()


def _drop_threshold(folder: Path) -> None:
    path = folder / "metadata.json"
    metadata = json.loads(path.read_text())
    del metadata["decision"]["threshold"]
    path.write_text(json.dumps(metadata))


def _transformer_tokenizer(folder: Path) -> None:
    """The RNN with the transformer's tokenizer: ids beyond its 1,000-word embedding. The
    graph's zero-filled warm-up and the metadata pass; only a real text fails."""
    transformer = folder.parents[1] / "sentiment-transformer"
    latest = transformer / (transformer / "latest").read_text().strip()
    shutil.copy(latest / "tokenizer.json", folder / "tokenizer.json")


# Versions that passed the old load steps (sha256, session, warm-up, check) and then answered
# every request with a 500: metadata lacking a key only requests read, or a companion the
# graph cannot take (issue 20, row 2). Each is refused at load with the reason.
ROUTE_BREAKERS = {
    "fraud without decision": ("fraud-scorer", mv.drop_metadata_key("decision"), "decision"),
    "fraud without threshold": ("fraud-scorer", _drop_threshold, r"decision\.threshold"),
    "generator without noise_dim": (
        "image-generator",
        mv.drop_metadata_key("noise_dim"),
        "noise_dim",
    ),
    "classifier without labels": ("image-classifier", mv.drop_metadata_key("labels"), "labels"),
    "sentiment without its accuracy": (
        "sentiment-transformer",
        mv.drop_metadata_key("headline_metrics"),
        "headline_metrics",
    ),
    "text without vocabulary": ("text-generator", mv.drop_metadata_key("vocabulary"), "vocabulary"),
    "rnn with another tokenizer": (
        "sentiment-rnn",
        _transformer_tokenizer,
        "a sample request failed on its routes",
    ),
}


@pytest.mark.parametrize("breaker", ROUTE_BREAKERS)
def test_a_version_that_cannot_answer_its_routes_is_refused_and_the_old_one_serves(
    breaker: str, add_version: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    name, alter, reason = ROUTE_BREAKERS[breaker]
    spec = registry.area_of(name).spec_by_name[name]
    served = ServedModel(spec, Settings.from_env(), in_training=lambda model: None)
    assert served.ready is not None
    old = served.ready.version
    failed_before = sample_value("dlserve_model_loads_total", model=name, outcome="failed")
    version = add_version(alter, name=name)
    with caplog.at_level(logging.ERROR, logger="service.served_model"):
        attempt = served.refresh()
    assert attempt is not None and attempt.outcome == "failed" and attempt.version == version
    assert attempt.reason is not None and re.search(reason, attempt.reason), attempt.reason
    assert served.ready is not None and served.ready.version == old and served.state == "ready"
    last_load = served.describe([{"route": "/x", "request_schema": {}}])["last_load"]
    assert last_load["outcome"] == "failed" and last_load["version"] == version
    after = sample_value("dlserve_model_loads_total", model=name, outcome="failed")
    assert after == failed_before + 1
    logged = [record.getMessage() for record in caplog.records]
    assert any(version in line and "NOT served" in line for line in logged), logged


# Store damages that used to be silent (issue 20, row 11): no log line, no last_load, no metric.
POINTER_DAMAGES = {
    "latest names a missing folder": ("gone0000version0", "no such version"),
    "empty latest pointer": ("", "names no version"),
}
YAML_DAMAGES = {"empty model.yaml": "", "garbage model.yaml": "{{{ [not: yaml"}


@pytest.fixture
def latest_pointer(fraud_model: dict) -> Iterator[Path]:
    """The fraud scorer's ``latest`` pointer, restored afterwards."""
    path = Path(os.environ["BENTOML_HOME"]) / "models" / NAME / "latest"
    text = path.read_text()
    yield path
    path.write_text(text)


def _refresh_fails_visibly(
    served: ServedModel, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``served`` refuses what the store now holds: a failed attempt with ``reason`` in
    ``last_load``, the failed-load counter and the log; the served version keeps serving."""
    assert served.ready is not None
    old = served.ready.version
    failed_before = sample_value("dlserve_model_loads_total", model=NAME, outcome="failed")
    with caplog.at_level(logging.ERROR, logger="service.served_model"):
        attempt = served.refresh()
    assert attempt is not None and attempt.outcome == "failed", attempt
    assert attempt.reason is not None and re.search(reason, attempt.reason), attempt.reason
    assert served.ready is not None and served.ready.version == old
    last_load = served.describe([{"route": "/x", "request_schema": {}}])["last_load"]
    assert last_load["outcome"] == "failed" and re.search(reason, last_load["reason"])
    after = sample_value("dlserve_model_loads_total", model=NAME, outcome="failed")
    assert after == failed_before + 1
    assert any("NOT served" in record.getMessage() for record in caplog.records)
    assert served.refresh() is None  # polling backs off, as for any failed version


@pytest.mark.parametrize("damage", POINTER_DAMAGES)
def test_a_latest_pointer_naming_no_stored_version_is_a_visible_failed_load(
    damage: str, latest_pointer: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = _served()
    pointer, reason = POINTER_DAMAGES[damage]
    latest_pointer.write_text(pointer)
    _refresh_fails_visibly(served, reason, caplog)
    assert latest_pointer.read_text() == pointer  # left as the operator wrote it


@pytest.mark.parametrize("damage", YAML_DAMAGES)
def test_a_version_with_a_broken_model_yaml_is_a_visible_failed_load(
    damage: str, add_version: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    served = _served()
    text = YAML_DAMAGES[damage]
    add_version(lambda folder: (folder / "model.yaml").write_text(text))
    _refresh_fails_visibly(served, r"model\.yaml\) is unreadable", caplog)
