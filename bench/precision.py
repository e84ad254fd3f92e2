"""``python -m bench.precision``: FP32 against INT8, side by side in one run, per model.

For every model with a registered INT8 variant (``training.variants``) of its latest FP32
version, in the store of ``BENTOML_HOME`` (``--models``: some of them): ONNX Runtime's rows per
second in process (one thread, as a worker's session with ``DLSERVE_INTRA_OP_THREADS=1``) at
batch 1 and at a typical batch, and the served route's requests per second at 16 connections
(wrk, one request of one row each), the service started once with ``DLSERVE_PRECISION=fp32``
and once with each model at ``int8``, alternating ``--rounds`` times; beside them, what the
variant lost on the held-out set (its gate, from its metadata: accuracy, or the text
generator's validation loss). A model whose variant failed its gate is listed with the reason,
and the in-process speed of a dynamic INT8 graph made here (not registered, never served).

The text generator has no rows: in process, its cache graph's decode throughput (new tokens per
second, one character each) with 1 and 16 sequences decoding together; served,
``POST /v1/completions`` of one prompt and ``TEXT_MAX_TOKENS`` greedy characters, not streamed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.ceiling import ceiling_rows_per_second
from bench.runner import tiled
from bench.text_cache import batched_rate
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
from core.text_generation import TextGenerator, session_call
from harness.images import encode, load_test_images
from harness.local_server import LocalServer
from service.areas import fraud, images
from service.areas.sentiment import ROUTE as SENTIMENT_ROUTE
from service.areas.sentiment import stored_encoder
from service.areas.text import MODEL as TEXT_MODEL
from service.areas.text import ROUTE as TEXT_ROUTE
from service.batching import Arrays
from service.registry import area_of
from training.fraud.simulator import simulate_transactions
from training.sentiment.data import load_reviews, split_reviews
from training.variants import dynamic_int8

CONNECTIONS = 16
TEXT_PROMPT = "ROMEO:\n"
TEXT_MAX_TOKENS = 16  # characters per served completion: a short answer, inside any context
DECODE_STEPS = 64  # decode calls per in-process run, as bench.text_cache (capped by the context)


@dataclass(frozen=True)
class Case:
    """One model: its route's one-request body, and what its in-process cells run: the arrays
    of one row (``one``) and the rows of a typical batch (the batch a busy worker's
    micro-batcher forms for it); for the text generator (``one`` None) the sequences of a
    typical decode step."""

    name: str
    body: Body
    one: Arrays | None
    typical_rows: int

    @property
    def unit(self) -> str:
        """What the in-process cells count per second: rows, or new tokens of a generator."""
        return "rows" if self.one is not None else "tokens"


def fraud_case() -> Case:
    """One transaction per request; 100 per call."""
    rows = fraud.json_rows(simulate_transactions(50, seed=7))
    body = Body("/v1/fraud/score", json.dumps({"transactions": rows[:1]}).encode())
    return Case("fraud-scorer", body, fraud.to_arrays([fraud.Transaction(**rows[0])]), 100)


def image_case() -> Case:
    """One PNG per request; 32 per call."""
    pixels, _ = load_test_images(1)
    png = encode(pixels[0])
    arrays = images.to_arrays([png], [["image"]], max_pixels=pixels[0].size, stop=threading.Event())
    return Case("image-classifier", image_upload(png), arrays, 32)


def sentiment_case(kind: str) -> Case:
    """One held-out review per request; 32 per call."""
    text = split_reviews(load_reviews(), seed=0)[2].texts[0]
    name = f"sentiment-{kind}"
    encoder = stored_encoder(load_model(f"{name}:latest", "cpu"))
    body = Body(SENTIMENT_ROUTE, json.dumps({"texts": [text], "model": kind}).encode())
    return Case(name, body, encoder.encode([text])[0], 32)


def text_case() -> Case:
    """One prompt per request, ``TEXT_MAX_TOKENS`` greedy characters, not streamed; in process,
    16 sequences decoding together."""
    request = {"model": TEXT_MODEL, "prompt": TEXT_PROMPT, "max_tokens": TEXT_MAX_TOKENS}
    body = Body(TEXT_ROUTE, json.dumps(request | {"temperature": 0}).encode())
    return Case(TEXT_MODEL, body, None, 16)


CASES: dict[str, Callable[[], Case]] = {
    "fraud-scorer": fraud_case,
    "image-classifier": image_case,
    "sentiment-rnn": lambda: sentiment_case("rnn"),
    "sentiment-transformer": lambda: sentiment_case("transformer"),
    TEXT_MODEL: text_case,
}


def cases(names: list[str]) -> list[Case]:
    """The cases of ``names`` (``CASES``' keys), in that order."""
    return [CASES[name]() for name in names]


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
    """Rows/s of one session (one thread) at batch 1 and at the case's typical batch; a
    generator's new tokens/s instead (``decoding``)."""
    if case.one is None:
        return decoding(model, case.typical_rows, seconds)
    one, _ = ceiling_rows_per_second(model, case.one, seconds)
    typical, _ = ceiling_rows_per_second(model, tiled(case.one, case.typical_rows), seconds)
    return {"batch_1": round(one), f"batch_{case.typical_rows}": round(typical)}


def decoding(model: LoadedModel, typical: int, seconds: float) -> dict[str, float]:
    """New tokens/s of the cache graph decoding 1 and ``typical`` sequences together: runs of
    ``bench.text_cache.batched_rate`` (prompts of unequal lengths prefilled untimed, then one
    greedy decode call per step for all of them, timed) for ``seconds`` each, their median."""
    generator = TextGenerator(session_call(model.session), model.metadata)
    rates = {}
    for sequences in (1, typical):
        runs, deadline = [], time.perf_counter() + seconds
        while not runs or time.perf_counter() < deadline:
            runs.append(batched_rate(generator, sequences, DECODE_STEPS, 1))
        rates[f"batch_{sequences}"] = round(statistics.median(runs))
    return rates


def stored(name: str, version: str) -> LoadedModel:
    """A stored version on one CPU thread (a worker's session with one intra-op thread)."""
    return load_model(f"{name}:{version}", "cpu", intra_op_threads=1)


def served(chosen: dict[str, str], measured: list[Case], seconds: int) -> dict[str, float]:
    """Requests/s of each case's route at ``CONNECTIONS``, the service started with
    ``DLSERVE_PRECISION`` choosing ``chosen`` (model -> precision), with the areas of
    ``measured`` only."""
    setting = ",".join(f"{name}={precision}" for name, precision in chosen.items())
    areas = ",".join(dict.fromkeys(area_of(case.name).name for case in measured))
    env = {"DLSERVE_MODELS": areas, "DLSERVE_PRECISION": setting or FP32}
    with LocalServer(env) as server:
        server.wait("/readyz", timeout=180)
        results = {}
        for case in measured:
            result = drive(server.url, case.body, CONNECTIONS, seconds)
            if result.non_2xx or result.socket_errors:
                raise SystemExit(f"bench: {case.name} answered errors: {result}")
            results[case.name] = result.requests_per_second
        return results


def accuracy_cost(checks: list[dict]) -> str:
    """What the variant lost on the held-out set, per gated metric (its metadata's gate
    checks); a validation loss with the gate's six decimals and what it lost (a variant moves
    it by about 1e-4)."""
    parts = []
    for check in checks:
        digits = 6 if check["metric"] == "val_loss" else 4
        part = f"{check['metric']} {check['fp32']:.{digits}f} -> {check['variant']:.{digits}f}"
        parts.append(part + (f" (lost {check['lost']:.6f})" if digits == 6 else ""))
    return ", ".join(parts)


def markdown(rows: list[dict]) -> str:
    """The side-by-side table: in-process rows/s (a generator's tokens/s, said beside its
    name) and served requests/s, FP32 | INT8 | ratio."""
    lines = [
        "| model | method | held-out cost | rows/s batch 1 (fp32 / int8) | rows/s typical batch "
        f"(fp32 / int8) | route req/s c{CONNECTIONS} (fp32 / int8) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["unit"] != "rows":
            typical = row["typical"].removeprefix("batch_")
            row = {
                **row,
                "model": f"{row['model']} ({row['unit']}/s; typical: {typical} sequences)",
            }
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
    parser.add_argument(
        "--models", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}"
    )
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(CASES)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    rows, measured = [], []
    for case in cases(args.models.split(",")):
        fp32, int8, why = versions(case.name)
        row: dict = {"model": case.name, "fp32_version": fp32, "int8_version": int8}
        row |= {"unit": case.unit, "typical": f"batch_{case.typical_rows}"}
        row["fp32"] = in_process(stored(case.name, fp32), case, args.ceiling_seconds)
        if int8 is None:
            with tempfile.TemporaryDirectory() as scratch:
                model = ungated_int8(case.name, fp32, Path(scratch))
                speed = in_process(model, case, args.ceiling_seconds)
            rows.append({**row, "int8": None, "why": why, "ungated_int8": speed})
            continue
        metadata, _ = read_stored_model(f"{case.name}:{int8}")
        checks = metadata["gate"]["checks"]
        row |= {"method": metadata["gate"]["method"], "gate": checks}
        row["cost"] = accuracy_cost(checks)
        row["int8"] = in_process(stored(case.name, int8), case, args.ceiling_seconds)
        rows.append(row)
        measured.append(case)
    chosen = {case.name: INT8 for case in measured}
    rounds: dict[str, list[dict[str, float]]] = {FP32: [], INT8: []}
    for _ in range(args.rounds if measured else 0):
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
    figures = {"rows": rows, "text_max_tokens": TEXT_MAX_TOKENS, "load_average": loads}
    args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
