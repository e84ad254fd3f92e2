"""Fraud scoring route contract: the transaction schema, its arrays, and the response.

The schema is the default fraud model's feature spec (``training.fraud.features.FRAUD_SPEC``);
a stored model trained on another spec is refused at load by ``check_feature_spec``.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.batching import Arrays
from service.model_store import ModelUnavailableError
from service.served_model import ModelSpec
from training.fraud.features import FRAUD_SPEC

MAX_ROWS = 1000
MERCHANT_CATEGORIES = FRAUD_SPEC.categorical["merchant_category"]
MerchantCategory = Literal[MERCHANT_CATEGORIES]  # type: ignore[valid-type]


class Transaction(BaseModel):
    """One card transaction, with the range every field must lie in."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    amount: float = Field(ge=0, le=1_000_000, description="Amount in account currency.")
    merchant_category: MerchantCategory
    hour: int = Field(ge=0, le=23, description="Local hour of the transaction.")
    card_present: bool
    distance_from_home_km: float = Field(ge=0, le=20_040)
    txn_count_1h: int = Field(ge=0, le=10_000, description="Card's transactions in the last hour.")
    txn_count_24h: int = Field(ge=0, le=100_000, description="Card's transactions in the last day.")
    avg_amount_30d: float = Field(ge=0, le=1_000_000, description="Mean amount over 30 days.")
    new_device: bool
    foreign_merchant: bool
    account_age_days: int = Field(ge=0, le=36_500)

    @model_validator(mode="after")
    def _day_count_covers_hour_count(self) -> Transaction:
        if self.txn_count_24h < self.txn_count_1h:
            raise ValueError("txn_count_24h must be at least txn_count_1h")
        return self


Transactions = Annotated[list[Transaction], Field(min_length=1, max_length=MAX_ROWS)]


class ModelReference(BaseModel):
    name: str
    version: str


class FraudResult(BaseModel):
    fraud_probability: float = Field(description="P(fraud) from the feed-forward network.")
    anomaly_score: float = Field(description="Autoencoder reconstruction error (higher: rarer).")
    is_fraud: bool = Field(description="fraud_probability >= the model's stored threshold.")


class FraudScoreResponse(BaseModel):
    model: ModelReference
    results: list[FraudResult]


_numeric_values = attrgetter(*FRAUD_SPEC.numeric)
_category_code = {name: code for code, name in enumerate(MERCHANT_CATEGORIES)}


def to_arrays(transactions: list[Transaction]) -> Arrays:
    """Validated transactions -> the ONNX graph's ``numeric`` and ``categorical`` inputs."""
    numeric = np.array([_numeric_values(t) for t in transactions], dtype=np.float32)
    codes = [_category_code[t.merchant_category] for t in transactions]
    categorical = np.array(codes, dtype=np.int64).reshape(-1, 1)
    return {"numeric": numeric, "categorical": categorical}


def to_results(outputs: Arrays, threshold: float) -> list[dict[str, Any]]:
    """Graph outputs -> one result per row, in input order."""
    probability = outputs["fraud_probability"].tolist()
    anomaly = outputs["anomaly_score"].tolist()
    return [
        {"fraud_probability": p, "anomaly_score": a, "is_fraud": p >= threshold}
        for p, a in zip(probability, anomaly, strict=True)
    ]


def json_rows(frame: Any) -> list[dict[str, Any]]:
    """Rows of a DataFrame holding the route's columns, as the JSON a client sends."""
    rows = frame[list(Transaction.model_fields)].to_dict(orient="records")
    return [Transaction.model_validate(row).model_dump() for row in rows]


def check_feature_spec(metadata: dict[str, Any]) -> None:
    """Refuse a stored model whose feature spec differs from this route's schema."""
    stored = metadata["preprocessing"]["feature_spec"]
    expected = FRAUD_SPEC.to_dict()
    for key in ("numeric", "categorical"):
        if stored[key] != expected[key]:
            raise ModelUnavailableError(
                f"stored fraud model's {key} features {stored[key]} differ from the route's "
                f"{expected[key]}; serve it with a matching schema or retrain on the default spec"
            )


SPEC = ModelSpec(
    area="fraud",
    name="fraud-scorer",
    route="/v1/fraud/score",
    score_output="fraud_probability",
    request_schema=Transaction,
    check=check_feature_spec,
)
