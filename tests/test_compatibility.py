"""Each model's compatibility check: a stored model that does not fit its area's routes is
refused with the reason, and the service then reports it unavailable instead of serving it."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from core.model_store import LoadedModel, ModelUnavailableError, load_model
from service import registry
from service.area import ModelSpec
from service.areas import fraud, images, sentiment
from service.config import Settings
from service.served_model import ModelNotReadyError, ServedModel


def _changed(metadata: dict, **changes: object) -> dict:
    changed = copy.deepcopy(metadata)
    changed.update(changes)
    return changed


def test_every_served_model_has_a_check(stored_models: dict) -> None:
    for spec in registry.model_specs(["fraud", "image", "sentiment"]):
        assert spec.check is not None, spec.name
        spec.check(stored_models[spec.name])  # the smoke models fit


def test_fraud_refuses_another_feature_spec(fraud_model: dict) -> None:
    spec = copy.deepcopy(fraud_model["preprocessing"]["feature_spec"])
    spec["numeric"] = spec["numeric"][:-1]
    changed = _changed(fraud_model, preprocessing={"feature_spec": spec})
    with pytest.raises(ModelUnavailableError, match="numeric features"):
        fraud.check_feature_spec(changed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": [{"name": "images", "dtype": "float32", "shape": ["batch", 28, 28]}]}, "takes"),
        ({"labels": ["a", "b"]}, "at least 10 labels"),
    ],
)
def test_image_refuses_other_inputs_or_too_few_labels(
    image_model: dict, change: dict, message: str
) -> None:
    with pytest.raises(ModelUnavailableError, match=message):
        images.check_input(_changed(image_model, **change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": [{"name": "text", "dtype": "str", "shape": ["batch"]}]}, "not \\[input_ids"),
        ({"labels": ["bad", "good"]}, "has labels"),
    ],
)
def test_sentiment_refuses_other_inputs_or_labels(
    sentiment_models: dict, change: dict, message: str
) -> None:
    with pytest.raises(ModelUnavailableError, match=message):
        sentiment.check_text_model(_changed(sentiment_models["rnn"], **change))


def test_sentiment_refuses_a_model_without_its_tokenizer(
    sentiment_models: dict, tmp_path: Path
) -> None:
    metadata = sentiment_models["rnn"]
    stored = load_model(f"{metadata['name']}:{metadata['version']}", "cpu")
    elsewhere = LoadedModel(stored.metadata, stored.session, stored.provider, tmp_path)
    with pytest.raises(ModelUnavailableError, match=r"tokenizer\.json"):
        sentiment.stored_encoder(elsewhere)


def test_a_model_failing_its_check_is_unavailable_with_the_reason(fraud_model: dict) -> None:
    def refuse(metadata: dict) -> None:
        raise ModelUnavailableError(f"{metadata['name']} does not fit this route")

    served = ServedModel(ModelSpec("fraud-scorer", check=refuse), Settings.from_env())
    assert served.ready is None and served.error == "fraud-scorer does not fit this route"
    entry = served.describe([{"route": "/x", "request_schema": {}}])
    assert entry["status"] == "unavailable" and entry["reason"] == served.error
    with pytest.raises(ModelNotReadyError, match="does not fit"):
        asyncio.run(served.predict({}))
