"""``make fuzz``: the long schemathesis run against a served dlserve (``python -m bench.fuzz``).

Starts the service on 127.0.0.1 over the models of ``BENTOML_HOME`` (default: the operator's
store), then sends valid and invalid requests generated from its ``/docs.json`` to every
operation, round after round with a new seed, until at least ``--requests`` were sent. Every
answer goes through the CI suite's checks (``harness/schema_fuzz.py``: no 5xx, status, content
type and body as documented, invalid data refused). Prints the counts by status class and the
failures, writes them as JSON, and exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from harness.local_server import LocalServer
from harness.schema_fuzz import fuzz_operation, load_schema, operations

EXAMPLES_PER_ROUND = 200  # per operation, valid and invalid requests mixed


def fuzz_round(base_url: str, seed: int, counts: Counter[str], failures: list[dict]) -> None:
    """One pass over every operation with ``seed``; add each answer's status class and each
    failed check (operation, status, first line of the reason) to ``counts``/``failures``."""
    for operation in operations(load_schema(base_url)).values():
        fuzz_operation(operation, seed, EXAMPLES_PER_ROUND, counts, failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="send at least this many")
    parser.add_argument("--seed", type=int, default=1, help="the first round's seed")
    parser.add_argument("--out", type=Path, default=Path("reports/fuzz/fuzz.json"))
    args = parser.parse_args(argv)
    counts: Counter[str] = Counter()
    failures: list[dict] = []
    started = time.monotonic()
    seed = args.seed
    with LocalServer({"DLSERVE_PROVIDER": "cpu"}) as server:
        server.wait("/readyz", timeout=300)
        while sum(counts.values()) < args.requests:
            fuzz_round(server.url, seed, counts, failures)
            print(
                f"seed {seed}: {sum(counts.values())} requests, {len(failures)} failures",
                flush=True,
            )
            seed += 1
    figures = {
        "requests": sum(counts.values()),
        "by_status_class": dict(sorted(counts.items())),
        "failures": len(failures),
        "failure_kinds": Counter(
            f"{f['operation']} {f['status']}: {f['reason']}" for f in failures
        ),
        "seeds": [args.seed, seed - 1],
        "seconds": round(time.monotonic() - started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "failure_kinds"}))
    for kind, number in figures["failure_kinds"].most_common(20):
        print(f"  {number} x {kind}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
