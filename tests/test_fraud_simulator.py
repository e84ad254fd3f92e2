"""Tests of the simulated fraud data, the feature spec, encoding, loading and the time split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.features import FRAUD_SPEC, MERCHANT_CATEGORIES, FeatureSpec
from training.fraud.features import encode, load_table, time_ordered_split
from training.fraud.simulator import FRAUD_PATTERNS, simulate_transactions

N_ROWS = 40_000


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate_transactions(N_ROWS, fraud_rate=0.02, seed=7)


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    first = simulate_transactions(5_000, seed=3)
    pd.testing.assert_frame_equal(first, simulate_transactions(5_000, seed=3))
    other = simulate_transactions(5_000, seed=4)
    assert not first["amount"].equals(other["amount"])
    assert not first["timestamp"].equals(other["timestamp"])


def test_columns_and_dtypes(frame: pd.DataFrame) -> None:
    expected = {
        "transaction_id",
        "timestamp",
        "customer_id",
        *FRAUD_SPEC.numeric,
        *FRAUD_SPEC.categorical,
        "is_fraud",
        "fraud_pattern",
    }
    assert set(frame.columns) == expected
    assert len(frame) == N_ROWS
    integer_columns = [
        "transaction_id",
        "customer_id",
        "hour",
        "card_present",
        "txn_count_1h",
        "txn_count_24h",
        "new_device",
        "foreign_merchant",
        "account_age_days",
        "is_fraud",
    ]
    for column in integer_columns:
        assert pd.api.types.is_integer_dtype(frame[column]), column
    for column in ["timestamp", "amount", "distance_from_home_km", "avg_amount_30d"]:
        assert pd.api.types.is_float_dtype(frame[column]), column
    assert pd.api.types.is_string_dtype(frame["merchant_category"])
    assert pd.api.types.is_string_dtype(frame["fraud_pattern"])
    FRAUD_SPEC.validate(frame)


def test_value_ranges(frame: pd.DataFrame) -> None:
    assert (frame["amount"] > 0).all()
    assert np.allclose(frame["amount"], frame["amount"].round(2))
    assert frame["hour"].between(0, 23).all()
    assert frame["hour"].nunique() == 24
    for column in ["card_present", "new_device", "foreign_merchant", "is_fraud"]:
        assert set(frame[column].unique()) == {0, 1}, column
    assert (frame["distance_from_home_km"] >= 0).all()
    assert (frame["txn_count_1h"] >= 0).all()
    assert (frame["txn_count_24h"] >= frame["txn_count_1h"]).all()
    assert (frame["txn_count_1h"] > 0).any()
    assert (frame["avg_amount_30d"] > 0).all()
    assert (frame["account_age_days"] >= 0).all()
    assert set(frame["merchant_category"]) == set(MERCHANT_CATEGORIES)
    assert set(frame["fraud_pattern"]) <= set(FRAUD_PATTERNS)
    # hour is the hour of the timestamp; the period is about 90 days
    assert (frame["hour"] == (frame["timestamp"] % 86_400) // 3_600).all()
    assert frame["timestamp"].min() >= 0
    assert 85 * 86_400 < frame["timestamp"].max() < 91 * 86_400


def test_time_order_and_ids(frame: pd.DataFrame) -> None:
    assert frame["timestamp"].is_monotonic_increasing
    assert (frame["transaction_id"].to_numpy() == np.arange(len(frame))).all()


def test_fraud_rate_near_target() -> None:
    for rate in (0.01, 0.03):
        data = simulate_transactions(50_000, fraud_rate=rate, seed=11)
        true_fraud = (data["fraud_pattern"] != "none").mean()
        assert true_fraud == pytest.approx(rate, abs=1e-4)
        # noisy labels: 5% of fraud unreported, 0.05% of legitimate rows disputed
        assert data["is_fraud"].mean() == pytest.approx(rate, rel=0.2)


def test_label_noise_both_ways(frame: pd.DataFrame) -> None:
    fraud = frame["fraud_pattern"] != "none"
    unreported = (frame.loc[fraud, "is_fraud"] == 0).mean()
    disputed = (frame.loc[~fraud, "is_fraud"] == 1).sum()
    assert 0.01 < unreported < 0.12
    assert disputed >= 1
    assert (frame.loc[~fraud, "is_fraud"] == 1).mean() < 0.002


def test_every_pattern_present_with_its_signature(frame: pd.DataFrame) -> None:
    by_pattern = frame.groupby("fraud_pattern")
    counts = by_pattern.size()
    assert set(counts.index) == set(FRAUD_PATTERNS)
    fraud_total = counts.drop("none").sum()
    assert counts["mimic"] / fraud_total == pytest.approx(0.15, abs=0.02)

    legit = frame[frame["fraud_pattern"] == "none"]
    testing = frame[frame["fraud_pattern"] == "card_testing"]
    takeover = frame[frame["fraud_pattern"] == "account_takeover"]
    foreign = frame[frame["fraud_pattern"] == "high_value_foreign"]
    mimic = frame[frame["fraud_pattern"] == "mimic"]
    assert testing["amount"].median() < 10 < legit["amount"].median()
    assert (testing["card_present"] == 0).all()
    assert testing["txn_count_1h"].mean() > 3 * legit["txn_count_1h"].mean()
    assert takeover["new_device"].mean() > 0.6 > 0.1 > legit["new_device"].mean()
    ratio = takeover["amount"] / takeover["avg_amount_30d"]
    assert ratio.median() > 2.5
    assert foreign["foreign_merchant"].mean() > 0.7
    assert foreign["amount"].median() > 5 * legit["amount"].median()
    # mimic fraud looks like legitimate traffic
    assert 0.6 < mimic["amount"].median() / legit["amount"].median() < 1.7
    for column in ["card_present", "foreign_merchant", "new_device"]:
        assert abs(mimic[column].mean() - legit[column].mean()) < 0.1, column


def test_legitimate_rows_overlap_fraud_signals(frame: pd.DataFrame) -> None:
    legit = frame[frame["fraud_pattern"] == "none"]
    assert ((legit["new_device"] == 1) & (legit["foreign_merchant"] == 1)).sum() > 0
    assert legit["new_device"].mean() > 0.01
    assert legit["foreign_merchant"].mean() > 0.02
    assert (legit["distance_from_home_km"] > 1_000).mean() > 0.01
    assert (legit["txn_count_1h"] >= 3).sum() > 100
    assert ((legit["amount"] < 5) & (legit["card_present"] == 0)).sum() > 100
    assert (legit["amount"] > 500).sum() > 50
    assert (legit["account_age_days"] < 90).sum() > 100
    assert ((legit["hour"] <= 2) | (legit["hour"] >= 23)).sum() > 100


def test_time_ordered_split(frame: pd.DataFrame) -> None:
    shuffled = frame.sample(frac=1.0, random_state=0)
    train, validation, test = time_ordered_split(shuffled, FRAUD_SPEC)
    assert (len(train), len(validation), len(test)) == (28_000, 6_000, 6_000)
    assert train["timestamp"].max() <= validation["timestamp"].min()
    assert validation["timestamp"].max() <= test["timestamp"].min()
    ids = [set(part["transaction_id"]) for part in (train, validation, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(frame["transaction_id"])
    for part in (train, validation, test):
        assert part["timestamp"].is_monotonic_increasing
        assert list(part.index) == list(range(len(part)))

    small = time_ordered_split(frame.head(1_000), FRAUD_SPEC, fractions=(0.5, 0.3, 0.2))
    assert [len(part) for part in small] == [500, 300, 200]
    with pytest.raises(ValueError, match="sum to 1"):
        time_ordered_split(frame, FRAUD_SPEC, fractions=(0.5, 0.3, 0.3))


def test_split_keeps_file_order_without_time_column(frame: pd.DataFrame) -> None:
    spec = FeatureSpec.from_dict({**FRAUD_SPEC.to_dict(), "time_column": None})
    reversed_frame = frame.iloc[::-1]
    train, _, test = time_ordered_split(reversed_frame, spec)
    assert train["transaction_id"].iloc[0] == N_ROWS - 1
    assert test["transaction_id"].iloc[-1] == 0


def test_encode_shapes_dtypes_and_codes(frame: pd.DataFrame) -> None:
    numeric, categorical = encode(frame, FRAUD_SPEC)
    assert numeric.dtype == np.float32
    assert numeric.shape == (N_ROWS, len(FRAUD_SPEC.numeric))
    assert categorical.dtype == np.int64
    assert categorical.shape == (N_ROWS, 1)
    amount = FRAUD_SPEC.numeric.index("amount")
    np.testing.assert_allclose(numeric[:, amount], frame["amount"], rtol=1e-6)  # not scaled
    names = np.asarray(MERCHANT_CATEGORIES)[categorical[:, 0]]
    assert (names == frame["merchant_category"].to_numpy()).all()
    assert categorical.min() == 0 and categorical.max() == len(MERCHANT_CATEGORIES) - 1
    assert MERCHANT_CATEGORIES.index("atm") == 11
    atm_rows = frame["merchant_category"].to_numpy() == "atm"
    assert (categorical[atm_rows, 0] == 11).all()

    flags = frame.head(3).assign(card_present=[True, False, True])
    assert encode(flags, FRAUD_SPEC)[0][:, 2].tolist() == [1.0, 0.0, 1.0]


def test_encode_rejects_unknown_category(frame: pd.DataFrame) -> None:
    bad = frame.head(10).copy()
    bad.loc[3, "merchant_category"] = "casino"
    with pytest.raises(ValueError, match=r"merchant_category.*casino"):
        encode(bad, FRAUD_SPEC)


def test_fraud_spec_contents() -> None:
    assert FRAUD_SPEC.label == "is_fraud"
    assert FRAUD_SPEC.time_column == "timestamp"
    assert FRAUD_SPEC.id_column == "transaction_id"
    assert FRAUD_SPEC.numeric[:3] == ("amount", "hour", "card_present")
    assert len(FRAUD_SPEC.numeric) == 10
    assert set(FRAUD_SPEC.log_scaled) <= set(FRAUD_SPEC.numeric)
    assert FRAUD_SPEC.log_mask == (True, False, False, True, True, True, True, False, False, True)
    assert FRAUD_SPEC.category_sizes == (12,)
    assert FRAUD_SPEC.categorical["merchant_category"][0] == "grocery"


def _set_row(df: pd.DataFrame, column: str, value: object) -> pd.DataFrame:
    out = df.copy()
    out[column] = out[column].astype(object if isinstance(value, str) else float)
    out.loc[out.index[5], column] = value
    return out


BAD_FRAMES = {
    "missing feature": (lambda df: df.drop(columns=["distance_from_home_km"]), "distance_from"),
    "missing label": (lambda df: df.drop(columns=["is_fraud"]), "is_fraud"),
    "missing time": (lambda df: df.drop(columns=["timestamp"]), "timestamp"),
    "nan": (lambda df: _set_row(df, "amount", np.nan), "amount"),
    "inf": (lambda df: _set_row(df, "avg_amount_30d", np.inf), "avg_amount_30d"),
    "negative log-scaled": (lambda df: _set_row(df, "txn_count_1h", -1.0), "txn_count_1h"),
    "unknown category": (
        lambda df: _set_row(df, "merchant_category", "casino"),
        r"merchant_category.*casino",
    ),
    "label not 0/1": (lambda df: df.assign(is_fraud=df["is_fraud"] * 2 + 1), "is_fraud"),
    "text in numeric": (lambda df: df.assign(hour=df["hour"].astype(str)), "hour"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_validate_names_the_bad_column(frame: pd.DataFrame, case: str) -> None:
    mutate, pattern = BAD_FRAMES[case]
    with pytest.raises(ValueError, match=pattern):
        FRAUD_SPEC.validate(mutate(frame.head(50)))


def test_spec_dict_and_json_round_trip(tmp_path: Path) -> None:
    assert FeatureSpec.from_dict(FRAUD_SPEC.to_dict()) == FRAUD_SPEC
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(FRAUD_SPEC.to_dict()), encoding="utf-8")
    assert FeatureSpec.from_json(path) == FRAUD_SPEC
    FRAUD_SPEC.to_json(tmp_path / "again.json")
    assert FeatureSpec.from_json(tmp_path / "again.json") == FRAUD_SPEC
    with pytest.raises(ValueError, match="unknown"):
        FeatureSpec.from_dict({**FRAUD_SPEC.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="log_scaled"):
        FeatureSpec(label="y", numeric=("a",), log_scaled=("b",))


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_load_table_round_trip(frame: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    original = frame.head(2_000)
    path = tmp_path / f"transactions{suffix}"
    if suffix == ".parquet":
        original.to_parquet(path, index=False)
    else:
        original.to_csv(path, index=False)
    loaded = load_table(path, FRAUD_SPEC)
    assert list(loaded.columns) == list(original.columns)
    for left, right in zip(encode(loaded, FRAUD_SPEC), encode(original, FRAUD_SPEC), strict=True):
        np.testing.assert_array_equal(left, right)
    np.testing.assert_array_equal(loaded["is_fraud"], original["is_fraud"])


def test_load_table_validates_and_checks_format(frame: pd.DataFrame, tmp_path: Path) -> None:
    bad = frame.head(100).drop(columns=["new_device"])
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(ValueError, match="new_device"):
        load_table(path, FRAUD_SPEC)
    with pytest.raises(ValueError, match="unsupported"):
        load_table(tmp_path / "data.json", FRAUD_SPEC)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        simulate_transactions(0)
    with pytest.raises(ValueError):
        simulate_transactions(100, fraud_rate=0.9)
    tiny = simulate_transactions(50, fraud_rate=0.0, seed=1)
    assert len(tiny) == 50 and (tiny["fraud_pattern"] == "none").all()


def test_fraud_package_does_not_import_torch() -> None:
    code = (
        "import sys, training.fraud.features, training.fraud.simulator; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_simulated_rows_all_satisfy_the_serving_schema() -> None:
    """Batch jobs over simulated files must see no rejects: every value is within the route's
    limits (distances are capped at 20,000 km, counts and amounts stay in range)."""
    import pyarrow as pa

    from service.areas.fraud import COLUMN_RULES

    frame = simulate_transactions(300_000, seed=4)
    _, reasons = COLUMN_RULES.validate(pa.Table.from_pandas(frame[COLUMN_RULES.names]))
    bad = [reason for reason in reasons if reason is not None]
    assert bad == [], bad[:5]
