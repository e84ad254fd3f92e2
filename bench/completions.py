"""``python -m bench.completions``: streamed completions at 1, 4 and 16 concurrent clients.

Starts the service on 127.0.0.1 over the store's ``text-generator:latest`` and keeps ``N``
clients streaming ``POST /v1/completions`` back to back for ``--seconds`` each (temperature 1,
seeded, ``max_tokens`` filling the context after the prompt). Per cell: aggregate generated
characters per second, time to first token (p50, p99) and time per output token (p50) as the
clients saw them, beside the in-process ceiling: the same step program (prefill, then one
batched decode call per step for ``N`` sequences) run alone, measured in the same run. Prints
the table and the ratio of 16 streams to 1; writes the figures as JSON. The clients run in this
process, so on a small machine they take CPU from the server: the figures are a lower bound.
``--profile PATH`` records the worker with py-spy during the 16-stream cell (collapsed stacks,
every thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.profile import worker_pid
from core.text_generation import SamplingParams
from harness.local_server import LocalServer
from service.areas.text import AREA, MODEL, ROUTE
from service.areas.text.program import Completions, encode_request

CONCURRENCY = (1, 4, 16)
PROMPT = "ROMEO:\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.completions", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="streaming time per cell")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/bench/completions.json"),
        help="where to write the figures as JSON",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy's collapsed stacks of the 16-stream cell, here"
    )
    return parser.parse_args(argv)


def start_recording(pid: int, seconds: float, out: Path) -> threading.Thread:
    """py-spy recording process ``pid`` (every thread) for ``seconds`` into ``out``."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(round(seconds))]
    command += ["--output", str(out), "--format", "raw", "--threads", "--rate", "500"]
    recorder = threading.Thread(target=subprocess.run, args=(command,), daemon=True)
    recorder.start()
    return recorder


async def one_stream(
    client: httpx.AsyncClient, url: str, body: dict
) -> tuple[float, list[float], int]:
    """``(seconds to the first text, gaps between later chunks, characters)`` of one stream."""
    started = time.perf_counter()
    arrivals, characters = [], 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            text = json.loads(line[6:])["choices"][0]["text"]
            if text:
                arrivals.append(time.perf_counter())
                characters += len(text)
    gaps = list(np.diff(arrivals)) if len(arrivals) > 1 else []
    return arrivals[0] - started, gaps, characters


async def drive(url: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """``clients`` streaming back to back for ``seconds``: the cell's figures."""
    first, gaps, characters = [], [], 0
    deadline = time.perf_counter() + seconds

    async def client_loop(index: int) -> None:
        nonlocal characters
        seed = index * 1_000_000
        async with httpx.AsyncClient(timeout=60) as client:
            while time.perf_counter() < deadline:
                seed += 1
                body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "seed": seed}
                ttft, between, count = await one_stream(client, url, body)
                first.append(ttft)
                gaps.extend(between)
                characters += count

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(index) for index in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "completions": len(first),
        "characters_per_second": round(characters / elapsed, 1),
        "ttft_p50_ms": round(float(np.percentile(first, 50)) * 1e3, 2),
        "ttft_p99_ms": round(float(np.percentile(first, 99)) * 1e3, 2),
        "tpot_p50_ms": round(float(np.percentile(gaps, 50)) * 1e3, 3) if gaps else None,
    }


def ceiling(clients: int, max_tokens: int, seconds: float = 3.0) -> float:
    """Characters/s of the step program alone: ``clients`` sequences decoded together."""
    ready = AREA.spec_by_name[MODEL].load("cpu", 1)
    program = Completions(ready)
    produced, started = 0, time.perf_counter()
    seed = 0
    while time.perf_counter() - started < seconds:
        states = []
        for _ in range(clients):
            seed += 1
            sampling = SamplingParams(temperature=1.0)
            states.append(program.start(encode_request(ready, PROMPT, max_tokens, sampling, seed)))
        running = [state for state in states if not program.finished(state)]
        while running:
            program.step(running)
            running = [state for state in running if not program.finished(state)]
        produced += sum(len(state.text) for state in states)
    return produced / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {"DLSERVE_MODELS": "text", "DLSERVE_PROVIDER": "cpu", "DLSERVE_WORKERS": "1"}
    figures = []
    with LocalServer(env) as server:
        server.wait("/readyz")
        ready = AREA.spec_by_name[MODEL].load("cpu", 1)
        context = ready.companion.generator.context_length
        max_tokens = context - len(PROMPT)
        for clients in CONCURRENCY:
            recorder = None
            if args.profile is not None and clients == CONCURRENCY[-1]:
                recorder = start_recording(worker_pid(server), args.seconds, args.profile)
            cell = asyncio.run(drive(server.url + ROUTE, clients, args.seconds, max_tokens))
            if recorder is not None:
                recorder.join(timeout=60)
            cell["ceiling_characters_per_second"] = round(ceiling(clients, max_tokens), 1)
            cell["ratio_to_ceiling"] = round(
                cell["characters_per_second"] / cell["ceiling_characters_per_second"], 3
            )
            figures.append(cell)
            print(
                f"{clients:>2} streams: {cell['characters_per_second']:>9.1f} chars/s "
                f"(ceiling {cell['ceiling_characters_per_second']:.1f}, ratio "
                f"{cell['ratio_to_ceiling']}), TTFT p50 {cell['ttft_p50_ms']} ms p99 "
                f"{cell['ttft_p99_ms']} ms, TPOT p50 {cell['tpot_p50_ms']} ms, "
                f"{cell['completions']} completions",
                flush=True,
            )
    scaling = figures[-1]["characters_per_second"] / figures[0]["characters_per_second"]
    print(f"16 streams / 1 stream: {scaling:.2f}x characters per second (target >= 6)")
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"max_tokens": max_tokens, "prompt": PROMPT, "scaling_16_over_1": round(scaling, 2)}
    args.out.write_text(json.dumps({"machine": machine, **summary, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
