"""The fraud area's contract: the feature spec that training encodes and the route validates.

A :class:`FeatureSpec` names the label, the numeric model inputs (in model order), which of them
get ``log1p`` before standardising, the categorical columns with their fixed vocabularies, and
optionally the time and id columns. It round-trips through JSON (a user describes their own
CSV/Parquet file with one) and is stored in each fraud model's metadata, so the service can
refuse a model trained on another spec. ``FRAUD_SPEC`` describes the simulator's output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MAX_SHOWN = 5  # at most this many offending values are quoted in an error message


def _as_str_tuple(values: Sequence[str] | str, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a sequence of column names, not a single string")
    return tuple(str(value) for value in values)


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns of a table are the label, model inputs, time order and row id.

    ``numeric`` holds numeric and 0/1 boolean columns in model input order; ``log_scaled`` is the
    subset that is non-negative and heavy tailed (``log1p`` before standardising);
    ``categorical`` maps each categorical column to its allowed values in a fixed order (a value's
    position is its code). ``time_column`` orders the train/validation/test split; ``id_column``
    is carried along but never a feature.
    """

    label: str
    numeric: tuple[str, ...]
    log_scaled: tuple[str, ...] = ()
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    time_column: str | None = None
    id_column: str | None = None

    def __post_init__(self) -> None:
        numeric = _as_str_tuple(self.numeric, "numeric")
        log_scaled = _as_str_tuple(self.log_scaled, "log_scaled")
        categorical = {
            str(name): _as_str_tuple(values, f"categorical[{name!r}]")
            for name, values in dict(self.categorical).items()
        }
        object.__setattr__(self, "numeric", numeric)
        object.__setattr__(self, "log_scaled", log_scaled)
        object.__setattr__(self, "categorical", categorical)

        if not numeric and not categorical:
            raise ValueError("a FeatureSpec needs at least one numeric or categorical column")
        features = [*numeric, *categorical]
        duplicated = sorted({name for name in features if features.count(name) > 1})
        if duplicated:
            raise ValueError(f"columns listed more than once: {duplicated}")
        not_numeric = [name for name in log_scaled if name not in numeric]
        if not_numeric:
            raise ValueError(f"log_scaled columns must also be numeric: {not_numeric}")
        for name, values in categorical.items():
            if not values:
                raise ValueError(f"categorical column {name!r} has no allowed values")
            if len(set(values)) != len(values):
                raise ValueError(f"categorical column {name!r} lists a value more than once")
        special = {
            "label": self.label,
            "time_column": self.time_column,
            "id_column": self.id_column,
        }
        for role, name in special.items():
            if name is not None and name in features:
                raise ValueError(f"{role} {name!r} must not also be a feature column")

    # ----------------------------------------------------------------- derived views
    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Numeric columns then categorical columns, in model order."""
        return (*self.numeric, *self.categorical)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Every column :meth:`validate` requires: label, features, time and id columns."""
        extra = tuple(name for name in (self.time_column, self.id_column) if name is not None)
        return (self.label, *self.feature_columns, *extra)

    @property
    def log_mask(self) -> tuple[bool, ...]:
        """One flag per numeric column: True where the column is log-scaled."""
        return tuple(name in self.log_scaled for name in self.numeric)

    @property
    def category_sizes(self) -> tuple[int, ...]:
        """Vocabulary size of each categorical column, in order."""
        return tuple(len(values) for values in self.categorical.values())

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, not tuples) that :meth:`from_dict` turns back into the spec."""
        return {
            "label": self.label,
            "numeric": list(self.numeric),
            "log_scaled": list(self.log_scaled),
            "categorical": {name: list(values) for name, values in self.categorical.items()},
            "time_column": self.time_column,
            "id_column": self.id_column,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {"label", "numeric", "log_scaled", "categorical", "time_column", "id_column"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FeatureSpec keys: {unknown}")
        if "label" not in data:
            raise ValueError("FeatureSpec needs a 'label'")
        return cls(
            label=str(data["label"]),
            numeric=tuple(data.get("numeric", ())),
            log_scaled=tuple(data.get("log_scaled", ())),
            categorical={k: tuple(v) for k, v in dict(data.get("categorical", {})).items()},
            time_column=data.get("time_column"),
            id_column=data.get("id_column"),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> FeatureSpec:
        """Read a spec from a JSON file holding :meth:`to_dict` output."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` output to ``path`` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    # ----------------------------------------------------------------- validation
    def validate(self, df: pd.DataFrame) -> None:
        """Check ``df`` against the spec; raise ``ValueError`` naming the first bad column.

        Fails when a required column is missing, a numeric column is non-numeric or holds
        NaN/inf, a log-scaled column is negative, a categorical column holds a missing value or
        one outside its allowed list (the bad values are quoted), the label is not 0/1, or the
        time column holds missing values. Extra columns are ignored.
        """
        missing = [name for name in self.required_columns if name not in df.columns]
        if missing:
            raise ValueError(f"missing column(s) {missing}")

        for name in self.numeric:
            values = numeric_values(df, name)
            finite = np.isfinite(values)
            if not finite.all():
                bad = values[~finite][:MAX_SHOWN].tolist()
                raise ValueError(
                    f"numeric column {name!r} has {int((~finite).sum())} NaN/inf value(s), "
                    f"e.g. {bad}"
                )
            if name in self.log_scaled and (values < 0).any():
                raise ValueError(
                    f"log-scaled column {name!r} has negative values (min {values.min()})"
                )

        for name, allowed in self.categorical.items():
            column = df[name]
            unknown = column.isna().to_numpy() | ~column.isin(allowed).to_numpy()
            if unknown.any():
                bad = pd.unique(column[unknown])[:MAX_SHOWN].tolist()
                raise ValueError(
                    f"categorical column {name!r} has {int(unknown.sum())} value(s) outside its "
                    f"allowed list, e.g. {bad}"
                )

        label = numeric_values(df, self.label)
        if not np.isin(label, (0, 1)).all():
            bad = pd.unique(label[~np.isin(label, (0, 1))])[:MAX_SHOWN].tolist()
            raise ValueError(f"label column {self.label!r} must be 0/1, found {bad}")

        if self.time_column is not None and df[self.time_column].isna().any():
            raise ValueError(f"time column {self.time_column!r} has missing values")


def numeric_values(df: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float64 (booleans as 0/1); ``ValueError`` naming it if non-numeric."""
    column = df[name]
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        raise ValueError(f"column {name!r} must be numeric or boolean, got dtype {column.dtype}")
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "retail",
    "online_retail",
    "travel",
    "electronics",
    "entertainment",
    "pharmacy",
    "jewelry",
    "digital_goods",
    "atm",
)

FRAUD_SPEC = FeatureSpec(
    label="is_fraud",
    numeric=(
        "amount",
        "hour",
        "card_present",
        "distance_from_home_km",
        "txn_count_1h",
        "txn_count_24h",
        "avg_amount_30d",
        "new_device",
        "foreign_merchant",
        "account_age_days",
    ),
    log_scaled=(
        "amount",
        "distance_from_home_km",
        "txn_count_1h",
        "txn_count_24h",
        "avg_amount_30d",
        "account_age_days",
    ),
    categorical={"merchant_category": MERCHANT_CATEGORIES},
    time_column="timestamp",
    id_column="transaction_id",
)
"""Spec of :func:`training.fraud.simulator.simulate_transactions` output (features only: not
``customer_id`` nor ``fraud_pattern``, which is the true generating pattern, for analysis only)."""
