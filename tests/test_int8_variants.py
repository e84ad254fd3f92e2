"""INT8 variants: smoke training registers gated variants as versions with their precision, the
gate refuses a variant that loses too much, and the service serves the precision
``DLSERVE_PRECISION`` chooses (a pin wins; an unknown precision stops the start). The text
generator's gate runs the cache graph itself over the report's validation windows, and its
INT8 variant decodes text in process and over ``/v1/completions``."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from core.features import FRAUD_SPEC
from core.model_store import ModelUnavailableError, read_stored_model
from core.precision import FP32, INT8, version_for_precision
from core.text_generation import CharVocabulary, TextGenerator, generate, session_call
from harness.local_server import LocalServer
from harness.payloads import transactions
from models.gpt import GPTConfig
from service import registry
from service.config import Settings, SettingsError
from service.served_model import ServedModel
from training.fraud.features import time_ordered_split
from training.fraud.simulator import simulate_transactions
from training.fraud.train import int8_plan, to_splits
from training.text import train as text_training
from training.text.data import load_text, split_text
from training.text.export import open_session
from training.variants import (
    ACCURACY,
    VAL_LOSS,
    Int8Plan,
    Variant,
    build_int8,
    gate,
    register_with_variants,
)

# Every model whose area makes an INT8 variant, and the report entry that lists it.
REPORTED = {
    "fraud-scorer": ("fraud-smoke", ()),
    "image-classifier": ("image-smoke", ()),
    "sentiment-rnn": ("sentiment-smoke", ("rnn",)),
    "sentiment-transformer": ("sentiment-smoke", ("transformer",)),
    "image-generator": ("gan-smoke", ()),
    "text-generator": ("text-smoke", ()),
}
# The smoke models whose INT8 variant passes its gate on the smoke data (the transformer's
# 40 test sentences make one flipped answer 2.5 points, so its gate may refuse it; the text
# generator's variant lost about 1e-4 nats of the 0.02 allowed).
PASSING = ("fraud-scorer", "image-classifier", "sentiment-rnn", "text-generator")
STORE = Path(os.environ["BENTOML_HOME"]) / "models"


def _report_entry(name: str) -> list[dict]:
    folder, keys = REPORTED[name]
    report = json.loads((Path(os.environ["DLSERVE_REPORTS"]) / folder / "metrics.json").read_text())
    for key in keys:
        report = report[key]
    return report["variants"]


@pytest.mark.parametrize("name", sorted(REPORTED))
def test_smoke_training_reports_each_variant_and_registers_only_those_that_passed(
    stored_models: dict[str, dict], name: str
) -> None:
    fp32 = stored_models[name]
    assert fp32["precision"] == FP32  # the store's latest is the FP32 graph, served by default
    (entry,) = _report_entry(name)
    assert entry["precision"] == INT8 and entry["method"] in ("dynamic", "static")
    passed = all(check["lost"] <= check["most_lost"] + 1e-9 for check in entry["gate"]["checks"])
    assert entry["gate"]["passed"] is passed
    if not passed:
        assert entry["registered"] is None and entry["not_registered"] == "failed its gate"
        return
    metadata, onnx_path = read_stored_model(f"{name}:{entry['registered']}")
    assert metadata["precision"] == INT8 and metadata["gate"]["passed"] is True
    assert metadata["variant_of"] == {"precision": FP32, "sha256": fp32["sha256"]}
    assert metadata["sha256"] != fp32["sha256"]
    assert version_for_precision(name, INT8) == entry["registered"]
    kinds = {node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    assert kinds & {"MatMulInteger", "ConvInteger", "DequantizeLinear"}, kinds


@pytest.mark.parametrize("name", PASSING)
def test_the_smoke_variants_pass_their_gate(stored_models: dict[str, dict], name: str) -> None:
    (entry,) = _report_entry(name)
    assert entry["gate"]["passed"] and entry["registered"], entry


def test_the_gate_counts_the_loss_in_the_metric_s_direction() -> None:
    assert gate({"accuracy": 0.9}, {"accuracy": 0.897}, (ACCURACY,))["passed"]
    refused = gate({"accuracy": 0.9}, {"accuracy": 0.896}, (ACCURACY,))
    assert not refused["passed"] and refused["checks"][0]["lost"] == pytest.approx(0.004)
    assert gate({"val_loss": 1.5}, {"val_loss": 1.45}, (VAL_LOSS,))["passed"]  # lower is better
    assert not gate({"val_loss": 1.5}, {"val_loss": 1.53}, (VAL_LOSS,))["passed"]


def _damaging(fp32: Path, int8: Path) -> None:
    """A "quantizer" that loses too much: every weight matrix's sign flipped."""
    model = onnx.load(str(fp32))
    for index, tensor in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.ndim == 2 and values.dtype == np.float32:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(-values, tensor.name))
    onnx.save(model, str(int8))


def test_a_variant_that_loses_too_much_is_refused_and_never_registered(
    fraud_model: dict, tmp_path: Path
) -> None:
    frames = list(time_ordered_split(simulate_transactions(6000, seed=3), FRAUD_SPEC))
    test = to_splits(FRAUD_SPEC, frames)[1][2]
    _, fp32 = read_stored_model(f"{fraud_model['name']}:{fraud_model['version']}")
    plan = replace(int8_plan(test), quantize=_damaging)
    variant = build_int8(fp32, plan, tmp_path)
    (check,) = variant.gate["checks"]
    assert not variant.passed and check["lost"] > check["most_lost"], check
    _assert_registered_without(variant, fp32, "fraud-scorer-gate-test")


def _assert_registered_without(variant: Variant, fp32: Path, name: str) -> None:
    """Registering ``fp32`` with a ``variant`` that failed its gate stores the FP32 graph only,
    under ``name`` (a store name of its own: the served model is untouched)."""
    try:
        stored, report = register_with_variants(
            name, fp32, {"task": "t", "inputs": [], "outputs": []}, [variant], True
        )
        assert report[0]["registered"] is None
        assert report[0]["not_registered"] == "failed its gate"
        versions = [path.name for path in (STORE / name).iterdir() if path.is_dir()]
        assert versions == [stored["version"]]
        with pytest.raises(ModelUnavailableError, match="no int8 variant of version"):
            version_for_precision(name, INT8)
    finally:
        shutil.rmtree(STORE / name, ignore_errors=True)


def _int8_version(name: str) -> str:
    (entry,) = _report_entry(name)
    return entry["registered"]


def test_the_service_serves_the_chosen_precision_and_a_pin_wins(
    stored_models: dict[str, dict],
) -> None:
    name = "fraud-scorer"
    spec = registry.area_of(name).spec_by_name[name]
    chosen = Settings(precision=("fraud-scorer=int8",))
    served = ServedModel(spec, chosen, in_training=lambda _: None)
    assert served.ready is not None and served.ready.version == _int8_version(name)
    described = served.describe([{"route": "/x", "request_schema": {}}])
    assert described["precision"] == INT8 and described["precision_chosen"] == INT8
    pin = f"{name}:{stored_models[name]['version']}"
    pinned = chosen.model_copy(update={"pinned_models": (pin,)})
    served = ServedModel(spec, pinned, in_training=lambda _: None)
    assert served.ready is not None and served.ready.version == stored_models[name]["version"]
    assert served.describe([{"route": "/x", "request_schema": {}}])["precision"] == FP32
    default = ServedModel(spec, Settings(), in_training=lambda _: None)
    assert default.ready is not None and default.ready.metadata["precision"] == FP32


def test_precision_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLSERVE_PRECISION", "int8, sentiment-rnn=FP32")
    settings = registry.settings_from_env()
    assert settings.precision_for("fraud-scorer") == INT8
    assert settings.precision_for("sentiment-rnn") == FP32
    for bad, says in (
        ("fraud-scorer=int4", "unknown precision 'int4'"),
        ("fp16", "unknown precision 'fp16'"),
        ("int8,fp32", "more than one precision for every model"),
        ("no-such-model=int8", "names no served model"),
    ):
        monkeypatch.setenv("DLSERVE_PRECISION", bad)
        with pytest.raises(SettingsError, match="DLSERVE_PRECISION") as raised:
            registry.settings_from_env()
        assert says in str(raised.value)


def test_http_serves_int8_and_says_so(stored_models: dict[str, dict]) -> None:
    env = {"DLSERVE_MODELS": "fraud", "DLSERVE_PRECISION": "fraud-scorer=int8"}
    with LocalServer(env) as server:
        server.wait("/readyz")
        (listed,) = httpx.get(server.url + "/v1/models").json()["models"]
        assert listed["name"] == "fraud-scorer" and listed["precision"] == INT8
        version = _int8_version("fraud-scorer")
        assert listed["version"] == version
        answer = httpx.post(
            server.url + "/v1/fraud/score", json={"transactions": transactions(2)}
        ).json()
        assert answer["model"] == {"name": "fraud-scorer", "version": version}
        served = {
            (sample.labels["model"], sample.labels["version"], sample.labels["precision"])
            for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)
            if family.name == "dlserve_model_precision"
            for sample in family.samples
            if sample.value == 1
        }
        assert served == {("fraud-scorer", version, INT8)}


def test_an_unknown_precision_stops_the_start(stored_models: dict[str, dict]) -> None:
    with LocalServer({"DLSERVE_MODELS": "fraud", "DLSERVE_PRECISION": "int4"}) as server:
        with pytest.raises(RuntimeError, match="server exited early") as raised:
            server.wait()
        assert "DLSERVE_PRECISION" in str(raised.value) and "int4" in str(raised.value)


def _stored(name: str, version: str, created: str, **metadata: object) -> None:
    folder = STORE / name / version
    folder.mkdir(parents=True)
    required = {"task": "t", "onnx_file": "model.onnx", "inputs": [], "outputs": []}
    full = {**required, "name": name, "version": version, "created_at": created, **metadata}
    (folder / "metadata.json").write_text(json.dumps(full))


def test_a_variant_serves_only_with_the_latest_fp32_graph_and_a_passed_gate() -> None:
    name = "precision-choice-test"
    passed, failed = {"passed": True, "checks": []}, {"passed": False, "checks": []}
    try:
        _stored(name, "old8", "1", sha256="a", precision=INT8, variant_of={"sha256": "old"},
                gate=passed)  # fmt: skip
        _stored(name, "fp32", "2", sha256="new")
        (STORE / name / "latest").write_text("fp32")
        assert version_for_precision(name, FP32) == "fp32"
        with pytest.raises(ModelUnavailableError, match="no int8 variant of version fp32"):
            version_for_precision(name, INT8)  # old8 was made from an older FP32 graph
        _stored(name, "new8", "3", sha256="b", precision=INT8, variant_of={"sha256": "new"},
                gate=passed)  # fmt: skip
        _stored(name, "bad8", "4", sha256="c", precision=INT8, variant_of={"sha256": "new"},
                gate=failed)  # fmt: skip
        assert version_for_precision(name, INT8) == "new8"
        (STORE / name / "latest").write_text("new8")  # the FP32 version deleted
        with pytest.raises(ModelUnavailableError, match="is an int8 variant"):
            version_for_precision(name, FP32)
    finally:
        shutil.rmtree(STORE / name, ignore_errors=True)


# The text generator: the gate runs the cache graph over the report's validation windows.
TEXT = "text-generator"


@pytest.fixture(scope="module")
def text_validation() -> np.ndarray:
    """The held-out ids the smoke run scored (same text, same split, same vocabulary)."""
    return split_text(load_text()).validation


def _too_coarse(fp32: Path, int8: Path) -> None:
    """A "quantizer" that loses too much: every weight matrix rounded to a step of 0.5, far
    wider than the weights (almost all become 0). ``_damaging``'s sign flips would change
    nothing here: with no biases, the flipped embedding, projections and tied output layer
    cancel out."""
    model = onnx.load(str(fp32))
    for index, tensor in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.ndim == 2 and values.dtype == np.float32:
            coarse = (np.round(values / 0.5) * 0.5).astype(np.float32)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(coarse, tensor.name))
    onnx.save(model, str(int8))


def _text_config(metadata: dict) -> GPTConfig:
    heads, head_dim = metadata["heads"], metadata["head_dim"]
    return GPTConfig(
        vocab_size=len(metadata["vocabulary"]),
        context_length=metadata["context_length"],
        layers=metadata["layers"],
        heads=heads,
        width=heads * head_dim,
    )


def _text_plan(metadata: dict, validation: np.ndarray) -> Int8Plan:
    windows = text_training.PRESETS["smoke"].final_eval_windows
    return text_training.int8_plan(_text_config(metadata), validation, windows)


def test_the_text_gate_scores_the_graph_on_the_report_s_validation_windows(
    stored_models: dict[str, dict], text_validation: np.ndarray
) -> None:
    fp32 = stored_models[TEXT]
    report = json.loads(
        (Path(os.environ["DLSERVE_REPORTS"]) / "text-smoke" / "metrics.json").read_text()
    )
    (check,) = report["variants"][0]["gate"]["checks"]
    assert check["metric"] == "val_loss" and check["most_lost"] == VAL_LOSS.most_lost
    # The FP32 graph's figure is the report's (PyTorch's) val_loss: the same windows, the
    # same loss, now through ONNX Runtime with the cache inputs empty.
    assert check["fp32"] == pytest.approx(report["val_loss"], abs=1e-4)
    assert report["val_loss"] == fp32["metrics"]["val_loss"]
    _, fp32_path = read_stored_model(f"{TEXT}:{fp32['version']}")
    plan = _text_plan(fp32, text_validation)
    assert plan.method == "dynamic" and plan.tolerances == (VAL_LOSS,)
    assert plan.evaluate(fp32_path)["val_loss"] == pytest.approx(check["fp32"], abs=1e-6)
    _, int8_path = read_stored_model(f"{TEXT}:{_int8_version(TEXT)}")
    assert plan.evaluate(int8_path)["val_loss"] == pytest.approx(check["variant"], abs=1e-6)
    assert check["variant"] != check["fp32"]  # a different graph, scored apart


def test_a_text_variant_that_loses_too_much_is_refused_and_never_registered(
    stored_models: dict[str, dict], text_validation: np.ndarray, tmp_path: Path
) -> None:
    fp32 = stored_models[TEXT]
    _, fp32_path = read_stored_model(f"{TEXT}:{fp32['version']}")
    plan = replace(_text_plan(fp32, text_validation), quantize=_too_coarse)
    variant = build_int8(fp32_path, plan, tmp_path)
    (check,) = variant.gate["checks"]
    assert not variant.passed and check["lost"] > VAL_LOSS.most_lost, check
    _assert_registered_without(variant, fp32_path, "text-generator-gate-test")


def _greedy(generator: TextGenerator, vocabulary: CharVocabulary, prompt: str, new: int) -> str:
    return vocabulary.decode(generate(generator, vocabulary.encode(prompt), new))


def test_the_text_generator_s_loader_serves_int8_and_decodes_with_it(
    stored_models: dict[str, dict],
) -> None:
    spec = registry.area_of(TEXT).spec_by_name[TEXT]
    served = ServedModel(spec, Settings(precision=(f"{TEXT}=int8",)), in_training=lambda _: None)
    ready = served.ready
    assert ready is not None and ready.version == _int8_version(TEXT)
    assert ready.metadata["precision"] == INT8
    assert ready.metadata["variant_of"]["sha256"] == stored_models[TEXT]["sha256"]
    companion = ready.companion  # the decoder the completions route steps
    ids = companion.vocabulary.encode("ROMEO:\nWhat light")
    served_logits, _ = companion.generator.prefill(ids, every_position=True)
    _, int8_path = read_stored_model(f"{TEXT}:{ready.version}")
    _, fp32_path = read_stored_model(f"{TEXT}:{stored_models[TEXT]['version']}")
    int8 = TextGenerator(session_call(open_session(int8_path)), ready.metadata)
    fp32 = TextGenerator(session_call(open_session(fp32_path)), stored_models[TEXT])
    int8_logits, _ = int8.prefill(ids, every_position=True)
    fp32_logits, _ = fp32.prefill(ids, every_position=True)
    np.testing.assert_allclose(served_logits, int8_logits, rtol=0, atol=1e-6)
    gap = float(np.max(np.abs(served_logits - fp32_logits)))
    assert 0 < gap < 0.05, gap  # the INT8 graph, not the FP32 one, and close to it
    text = _greedy(companion.generator, companion.vocabulary, "ROMEO:\n", 40)
    assert len(text) == 40 and set(text) <= set(ready.metadata["vocabulary"])
    assert text == _greedy(int8, companion.vocabulary, "ROMEO:\n", 40)


def test_completions_at_int8_say_so_and_decode_with_the_variant(
    stored_models: dict[str, dict],
) -> None:
    version = _int8_version(TEXT)
    env = {"DLSERVE_MODELS": "text", "DLSERVE_PRECISION": f"{TEXT}=int8"}
    with LocalServer(env) as server:
        server.wait("/readyz")
        (listed,) = httpx.get(server.url + "/v1/models").json()["models"]
        assert (listed["name"], listed["version"], listed["precision"]) == (TEXT, version, INT8)
        prompt = "ROMEO:\n"
        answer = httpx.post(
            server.url + "/v1/completions",
            json={"model": TEXT, "prompt": prompt, "max_tokens": 12, "temperature": 0},
        ).json()
    metadata, int8_path = read_stored_model(f"{TEXT}:{version}")
    int8 = TextGenerator(session_call(open_session(int8_path)), metadata)
    assert answer["system_fingerprint"] == f"{TEXT}:{version}"
    assert answer["choices"][0]["text"] == _greedy(
        int8, CharVocabulary.from_metadata(metadata), prompt, 12
    )
