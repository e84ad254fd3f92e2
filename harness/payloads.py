"""Request rows built from simulated transactions."""

from __future__ import annotations

from typing import Any

from service.areas.fraud import json_rows
from training.fraud.simulator import simulate_transactions


def transactions(n_rows: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n_rows`` simulated transactions as the fraud route's JSON rows."""
    return json_rows(simulate_transactions(max(n_rows, 50), seed=seed).head(n_rows))
