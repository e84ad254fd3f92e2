"""``python -m bench.completions``: streamed completions at 1, 4 and 16 concurrent clients.

Starts the service on 127.0.0.1 over the store's ``text-generator:latest`` and keeps ``N``
clients streaming ``POST /v1/completions`` back to back for ``--seconds`` each (temperature 1,
seeded, ``max_tokens`` filling the context after the prompt). Per cell: aggregate generated
characters per second, time to first token (p50, p99) and time per output token (p50) as the
clients saw them, beside the in-process ceiling: the same step program (prefill, then one
batched decode call per step for ``N`` sequences) run alone, measured in the same run. Prints
the table and the ratio of 16 streams to 1; writes the figures as JSON. The clients run in this
process, so on a small machine they take CPU from the server: the figures are a lower bound.
``--client`` picks how they read (``raw``: the socket's bytes kept and parsed once each answer
ends, next to no CPU per event; ``httpx``: every event parsed as it comes), several measured in
turn per cell. ``--profile PATH`` records the worker with py-spy during the 16-stream cell
(collapsed stacks, every thread).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import re
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
    parser.add_argument(
        "--client",
        nargs="+",
        choices=CLIENTS,
        default=["raw"],
        help="how the bench reads the streams, each measured in turn per cell: 'raw' keeps a "
        "socket's bytes and parses them once the answer ends (default); 'httpx' parses each "
        "event as it comes, as a Python client would (and takes CPU from the server)",
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


Stream = tuple[float, list[float], int]  # seconds to the first text, later gaps, characters
EVENT = re.compile(rb"data: (.*?)\n\n")


async def httpx_stream(client: httpx.AsyncClient, url: str, body: dict) -> Stream:
    """One stream read through httpx, an event parsed as it arrives (the bench's first client:
    its parsing costs more CPU per event than the server's sending, on the same cores)."""
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


def parse_stream(raw: bytes, reads: list[tuple[int, float]], started: float) -> Stream:
    """The figures of one raw HTTP/1.1 answer: ``reads`` holds ``(bytes received so far, when)``
    per socket read; an event arrived with the read that completed it. Raises ``ValueError``
    unless the answer is a 200 whose chunked body ends (``[DONE]`` and the last chunk)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or not body.endswith(b"0\r\n\r\n"):
        raise ValueError(f"not a complete 200 stream: {raw[:200]!r} ... {raw[-50:]!r}")
    ends = [received for received, _ in reads]
    arrivals, characters, done = [], 0, False
    for event in EVENT.finditer(raw, len(head)):
        if event[1] == b"[DONE]":
            done = True
            continue
        text = json.loads(event[1])["choices"][0]["text"]
        if text:
            arrivals.append(reads[bisect.bisect_left(ends, event.end())][1])
            characters += len(text)
    if not done or not arrivals:
        raise ValueError("the stream ended without text or without [DONE]")
    gaps = list(np.diff(arrivals)) if len(arrivals) > 1 else []
    return arrivals[0] - started, gaps, characters


async def raw_stream(url: str, body: dict) -> Stream:
    """One stream over a plain asyncio connection: the socket's bytes are only kept (with the
    time of each read) until the answer ends, then parsed by ``parse_stream``, so the client
    spends next to nothing per event while the server streams."""
    address = httpx.URL(url)
    payload = json.dumps(body).encode()
    request = (
        f"POST {address.raw_path.decode()} HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload
    reader, writer = await asyncio.open_connection(address.host, address.port)
    started = time.perf_counter()
    writer.write(request)
    chunks, reads, received = [], [], 0
    while data := await reader.read(1 << 16):
        received += len(data)
        chunks.append(data)
        reads.append((received, time.perf_counter()))
    writer.close()
    return parse_stream(b"".join(chunks), reads, started)


CLIENTS = ("raw", "httpx")


async def drive(url: str, clients: int, seconds: float, max_tokens: int, kind: str) -> dict:
    """``clients`` streaming back to back for ``seconds`` with the ``kind`` of client (one of
    ``CLIENTS``): the cell's figures."""
    first, gaps, characters = [], [], 0
    deadline = time.perf_counter() + seconds

    async def client_loop(index: int) -> None:
        nonlocal characters
        seed = index * 1_000_000
        async with httpx.AsyncClient(timeout=60) as client:
            while time.perf_counter() < deadline:
                seed += 1
                body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "seed": seed}
                if kind == "raw":
                    ttft, between, count = await raw_stream(url, body)
                else:
                    ttft, between, count = await httpx_stream(client, url, body)
                first.append(ttft)
                gaps.extend(between)
                characters += count

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(index) for index in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "client": kind,
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
            ceiling_rate = round(ceiling(clients, max_tokens), 1)
            for kind in args.client:
                recorder = None
                if args.profile is not None and clients == CONCURRENCY[-1]:
                    recorder = start_recording(worker_pid(server), args.seconds, args.profile)
                url = server.url + ROUTE
                cell = asyncio.run(drive(url, clients, args.seconds, max_tokens, kind))
                if recorder is not None:
                    recorder.join(timeout=60)
                cell["ceiling_characters_per_second"] = ceiling_rate
                cell["ratio_to_ceiling"] = round(cell["characters_per_second"] / ceiling_rate, 3)
                figures.append(cell)
                print(
                    f"{clients:>2} streams, {kind:>5} client: "
                    f"{cell['characters_per_second']:>9.1f} chars/s (ceiling {ceiling_rate:.1f}, "
                    f"ratio {cell['ratio_to_ceiling']}), TTFT p50 {cell['ttft_p50_ms']} ms p99 "
                    f"{cell['ttft_p99_ms']} ms, TPOT p50 {cell['tpot_p50_ms']} ms, "
                    f"{cell['completions']} completions",
                    flush=True,
                )
    scaling = {
        kind: round(
            next(f for f in reversed(figures) if f["client"] == kind)["characters_per_second"]
            / next(f for f in figures if f["client"] == kind)["characters_per_second"],
            2,
        )
        for kind in args.client
    }
    print(f"16 streams / 1 stream, characters per second: {scaling} (target >= 6)")
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"max_tokens": max_tokens, "prompt": PROMPT, "scaling_16_over_1": scaling}
    args.out.write_text(json.dumps({"machine": machine, **summary, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
