"""The floor bench's cost ratios: a route's cost is the no-op's requests/s over its own, in the
same server and at the same concurrency, over the mean of the passes."""

from __future__ import annotations

import json

from bench.floor import NOOP, cost_ratios, hot_routes


def test_cost_ratio_is_the_no_op_rate_over_the_route_rate_in_the_same_server() -> None:
    cell = {"concurrency": 16, "p50_ms": 1.0, "p99_ms": 2.0, "non_2xx": 0}
    cells = [
        {**cell, "server": "a", "route": NOOP, "requests_per_second": 900.0},
        {**cell, "server": "a", "route": NOOP, "requests_per_second": 1100.0},
        {**cell, "server": "a", "route": "fraud", "requests_per_second": 800.0},
        {**cell, "server": "b", "route": NOOP, "requests_per_second": 500.0},
        {**cell, "server": "b", "route": "fraud", "requests_per_second": 500.0},
        {**cell, "server": "c", "route": "fraud", "requests_per_second": 100.0},
        {**cell, "concurrency": 1, "server": "a", "route": "fraud", "requests_per_second": 5.0},
    ]
    ratios = {
        (r["server"], r["concurrency"], r["route"]): r["cost_ratio"] for r in cost_ratios(cells)
    }
    assert ratios == {
        ("a", 16, NOOP): 1.0,
        ("a", 16, "fraud"): 1.25,
        ("b", 16, NOOP): 1.0,
        ("b", 16, "fraud"): 1.0,
        ("c", 16, "fraud"): None,  # no no-op cell in that server
        ("a", 1, "fraud"): None,  # nor at that concurrency
    }


def test_hot_routes_send_one_transaction_named_and_as_v2_tensors() -> None:
    named, v2 = hot_routes().values()
    assert named.route == "/v1/fraud/score" and len(json.loads(named.content)["transactions"]) == 1
    tensors = {t["name"]: t["shape"] for t in json.loads(v2.content)["inputs"]}
    assert v2.route == "/v2/models/fraud-scorer/infer" and tensors["categorical"] == [1, 1]
