"""Request rows built from simulated transactions."""

from __future__ import annotations

from typing import Any

from service.areas.fraud import json_rows
from training.fraud.simulator import simulate_transactions

# The README's example: a large, foreign, card-absent purchase at 3 a.m. from a new device (also
# the try-it page's "suspicious" preset, service/ui/app.js).
SUSPICIOUS_TRANSACTION = {
    "amount": 912.4,
    "merchant_category": "electronics",
    "hour": 3,
    "card_present": False,
    "distance_from_home_km": 4200,
    "txn_count_1h": 4,
    "txn_count_24h": 9,
    "avg_amount_30d": 61.0,
    "new_device": True,
    "foreign_merchant": True,
    "account_age_days": 1400,
}


def transactions(n_rows: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n_rows`` simulated transactions as the fraud route's JSON rows."""
    return json_rows(simulate_transactions(max(n_rows, 50), seed=seed).head(n_rows))
