"""``python -m bench.precision``: FP32 against INT8, side by side in one run, per model.

For every model with a registered INT8 variant (``training.variants``) of its latest FP32
version, in the store of ``BENTOML_HOME``: ONNX Runtime's rows per second in process (one
thread, as a worker's session with ``DLSERVE_INTRA_OP_THREADS=1``) at batch 1 and at a typical
batch, and the served route's requests per second at 16 connections (wrk, one request of one
row each), the service started once with ``DLSERVE_PRECISION=fp32`` and once with each model at
``int8``, alternating ``--rounds`` times; beside them, the accuracy the variant lost on the
held-out set (its gate, from its metadata). A model whose variant failed its gate is listed with
the reason, and the in-process speed of a dynamic INT8 graph made here (not registered, never
served).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from bench.ceiling import ceiling_rows_per_second
from bench.runner import tiled
from bench.workloads import Body, drive, image_upload
from core.model_store import (
    LoadedModel,
    ModelUnavailableError,
    latest_version,
    load_model,
    read_stored_model,
)
from core.precision import FP32, INT8, version_for_precision
from core.runtime import create_session
from harness.images import encode, load_test_images
from harness.local_server import LocalServer
from service.areas import fraud, images
from service.areas.sentiment import ROUTE as SENTIMENT_ROUTE
from service.areas.sentiment import stored_encoder
from service.batching import Arrays
from training.fraud.simulator import simulate_transactions
from training.sentiment.data import load_reviews, split_reviews
from training.variants import dynamic_int8

CONNECTIONS = 16
AREAS = "fraud,image,sentiment"


@dataclass(frozen=True)
class Case:
    """One model: its route's one-row request and the arrays of one row and of a typical
    batch (the batch a busy worker's micro-batcher forms for it)."""

    name: str
    body: Body
    one: Arrays
    typical_rows: int


def cases() -> list[Case]:
    """Fraud (one transaction; 100 per call), image (one PNG; 32), sentiment (one review; 32)."""
    rows = fraud.json_rows(simulate_transactions(50, seed=7))
    made = [
        Case(
            "fraud-scorer",
            Body("/v1/fraud/score", json.dumps({"transactions": rows[:1]}).encode()),
            fraud.to_arrays([fraud.Transaction(**rows[0])]),
            100,
        )
    ]
    pixels, _ = load_test_images(1)
    png = encode(pixels[0])
    arrays = images.to_arrays([png], [["image"]], max_pixels=pixels[0].size, stop=threading.Event())
    made.append(Case("image-classifier", image_upload(png), arrays, 32))
    text = split_reviews(load_reviews(), seed=0)[2].texts[0]
    for kind in ("rnn", "transformer"):
        name = f"sentiment-{kind}"
        encoder = stored_encoder(load_model(f"{name}:latest", "cpu"))
        body = Body(SENTIMENT_ROUTE, json.dumps({"texts": [text], "model": kind}).encode())
        made.append(Case(name, body, encoder.encode([text])[0], 32))
    return made


def versions(name: str) -> tuple[str, str | None, str | None]:
    """``(fp32 version, int8 version or None, why none)``."""
    fp32 = latest_version(name)
    if fp32 is None:
        raise SystemExit(f"bench: {name} is not in the store ({os.environ.get('BENTOML_HOME')})")
    try:
        return fp32, version_for_precision(name, INT8), None
    except ModelUnavailableError as exc:
        return fp32, None, str(exc)


def ungated_int8(name: str, version: str, scratch: Path) -> LoadedModel:
    """The FP32 version quantized here with ``training.variants.dynamic_int8`` (the model's
    own plan when its variant failed its gate), for the in-process speed only."""
    metadata, fp32 = read_stored_model(f"{name}:{version}")
    dynamic_int8()(fp32, scratch / "int8.onnx")
    session, provider = create_session(scratch / "int8.onnx", "cpu", 1)
    return LoadedModel(metadata, session, provider, fp32.parent)


def in_process(model: LoadedModel, case: Case, seconds: float) -> dict[str, float]:
    """Rows/s of one session (one thread) at batch 1 and at the case's typical batch."""
    one, _ = ceiling_rows_per_second(model, case.one, seconds)
    typical, _ = ceiling_rows_per_second(model, tiled(case.one, case.typical_rows), seconds)
    return {"batch_1": round(one), f"batch_{case.typical_rows}": round(typical)}


def stored(name: str, version: str) -> LoadedModel:
    """A stored version on one CPU thread (a worker's session with one intra-op thread)."""
    return load_model(f"{name}:{version}", "cpu", intra_op_threads=1)


def served(chosen: dict[str, str], measured: list[Case], seconds: int) -> dict[str, float]:
    """Requests/s of each case's route at ``CONNECTIONS``, the service started with
    ``DLSERVE_PRECISION`` choosing ``chosen`` (model -> precision)."""
    setting = ",".join(f"{name}={precision}" for name, precision in chosen.items())
    env = {"DLSERVE_MODELS": AREAS, "DLSERVE_PRECISION": setting or FP32}
    with LocalServer(env) as server:
        server.wait("/readyz", timeout=180)
        results = {}
        for case in measured:
            result = drive(server.url, case.body, CONNECTIONS, seconds)
            if result.non_2xx or result.socket_errors:
                raise SystemExit(f"bench: {case.name} answered errors: {result}")
            results[case.name] = result.requests_per_second
        return results


def accuracy_cost(name: str, version: str) -> str:
    """What the variant lost on the held-out set, per gated metric (its metadata's gate)."""
    metadata, _ = read_stored_model(f"{name}:{version}")
    return ", ".join(
        f"{check['metric']} {check['fp32']:.4f} -> {check['variant']:.4f}"
        for check in metadata["gate"]["checks"]
    )


def markdown(rows: list[dict]) -> str:
    """The side-by-side table: in-process rows/s and served requests/s, FP32 | INT8 | ratio."""
    lines = [
        "| model | method | held-out cost | rows/s batch 1 (fp32 / int8) | rows/s typical batch "
        f"(fp32 / int8) | route req/s c{CONNECTIONS} (fp32 / int8) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row.get("int8") is None:
            speed = [
                f"{row['fp32'][key]:,.0f} / {row['ungated_int8'][key]:,.0f} "
                f"({row['ungated_int8'][key] / row['fp32'][key]:.2f}x, not registered)"
                for key in ("batch_1", row["typical"])
            ]
            lines.append(f"| {row['model']} | none | {row['why']} | " + " | ".join(speed) + " | |")
            continue
        cells = []
        for key in ("batch_1", row["typical"], "served"):
            fp32, int8 = row["fp32"][key], row["int8"][key]
            cells.append(f"{fp32:,.0f} / {int8:,.0f} ({int8 / fp32:.2f}x)")
        lines.append(
            f"| {row['model']} | {row['method']} | {row['cost']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per route")
    parser.add_argument("--ceiling-seconds", type=float, default=2.0, help="per in-process cell")
    parser.add_argument("--rounds", type=int, default=2, help="FP32 / INT8 server alternations")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/precision.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    rows, measured = [], []
    for case in cases():
        fp32, int8, why = versions(case.name)
        row: dict = {"model": case.name, "fp32_version": fp32, "int8_version": int8}
        row["typical"] = f"batch_{case.typical_rows}"
        row["fp32"] = in_process(stored(case.name, fp32), case, args.ceiling_seconds)
        if int8 is None:
            with tempfile.TemporaryDirectory() as scratch:
                model = ungated_int8(case.name, fp32, Path(scratch))
                speed = in_process(model, case, args.ceiling_seconds)
            rows.append({**row, "int8": None, "why": why, "ungated_int8": speed})
            continue
        metadata, _ = read_stored_model(f"{case.name}:{int8}")
        row |= {"method": metadata["gate"]["method"], "cost": accuracy_cost(case.name, int8)}
        row["int8"] = in_process(stored(case.name, int8), case, args.ceiling_seconds)
        rows.append(row)
        measured.append(case)
    chosen = {case.name: INT8 for case in measured}
    rounds: dict[str, list[dict[str, float]]] = {FP32: [], INT8: []}
    for _ in range(args.rounds):
        rounds[FP32].append(served({}, measured, args.seconds))
        rounds[INT8].append(served(chosen, measured, args.seconds))
    for row in rows:
        if row["int8"] is None:
            continue  # not served at INT8: no side-by-side route figure
        for precision in (FP32, INT8):
            runs = [run[row["model"]] for run in rounds[precision]]
            row[precision]["served"] = round(statistics.median(runs))
    table = markdown(rows)
    print(table)
    loads = {"before": load_before[0], "after": os.getloadavg()[0]}
    print(f"load average (1 min) before {loads['before']:.2f}, after {loads['after']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "load_average": loads}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
