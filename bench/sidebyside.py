"""``python -m bench.sidebyside``: dlserve beside NVIDIA Triton and a plain FastAPI server, in
one run, on the same ONNX bytes and the same request bodies.

Servers (all started first, then measured in alternating passes so that a slow moment of the
machine spreads over all of them): dlserve with its defaults (named routes; V2 routes where the
service has them, else those cells are skipped), dlserve with the former defaults (one worker,
BentoML's access log and tracing on: what the new defaults bought), Triton with one instance
and with one instance per CPU (python backend on ONNX Runtime, dynamic batching; needs
``make bench-triton``, else skipped), and FastAPI under uvicorn doing the same work. Before
measuring, one answer per server and workload is checked against in-process ONNX Runtime;
wrk then counts non-2xx answers. Writes JSON, a markdown table and a PNG chart; refuses to run
on a busy machine (load average) unless ``--force``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import triton_server
from bench.report import write_report
from bench.workloads import Body, Workload, check_answer, drive, workloads
from core.model_store import read_stored_model, stored_model_exists
from harness.local_server import REPOSITORY, LocalServer, free_port
from service.cpus import available_cpus

FRAUD, IMAGE = "fraud-scorer:latest", "image-classifier:latest"
BENCH_HOME = REPOSITORY / "reports" / "bench" / "bentoml"
# ``--workloads`` choice -> the prefix of the workload labels it selects
WORKLOADS = {"fraud": "fraud,", "image": "image,"}


@dataclass
class Target:
    """One server and the protocol it is driven with."""

    name: str
    url: str
    protocol: str  # named, v2 or plain
    skipped: dict[str, str] = field(default_factory=dict)  # workload label -> why


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sidebyside", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per cell and pass")
    parser.add_argument("--passes", type=int, default=2, help="alternating passes")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument("--no-triton", action="store_true", help="leave Triton out")
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="measure only these workloads (default: all)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench/sidebyside"))
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier dlserve to serve with its own defaults and this one's "
        "workers beside this one "
        "(e.g. `git archive main | tar -x -C DIR`); default: this code with the former "
        "defaults (1 worker, access log and tracing on)",
    )
    return parser.parse_args(argv)


def busy(cpus: int) -> str | None:
    """Why the machine is too busy to measure (1-minute load above a quarter of its CPUs)."""
    load = os.getloadavg()[0]
    return f"load average {load:.2f} on {cpus} CPUs" if load > cpus / 4 else None


def model_home(argv: list[str]) -> None:
    """Make sure ``BENTOML_HOME`` holds both models. When the fraud scorer is missing, the
    bench's own home (``reports/bench/bentoml``) links the current store's models and gets the
    fraud smoke preset (the full preset's graph, on less data), and the bench starts again
    over it (BentoML binds its store at import)."""
    if stored_model_exists(FRAUD) and stored_model_exists(IMAGE):
        return
    shared = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml") / "models"
    home = BENCH_HOME.absolute()
    if home == shared.parent.absolute():
        raise SystemExit(f"bench: {home} lacks {FRAUD} or {IMAGE}")
    (home / "models").mkdir(parents=True, exist_ok=True)
    for model in shared.iterdir() if shared.exists() else ():
        if not (home / "models" / model.name).exists():
            (home / "models" / model.name).symlink_to(model, target_is_directory=True)
    environment = {**os.environ, "BENTOML_HOME": str(home)}
    if not (home / "models" / FRAUD.split(":")[0]).exists():
        print(f"bench: training the fraud smoke preset into {home}", flush=True)
        command = [sys.executable, "-m", "training", "fraud", "--preset", "smoke", "--register"]
        subprocess.run([*command, "--quiet"], cwd=REPOSITORY, env=environment, check=True)
    os.execve(sys.executable, [sys.executable, "-m", "bench.sidebyside", *argv], environment)


def start_servers(
    cpus: int, use_triton: bool, before: Path | None
) -> tuple[list[object], list[Target]]:
    """Every server of the comparison, started; the targets they answer as."""
    files = {name: read_stored_model(tag)[1] for name, tag in (("fraud", FRAUD), ("image", IMAGE))}
    models = "fraud,image"
    servers: list[object] = []
    targets: list[Target] = []
    dlserve = LocalServer(
        {"DLSERVE_MODELS": models, "DLSERVE_PROVIDER": "cpu", "DLSERVE_WORKERS": str(cpus)}
    )
    if before is None:
        former_env = {
            "DLSERVE_WORKERS": "1",
            "DLSERVE_ACCESS_LOG": "true",
            "DLSERVE_TRACING": "true",
        }
        former = LocalServer({"DLSERVE_MODELS": models, "DLSERVE_PROVIDER": "cpu", **former_env})
        former_name = "dlserve, former defaults (1 worker, access log, tracing)"
    else:
        before_env = {"DLSERVE_WORKERS": str(cpus), "PYTHONDONTWRITEBYTECODE": "1"}
        former = LocalServer(
            {"DLSERVE_MODELS": models, "DLSERVE_PROVIDER": "cpu", **before_env},
            cwd=before.absolute(),
        )
        former_name = f"dlserve before ({before.name}, its defaults, {cpus} workers)"
    servers += [dlserve, former]
    targets += [
        Target(f"dlserve, {cpus} workers", dlserve.url, "named"),
        Target(f"dlserve V2, {cpus} workers", dlserve.url, "v2"),
        Target(former_name, former.url, "named"),
    ]
    if use_triton:
        onnx = {"fraud-scorer": files["fraud"], "image-classifier": files["image"]}
        for instances in sorted({1, cpus}):
            triton = triton_server.TritonServer(onnx, instances, free_port())
            servers.append(triton)
            targets.append(Target(f"Triton, {instances} instance(s)", triton.url, "v2"))
    port = free_port()
    plain = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.plain_server:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(cpus),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPOSITORY,
        env={
            **os.environ,
            "BENCH_FRAUD_ONNX": str(files["fraud"]),
            "BENCH_IMAGE_ONNX": str(files["image"]),
        },
        start_new_session=True,
    )
    servers.append(plain)
    targets.append(Target(f"FastAPI, {cpus} workers", f"http://127.0.0.1:{port}", "plain"))
    for server in servers:
        if isinstance(server, LocalServer):
            server.wait("/readyz", timeout=180)
        elif isinstance(server, triton_server.TritonServer):
            server.wait()
    wait_until_up(f"http://127.0.0.1:{port}/docs", plain)
    return servers, targets


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Block until ``url`` answers 200 (the plain server is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_servers(servers: list[object]) -> None:
    for server in servers:
        if isinstance(server, subprocess.Popen):
            server.terminate()
            server.wait(timeout=30)
        else:
            server.stop()  # type: ignore[attr-defined]


def body_of(target: Target, workload: Workload) -> Body:
    return workload.v2 if target.protocol == "v2" else workload.named


def check(targets: list[Target], loads: list[Workload]) -> None:
    """One answer per target and workload against in-process ONNX Runtime; a target without
    the route (404) is skipped for that workload, any other failure stops the bench."""
    for target in targets:
        for workload in loads:
            body = body_of(target, workload)
            answer = httpx.post(
                target.url + body.route,
                content=body.content,
                headers={"content-type": body.content_type},
                timeout=60,
            )
            if answer.status_code == 404 and target.protocol == "v2":
                target.skipped[workload.label] = f"{body.route} answered 404 (no V2 route)"
                continue
            answer.raise_for_status()
            check_answer(target.protocol, workload, answer.json())
    print("bench: every answer equals in-process ONNX Runtime", flush=True)


def measure(args: argparse.Namespace, targets: list[Target], loads: list[Workload]) -> list[dict]:
    cells = []
    for run in range(1, args.passes + 1):
        for workload in loads:
            for connections in args.concurrency:
                for target in targets:
                    if workload.label in target.skipped:
                        continue
                    body = body_of(target, workload)
                    result = drive(target.url, body, connections, args.seconds)
                    cells.append(
                        {
                            "pass": run,
                            "server": target.name,
                            "workload": workload.label,
                            "rows_per_request": workload.rows,
                            "concurrency": connections,
                            "requests_per_second": round(result.requests_per_second, 1),
                            "rows_per_second": round(result.requests_per_second * workload.rows, 1),
                            "p50_ms": result.p50_ms,
                            "p99_ms": result.p99_ms,
                            "non_2xx": result.non_2xx,
                            "socket_errors": result.socket_errors,
                        }
                    )
                    print(
                        f"pass {run} {workload.label:<24} c{connections:<3} {target.name:<58}"
                        f" {cells[-1]['rows_per_second']:>10.1f} rows/s p50 {result.p50_ms:.2f}"
                        f" p99 {result.p99_ms:.2f} ms non-2xx {result.non_2xx}",
                        flush=True,
                    )
    return cells


def selected(loads: list[Workload], names: list[str]) -> list[Workload]:
    """The workloads of ``loads`` that ``names`` (``--workloads`` choices) select."""
    prefixes = tuple(WORKLOADS[name] for name in names)
    return [load for load in loads if load.label.startswith(prefixes)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cpus = available_cpus()
    reason = busy(cpus)
    if reason and not args.force:
        print(f"bench: refusing to measure on a busy machine ({reason}); --force to run anyway")
        return 2
    use_triton = not args.no_triton and triton_server.available()
    if not use_triton:
        print("bench: Triton left out (make bench-triton installs it)", flush=True)
    model_home(argv)
    loads = selected(workloads(FRAUD, IMAGE), args.workloads)
    servers, targets = start_servers(cpus, use_triton, args.before)
    try:
        check(targets, loads)
        cells = measure(args, targets, loads)
    finally:
        stop_servers(servers)
    write_report(args.out, cells, {t.name: t.skipped for t in targets}, busy=reason)
    print(f"bench: figures in {args.out}.json, .md and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
