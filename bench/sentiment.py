"""``python -m bench.sentiment``: POST /v1/sentiment under wrk vs the in-process ceiling.

Starts the service on 127.0.0.1 over the model store's ``sentiment-rnn:latest`` and
``sentiment-transformer:latest``, drives each model with wrk for 1-text and 32-text requests
(real review snippets) at concurrency 1, 16 and 64, and prints texts/s, p50 and p99 latency
beside ONNX Runtime's own texts/s for the same tokenised batch, measured in the same run.
"""

from __future__ import annotations

import json

from bench.runner import Scenario, parse_args, run_benchmark
from core.model_store import load_model
from service.areas.sentiment import ROUTE, STORE_NAMES, stored_encoder
from training.sentiment.data import load_reviews, split_reviews

TEXTS_PER_REQUEST = (1, 32)


def scenarios() -> list[Scenario]:
    """1 and 32 real test-split reviews per request, for each model."""
    texts = split_reviews(load_reviews(), seed=0)[2].texts[: max(TEXTS_PER_REQUEST)]
    cells = []
    for kind, store_name in STORE_NAMES.items():
        encoder = stored_encoder(load_model(f"{store_name}:latest", "cpu"))
        for size in TEXTS_PER_REQUEST:
            body = json.dumps({"texts": texts[:size], "model": kind}).encode()
            inputs = encoder.encode(texts[:size])[0]
            cells.append(
                Scenario(
                    f"{kind} {size} text(s)", f"{store_name}:latest", ROUTE, body, size, inputs
                )
            )
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args("sentiment", __doc__, argv)
    run_benchmark("sentiment", scenarios(), args, areas="sentiment")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
