"""``python -m bench.grpc_vs_http``: dlserve's Open Inference Protocol over gRPC beside the same
protocol over HTTP (binary tensors), in one run, on one server, with Triton's own clients.

One ``bentoml serve`` (``--workers``, fraud and image models of ``BENTOML_HOME``) is driven by
``tritonclient.grpc.aio`` and ``tritonclient.http.aio`` in alternating passes, cell by cell:
fraud with 1 and 100 transactions, image with 1 picture, at each ``--concurrency`` (that many
calls kept in flight by one client process). Before measuring, each cell's gRPC answer is
checked against its HTTP answer. With ``--triton``, NVIDIA Triton (1 instance, and 1 per CPU;
``bench.triton_server``) serves the same stored ONNX files over its own gRPC port, driven by the
same client in the same passes, and the table adds dlserve's gRPC rate as a ratio to the faster
Triton. Each pass prints one line; the summary is a markdown table (requests/s, rows/s, p50 and
p99 in ms, gRPC's rate as a ratio to HTTP's), also written to ``--out``. The clients run on
the same machine as the servers: on few cores the numbers are client-bound as much as
server-bound, and say so with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as triton_grpc
import tritonclient.http.aio as triton_http

from bench.triton_server import TritonServer
from core.model_store import read_stored_model
from harness.images import load_test_images
from harness.local_server import LocalServer, free_port
from harness.payloads import transactions
from service.areas import fraud
from service.cpus import available_cpus

DATATYPES = {np.float32: "FP32", np.int64: "INT64", np.uint8: "UINT8"}
Call = Callable[[], Awaitable[np.ndarray]]


@dataclass
class Cell:
    """One workload: its model, the arrays it sends, the output compared, its rows."""

    label: str
    model: str
    arrays: dict[str, np.ndarray]
    output: str

    @property
    def rows(self) -> int:
        return len(next(iter(self.arrays.values())))


@dataclass
class Measured:
    """Every pass of one (cell, protocol, concurrency): calls and their latencies."""

    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else 0.0


def cells() -> list[Cell]:
    def fraud_arrays(rows: int) -> dict[str, np.ndarray]:
        return fraud.to_arrays([fraud.Transaction(**row) for row in transactions(rows)])

    pixels, _ = load_test_images(1)
    return [
        Cell("fraud, 1 transaction", "fraud-scorer", fraud_arrays(1), "fraud_probability"),
        Cell("fraud, 100 transactions", "fraud-scorer", fraud_arrays(100), "fraud_probability"),
        Cell("image, 1 per request", "image-classifier", {"images": pixels}, "probabilities"),
    ]


def grpc_call(clients: list[triton_grpc.InferenceServerClient], cell: Cell) -> Call:
    """Calls spread over ``clients`` in turn (each its own connection: one gRPC connection
    reaches one worker)."""
    turn = itertools.cycle(clients)
    inputs = [
        triton_grpc.InferInput(name, list(a.shape), DATATYPES[a.dtype.type]).set_data_from_numpy(a)
        for name, a in cell.arrays.items()
    ]

    async def call() -> np.ndarray:
        return (await next(turn).infer(cell.model, inputs)).as_numpy(cell.output)

    return call


def http_call(client: triton_http.InferenceServerClient, cell: Cell) -> Call:
    inputs = [
        triton_http.InferInput(name, list(a.shape), DATATYPES[a.dtype.type]).set_data_from_numpy(
            a, binary_data=True
        )
        for name, a in cell.arrays.items()
    ]

    async def call() -> np.ndarray:
        return (await client.infer(cell.model, inputs)).as_numpy(cell.output)

    return call


async def run_pass(call: Call, concurrency: int, seconds: float, into: Measured) -> None:
    """``concurrency`` loops calling ``call`` until ``seconds`` have passed."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def loop() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    into.seconds += time.perf_counter() - began
    into.calls += len(latencies)
    into.latencies += latencies


@dataclass
class Target:
    """A server the cells are sent to, by one protocol: its name in the table and its calls."""

    name: str
    calls: dict[str, Call]


async def measure(
    server: LocalServer, args: argparse.Namespace, tritons: Sequence[TritonServer] = ()
) -> list[str]:
    """Check every cell's answers, then measure them (``args``: ``parse_args``'s) on dlserve's
    gRPC and HTTP and on each of ``tritons``' gRPC; the table's lines."""
    workloads = cells()
    grpc_clients = {
        name: connections(address, args.connections)
        for name, address in [
            ("dlserve", server.grpc_address),
            *((triton_name(t), t.grpc_address) for t in tritons),
        ]
    }
    http_client = triton_http.InferenceServerClient(
        server.url.removeprefix("http://"), conn_limit=max(args.concurrency)
    )
    targets = [
        Target(f"{name} gRPC", {cell.label: grpc_call(clients, cell) for cell in workloads})
        for name, clients in grpc_clients.items()
    ]
    targets.insert(
        1, Target("dlserve HTTP", {cell.label: http_call(http_client, cell) for cell in workloads})
    )
    results: dict[tuple[str, str, int], Measured] = {}
    try:
        for cell in workloads:  # every answer checked against dlserve's HTTP before timing
            expected = await targets[1].calls[cell.label]()
            for target in targets:
                answer = await target.calls[cell.label]()
                np.testing.assert_allclose(answer.ravel(), expected.ravel(), rtol=1e-5, atol=1e-6)
        for number in range(args.passes):
            for cell in workloads:
                for concurrency in args.concurrency:
                    for target in targets:
                        measured = results.setdefault(
                            (cell.label, target.name, concurrency), Measured()
                        )
                        before = measured.calls
                        await run_pass(
                            target.calls[cell.label], concurrency, args.seconds, measured
                        )
                        if not args.quiet:
                            done = measured.calls - before
                            print(
                                f"pass {number + 1}/{args.passes} {cell.label} c{concurrency} "
                                f"{target.name}: {done / args.seconds:,.0f} req/s",
                                flush=True,
                            )
    finally:
        for clients in grpc_clients.values():
            for client in clients:
                await client.close()
        await http_client.close()
    return table(workloads, results, args.concurrency, [t.name for t in targets])


def connections(address: str, count: int) -> list[triton_grpc.InferenceServerClient]:
    """``count`` clients of ``address``, each its own connection (no shared subchannel), as
    HTTP's pool has several: one gRPC connection reaches one worker."""
    return [
        triton_grpc.InferenceServerClient(
            address, channel_args=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(count)
    ]


def triton_name(triton: TritonServer) -> str:
    return f"Triton {triton.instances} instance{'s' if triton.instances > 1 else ''}"


def table(
    workloads: list[Cell],
    results: dict[tuple[str, str, int], Measured],
    levels: list[int],
    names: list[str],
) -> list[str]:
    """One row per cell and concurrency: every target's req/s, dlserve's gRPC against its
    HTTP and against the faster Triton gRPC (when there is one), and the p50 / p99s."""
    tritons = [name for name in names if name.startswith("Triton")]
    header = [
        "cell",
        "c",
        *(f"{name} req/s" for name in names),
        "gRPC / HTTP",
        *(["gRPC / faster Triton gRPC"] if tritons else []),
        "dlserve gRPC rows/s",
        *(f"{name} p50 / p99 ms" for name in names),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for cell in workloads:
        for c in levels:
            measured = {name: results[(cell.label, name, c)] for name in names}
            grpc, http = measured["dlserve gRPC"], measured["dlserve HTTP"]
            row = [cell.label, str(c), *(f"{m.rate():,.0f}" for m in measured.values())]
            row.append(f"{grpc.rate() / http.rate():.2f}")
            if tritons:
                fastest = max(measured[name].rate() for name in tritons)
                row.append(f"{grpc.rate() / fastest:.2f}")
            row.append(f"{grpc.rate() * cell.rows:,.0f}")
            row += [f"{m.percentile(50):.1f} / {m.percentile(99):.1f}" for m in measured.values()]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_vs_http", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5, help="seconds per cell and pass")
    parser.add_argument("--passes", type=int, default=2, help="alternating passes")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, default=2, help="the server's workers")
    parser.add_argument(
        "--connections", type=int, default=4, help="gRPC connections the calls are spread over"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench/grpc_vs_http.md"))
    parser.add_argument("--quiet", action="store_true", help="no line per pass")
    parser.add_argument(
        "--triton",
        action="store_true",
        help="also Triton's gRPC on the same ONNX files, with 1 instance and 1 per CPU "
        "(needs `make .venv-triton/.installed`)",
    )
    return parser.parse_args(argv)


def start_tritons(stack: ExitStack) -> list[TritonServer]:
    """Triton with 1 instance and with 1 per CPU over the stored fraud and image graphs,
    gRPC open, each ready; stopped with ``stack``."""
    models = ("fraud-scorer", "image-classifier")
    files = {model: read_stored_model(f"{model}:latest")[1] for model in models}
    started = [
        stack.enter_context(TritonServer(files, instances, free_port(), free_port()))
        for instances in sorted({1, available_cpus()})
    ]
    return [triton.wait() for triton in started]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {"DLSERVE_MODELS": "fraud,image", "DLSERVE_WORKERS": str(args.workers)}
    with ExitStack() as stack:
        server = stack.enter_context(LocalServer(env))
        tritons = start_tritons(stack) if args.triton else []
        server.wait("/readyz", timeout=300)
        lines = asyncio.run(measure(server, args, tritons))
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines.append("")
    lines.append(
        f"{args.workers} workers, {args.passes} alternating passes of {args.seconds:g} s per "
        f"cell, {args.connections} gRPC connections, one client process (tritonclient aio) "
        f"on the same machine; load average after: {load}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
