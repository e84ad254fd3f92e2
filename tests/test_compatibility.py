"""Each model's contract: a stored model that does not fit its area's routes is refused with the
reason, and the service then reports it unavailable instead of serving it."""

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
from service.model_contract import ModelMetadata, validate_metadata
from service.served_model import ModelNotReadyError, ServedModel


def _changed(metadata: dict, **changes: object) -> dict:
    changed = copy.deepcopy(metadata)
    changed.update(changes)
    return changed


def test_every_served_model_has_a_contract_and_a_rehearsal(stored_models: dict) -> None:
    for spec in registry.model_specs():
        assert spec.contract is not ModelMetadata and spec.rehearse is not None, spec.name
        validate_metadata(
            spec.contract, stored_models[spec.name], spec.name
        )  # the smoke models fit


def test_fraud_refuses_another_feature_spec(fraud_model: dict) -> None:
    spec = copy.deepcopy(fraud_model["preprocessing"]["feature_spec"])
    spec["numeric"] = spec["numeric"][:-1]
    changed = _changed(fraud_model, preprocessing={"feature_spec": spec})
    with pytest.raises(ModelUnavailableError, match="numeric features"):
        validate_metadata(fraud.FraudMetadata, changed, "fraud-scorer")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": [{"name": "images", "dtype": "float32", "shape": ["batch", 28, 28]}]}, "takes"),
        ({"labels": ["a", "b"]}, "labels: List should have at least 10 items"),
    ],
)
def test_image_refuses_other_inputs_or_too_few_labels(
    image_model: dict, change: dict, message: str
) -> None:
    with pytest.raises(ModelUnavailableError, match=message):
        validate_metadata(images.ClassifierMetadata, _changed(image_model, **change), "image")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": [{"name": "text", "dtype": "int64", "shape": ["batch"]}]}, "not \\[input_ids"),
        ({"labels": ["bad", "good"]}, "has labels"),
    ],
)
def test_sentiment_refuses_other_inputs_or_labels(
    sentiment_models: dict, change: dict, message: str
) -> None:
    with pytest.raises(ModelUnavailableError, match=message):
        validate_metadata(
            sentiment.SentimentMetadata, _changed(sentiment_models["rnn"], **change), "rnn"
        )


def test_sentiment_refuses_a_model_without_its_tokenizer(
    sentiment_models: dict, tmp_path: Path
) -> None:
    metadata = sentiment_models["rnn"]
    stored = load_model(f"{metadata['name']}:{metadata['version']}", "cpu")
    elsewhere = LoadedModel(stored.metadata, stored.session, stored.provider, tmp_path)
    with pytest.raises(ModelUnavailableError, match=r"tokenizer\.json"):
        sentiment.stored_encoder(elsewhere)


def test_a_model_failing_its_contract_is_unavailable_with_the_reason(fraud_model: dict) -> None:
    class Refusing(ModelMetadata):
        route_key: str  # a key no stored model has

    served = ServedModel(ModelSpec("fraud-scorer", contract=Refusing), Settings.from_env())
    assert served.ready is None and served.error is not None
    assert "does not fit the routes' contract (Refusing): route_key: Field required" in served.error
    entry = served.describe([{"route": "/x", "request_schema": {}}])
    assert entry["status"] == "unavailable" and entry["reason"] == served.error
    with pytest.raises(ModelNotReadyError, match="route_key"):
        asyncio.run(served.predict({}))


def test_a_model_failing_its_rehearsal_is_unavailable_with_the_reason(fraud_model: dict) -> None:
    def rehearse(ready: object) -> None:
        raise KeyError("decision")

    spec = ModelSpec("fraud-scorer", contract=fraud.FraudMetadata, rehearse=rehearse)
    served = ServedModel(spec, Settings.from_env())
    assert served.ready is None and served.error is not None
    assert "a sample request failed on its routes (KeyError: 'decision')" in served.error
