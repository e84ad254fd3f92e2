"""``python -m bench.profile``: a py-spy flame graph of one dlserve worker at saturation.

Serves one worker on 127.0.0.1 (the no-op plug-in route, fraud with one transaction per
request, or the image upload route with one PNG), drives it with wrk at concurrency 16 and
records the worker with py-spy for the same seconds; the SVG goes to ``bench/profiles/``. Extra
``DLSERVE_*`` settings go after ``--env``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from bench.noop_area import ROUTE as NOOP_ROUTE
from bench.workloads import Body, image_upload
from bench.wrk import start_wrk
from harness.images import encode, load_test_images
from harness.local_server import LocalServer
from harness.payloads import SUSPICIOUS_TRANSACTION

# route name -> its request and the server's settings
ROUTES: dict[str, tuple[Body, dict[str, str]]] = {
    "noop": (
        Body(NOOP_ROUTE, b'{"x": 1}'),
        {"DLSERVE_AREA_MODULES": "bench.noop_area", "DLSERVE_MODELS": "noop"},
    ),
    "fraud": (
        Body("/v1/fraud/score", json.dumps({"transactions": [SUSPICIOUS_TRANSACTION]}).encode()),
        {"DLSERVE_MODELS": "fraud"},
    ),
    "image": (image_upload(encode(load_test_images(1)[0][0])), {"DLSERVE_MODELS": "image"}),
}


def worker_pid(server: LocalServer) -> int:
    """The pid of the server's (only) BentoML worker process."""
    for child in psutil.Process(server.process.pid).children(recursive=True):
        if any("worker.service" in part for part in child.cmdline()):
            return child.pid
    raise RuntimeError("no BentoML worker process found")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("route", choices=sorted(ROUTES))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE settings")
    parser.add_argument(
        "--out",
        type=Path,
        help="SVG path (default bench/profiles/ROUTE.svg); a .txt path gets collapsed stacks",
    )
    args = parser.parse_args(argv)
    body, env = ROUTES[args.route]
    settings = dict(item.split("=", 1) for item in args.env)
    env = {**env, "DLSERVE_WORKERS": "1", **settings}
    out = args.out or Path(__file__).parent / "profiles" / f"{args.route}.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with LocalServer(env) as server:
        server.wait("/readyz")
        command = [py_spy, "record", "--pid", str(worker_pid(server)), "--duration"]
        recorded = "raw" if out.suffix == ".txt" else "flamegraph"  # raw: collapsed stacks
        command += [str(args.seconds), "--output", str(out), "--format", recorded]
        recorder = threading.Thread(target=subprocess.run, args=(command,), daemon=True)
        recorder.start()
        result = start_wrk(
            server.url + body.route, body.content, 16, args.seconds, 2, body.content_type
        ).result()
        recorder.join(timeout=60)
    print(f"{args.route} {settings}: {result}; flame graph in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
