"""``python -m bench.fraud``: POST /v1/fraud/score under wrk vs the in-process ceiling.

Starts the service on 127.0.0.1 over the model store's ``fraud-scorer:latest``, drives it with
wrk for 1-row and 100-row requests at concurrency 1, 16 and 64, and prints rows/s, p50 and p99
latency beside ONNX Runtime's own rows/s for the same batch size, measured in the same run.
"""

from __future__ import annotations

import json

from bench.runner import Scenario, parse_args, run_benchmark
from service.areas.fraud import MODEL, Transaction, json_rows, to_arrays
from training.fraud.simulator import simulate_transactions

ROWS_PER_REQUEST = (1, 100)


def scenarios() -> list[Scenario]:
    """1-row and 100-row requests of simulated transactions."""
    rows = json_rows(simulate_transactions(1000, seed=7))
    return [
        Scenario(
            label=f"fraud {size} row(s)",
            model_tag=f"{MODEL}:latest",
            route="/v1/fraud/score",
            body=json.dumps({"transactions": rows[:size]}).encode(),
            rows=size,
            inputs=to_arrays([Transaction(**row) for row in rows[:size]]),
        )
        for size in ROWS_PER_REQUEST
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args("fraud", __doc__, argv)
    run_benchmark("fraud", scenarios(), args, areas="fraud")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
