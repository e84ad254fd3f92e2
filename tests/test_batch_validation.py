"""The vectorised column validator agrees with the pydantic ``Transaction`` on every row.

Tables are built the way the CSV and JSON Lines readers build them (``frame_to_table``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from harness.payloads import transactions
from service.areas.fraud import COLUMN_RULES, Transaction, columns_to_arrays, to_arrays
from service.batch.readers import frame_to_table

GOOD = transactions(40, seed=5)
CHANGES: list[dict[str, Any]] = [
    {"amount": -0.01},
    {"amount": 1_000_000.5},
    {"amount": float("nan")},
    {"amount": float("inf")},
    {"amount": None},
    {"amount": "12.5"},
    {"amount": "twelve"},
    {"merchant_category": "casino"},
    {"merchant_category": None},
    {"hour": 24},
    {"hour": 3.5},
    {"hour": -1},
    {"card_present": 2},
    {"card_present": "yes"},
    {"card_present": "maybe"},
    {"card_present": 0},
    {"distance_from_home_km": 20_040.1},
    {"txn_count_1h": 5, "txn_count_24h": 4},
    {"txn_count_1h": 4, "txn_count_24h": 4},
    {"account_age_days": 36_501},
    {"new_device": None},
]


def _accepted_by_pydantic(row: dict[str, Any]) -> bool:
    try:
        Transaction.model_validate(row)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("change", CHANGES, ids=[str(c) for c in CHANGES])
def test_validator_and_pydantic_agree(change: dict[str, Any]) -> None:
    rows = [{**row, **change} for row in GOOD[:3]] + GOOD[3:5]
    table = frame_to_table(pd.DataFrame(rows), COLUMN_RULES.names)
    _, reasons = COLUMN_RULES.validate(table)
    expected = [_accepted_by_pydantic(row) for row in rows]
    assert [reason is None for reason in reasons] == expected
    assert expected[3:] == [True, True]


def test_every_good_row_is_accepted_and_encoded_like_http() -> None:
    columns, reasons = COLUMN_RULES.validate(pa.Table.from_pylist(GOOD))
    assert all(reason is None for reason in reasons)
    batch = columns_to_arrays(columns)
    http = to_arrays([Transaction.model_validate(row) for row in GOOD])
    for name in ("numeric", "categorical"):
        np.testing.assert_array_equal(batch[name], http[name])


def test_a_missing_column_rejects_every_row_naming_it() -> None:
    table = pa.Table.from_pylist(GOOD).drop_columns(["hour"])
    _, reasons = COLUMN_RULES.validate(table)
    assert set(reasons) == {"hour: column is missing"}


def test_dictionary_encoded_categories_are_checked_like_strings() -> None:
    rows = [*GOOD[:4], {**GOOD[4], "merchant_category": "casino"}, {**GOOD[5], "hour": 30}]
    plain = pa.Table.from_pylist(rows)
    encoded = plain.set_column(
        plain.column_names.index("merchant_category"),
        "merchant_category",
        plain.column("merchant_category").dictionary_encode(),
    )
    plain_columns, plain_reasons = COLUMN_RULES.validate(plain)
    columns, reasons = COLUMN_RULES.validate(encoded)
    assert reasons.tolist() == plain_reasons.tolist()
    assert reasons[4].startswith("merchant_category") and reasons[5].startswith("hour")
    np.testing.assert_array_equal(columns["merchant_category"], plain_columns["merchant_category"])
