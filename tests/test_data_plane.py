"""The data plane in-process, with no BentoML server nor request context: named-route and
tensor inference on the smoke-trained fraud scorer, and every refusal as a typed error that
names its status, its input and its retry hint."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from harness.payloads import transactions
from service import registry
from service.area import ReadyModel
from service.areas.fraud import Transaction, to_arrays
from service.batching import Arrays
from service.config import Settings
from service.errors import (
    InferenceError,
    ModelNotFoundError,
    ModelNotReadyError,
    RequestInputError,
)
from service.inference import CurrentPlane, DataPlane
from service.served_model import ServedModel
from service.traffic import Traffic

NAME = "fraud-scorer"
INPUTS = to_arrays([Transaction(**row) for row in transactions(3)])


@dataclass
class Decoded:
    inputs: Arrays
    seen_version: str


@pytest.fixture
def plane(fraud_model: dict, monkeypatch: pytest.MonkeyPatch) -> DataPlane:
    monkeypatch.setenv("DLSERVE_MODELS", "fraud")
    return DataPlane.load(Settings.from_env(), Traffic())


def _decode(ready: ReadyModel, max_rows: int) -> Decoded:
    assert max_rows == registry.area_of(NAME).spec_by_name[NAME].tensors.max_rows
    return Decoded(INPUTS, ready.version)


def test_named_and_tensor_inference_give_the_same_scores(plane: DataPlane) -> None:
    ready, named = asyncio.run(plane.predict(NAME, INPUTS))
    tensor_ready, decoded, tensor = asyncio.run(plane.infer_tensors(NAME, None, _decode))
    assert decoded is not None and decoded.seen_version == ready.version == tensor_ready.version
    assert named.keys() == tensor.keys()
    for output in named:
        np.testing.assert_array_equal(named[output], tensor[output])
    assert plane.is_ready()


def test_the_served_version_may_be_named_and_another_one_is_not_found(plane: DataPlane) -> None:
    version = plane.tensor_version(NAME, None).version
    assert plane.tensor_version(NAME, version).version == version
    with pytest.raises(ModelNotFoundError, match=f"it serves '{version}'") as raised:
        asyncio.run(plane.infer_tensors(NAME, "0" * 16, _decode))
    assert raised.value.status == 404


def test_models_that_are_not_here_are_not_found_by_name(plane: DataPlane) -> None:
    with pytest.raises(ModelNotFoundError, match="not enabled"):
        plane.tensor_model("image-classifier")  # a tensor model of a disabled area
    with pytest.raises(ModelNotFoundError, match=r"tensor models served here are \['fraud"):
        plane.tensor_model("no-such-model")
    with pytest.raises(ModelNotFoundError, match="not enabled"):
        asyncio.run(plane.predict("no-such-model", INPUTS))


def test_a_bad_tensor_is_a_400_that_names_the_input(plane: DataPlane) -> None:
    def bad(ready: ReadyModel, max_rows: int) -> Any:
        raise RequestInputError(["amount"], "must be finite", "not_finite")

    with pytest.raises(RequestInputError) as raised:
        asyncio.run(plane.infer_tensors(NAME, None, bad))
    assert (raised.value.status, raised.value.summary) == (400, "amount: must be finite")
    answer = raised.value.answer()
    assert answer.status_code == 400 and b'"loc":["amount"]' in answer.body


def test_a_model_without_a_version_refuses_before_decoding(
    plane: DataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLSERVE_PINNED_MODELS", f"{NAME}:nosuchversion00000")
    spec = plane.served[NAME].spec
    missing = ServedModel(spec, Settings.from_env(), in_training=lambda name: None)
    unready = DataPlane(plane.settings, {NAME: missing}, Traffic())
    decoded: list[str] = []

    def decode(ready: ReadyModel, max_rows: int) -> Decoded:
        decoded.append(ready.version)
        return Decoded(INPUTS, ready.version)

    with pytest.raises(ModelNotReadyError) as raised:
        asyncio.run(unready.infer_tensors(NAME, None, decode))
    error: InferenceError = raised.value
    assert (error.status, error.headers, decoded) == (503, {"Retry-After": "1"}, [])
    assert not unready.is_ready()


def test_a_draining_worker_is_not_ready(plane: DataPlane) -> None:
    plane.traffic.draining = True
    assert not plane.is_ready()


def test_the_current_plane_is_the_one_set_at_start_up(plane: DataPlane) -> None:
    current = CurrentPlane()
    with pytest.raises(RuntimeError, match="not loaded its models yet"):
        current()
    current.set(plane)
    assert current() is plane
