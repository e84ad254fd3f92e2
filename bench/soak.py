"""``python -m bench.soak``: every route at half the service's capacity for ten minutes;
memory and file descriptors must not grow.

Serves every model of the store on 127.0.0.1 with the service's defaults (one worker per CPU,
the store polled for new versions). Then:

1. **Capacity:** each stream (a route and one request body, the list below) is driven alone,
   closed-loop, with wrk at 16 connections for ``--probe-seconds``.
2. **Pacing:** all streams at once, each offered ``--load / streams`` of its own capacity, so
   the shares add up to ``--load`` of what the service can do (half by default). wrk cannot
   hold a rate; each connection waits a fixed delay after every answer instead, and a
   calibration pass (``--calibrate-seconds``) and the warm-up (``--warmup-seconds``) each
   correct the delays for the latency the answers showed.
3. **Soak:** ``--seconds`` at that pace, sampling every
   process of the server (arbiter and workers) every ``--sample-seconds``: resident memory,
   open file descriptors, threads.

The verdict compares the median over the soak's first minute (after warm-up: allocator pools
and caches filled) with the median over its last minute: memory may grow less than
``--max-growth`` (10%), file descriptors not at all beyond ``--fd-slack``, and no worker may
have been replaced. Prints a one-line progress, then the figures; writes them as JSON; exits 1
when a limit is passed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from bench.workloads import Body, image_upload, v2_body
from bench.wrk import WrkResult, start_wrk
from core.progress import progress_bar
from harness.images import encode, load_test_images
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.areas import fraud
from service.cpus import available_cpus

PERIOD_MS = 25  # each connection's target time between requests: sets the connection count


@dataclass(frozen=True)
class Stream:
    """One route driven with one body; ``status`` is the answer every request must get."""

    label: str
    body: Body
    status: int = 200


def streams() -> list[Stream]:
    """Every public route with a typical body, and one refused request (the error path)."""
    one = transactions(1)
    png = encode(load_test_images(1)[0][0])
    invalid = [{**one[0], "amount": -1.0}]
    twenty = fraud.to_arrays([fraud.Transaction(**row) for row in transactions(20)])

    def posted(route: str, body: dict) -> Body:
        return Body(route, json.dumps(body).encode())

    return [
        Stream("fraud, 1 transaction", posted("/v1/fraud/score", {"transactions": one})),
        Stream("fraud V2, 20 transactions", v2_body(fraud.MODEL, twenty)),
        Stream("image upload, 1 PNG", image_upload(png)),
        Stream("sentiment GRU, 1 text", posted("/v1/sentiment", {"texts": ["a fine film"]})),
        Stream(
            "sentiment transformer, 1 text",
            posted("/v1/sentiment", {"texts": ["a dull film"], "model": "transformer"}),
        ),
        Stream(
            "completion, 16 characters",
            posted("/v1/completions", {"prompt": "ROMEO:", "max_tokens": 16, "seed": 1}),
        ),
        Stream("image generation, 1", posted("/v1/images/generate", {"class_id": 3, "seed": 1})),
        Stream("fraud, refused (400)", posted("/v1/fraud/score", {"transactions": invalid}), 400),
    ]


@dataclass(frozen=True)
class Pace:
    """How one stream is offered a rate: ``connections`` each waiting ``delay_ms``."""

    connections: int
    delay_ms: int

    @classmethod
    def for_rate(cls, rate: float, latency_ms: float = 0.0) -> Pace:
        """The pace offering about ``rate`` requests/s when answers take ``latency_ms``."""
        connections = max(1, round(rate * PERIOD_MS / 1000))
        return cls(connections, max(1, round(connections * 1000 / rate - latency_ms)))

    def corrected(self, rate: float, achieved: float) -> Pace:
        """The pace that offers ``rate`` once the latency this pace showed (it achieved
        ``achieved`` requests/s) is taken into account."""
        latency_ms = max(0.0, self.connections * 1000 / max(achieved, 1e-9) - self.delay_ms)
        return Pace(self.connections, max(1, round(self.connections * 1000 / rate - latency_ms)))


@dataclass(frozen=True)
class Sample:
    """The server's processes at one moment."""

    at_s: float
    rss_mb: float
    fds: int
    threads: int
    pids: tuple[int, ...]


def sample(server: LocalServer, started: float) -> Sample:
    """Resident memory, open files and threads summed over the server's processes."""
    root = psutil.Process(server.process.pid)
    rss = fds = threads = 0
    pids = []
    for process in (root, *root.children(recursive=True)):
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                fds += process.num_fds()
                threads += process.num_threads()
            pids.append(process.pid)
        except psutil.NoSuchProcess:
            continue
    return Sample(time.monotonic() - started, rss / 1e6, fds, threads, tuple(sorted(pids)))


@dataclass(frozen=True)
class Verdict:
    """The first and last minute of the soak compared; ``passed`` when within the limits."""

    memory_first_mb: float
    memory_last_mb: float
    memory_growth: float
    fds_first: int
    fds_last: int
    workers_replaced: bool
    passed: bool


def judge(samples: list[Sample], window_s: float, max_growth: float, fd_slack: int) -> Verdict:
    """Compare the medians of the first and last ``window_s`` seconds of ``samples``."""
    end = samples[-1].at_s
    first = [s for s in samples if s.at_s - samples[0].at_s <= window_s]
    last = [s for s in samples if end - s.at_s <= window_s]
    memory_first = statistics.median(s.rss_mb for s in first)
    memory_last = statistics.median(s.rss_mb for s in last)
    fds_first = max(s.fds for s in first)
    fds_last = max(s.fds for s in last)
    growth = memory_last / memory_first - 1
    replaced = len({s.pids for s in samples}) > 1
    return Verdict(
        round(memory_first, 1),
        round(memory_last, 1),
        round(growth, 4),
        fds_first,
        fds_last,
        replaced,
        growth < max_growth and fds_last <= fds_first + fd_slack and not replaced,
    )


class Sampler(threading.Thread):
    """Samples the server every ``interval`` seconds until ``stop`` is set."""

    def __init__(self, server: LocalServer, interval: float, seconds: float, quiet: bool):
        super().__init__(daemon=True)
        self.server, self.interval, self.seconds, self.quiet = server, interval, seconds, quiet
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with progress_bar(round(self.seconds), "soak", self.quiet, unit="s") as bar:
            while not self.stop.wait(self.interval):
                now = sample(self.server, started)
                self.samples.append(now)
                bar.update(min(round(now.at_s), bar.total) - bar.n)
                bar.set_postfix_str(f"RSS {now.rss_mb:.0f} MB, {now.fds} fds")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=int, default=600, help="length of the soak")
    parser.add_argument("--load", type=float, default=0.5, help="share of capacity offered")
    parser.add_argument("--probe-seconds", type=int, default=8, help="capacity run per stream")
    parser.add_argument("--calibrate-seconds", type=int, default=15, help="pacing check run")
    parser.add_argument("--warmup-seconds", type=int, default=60, help="paced, not judged")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="sampling interval")
    parser.add_argument("--window-seconds", type=float, default=60.0, help="minute compared")
    parser.add_argument("--max-growth", type=float, default=0.10, help="memory growth limit")
    parser.add_argument("--fd-slack", type=int, default=0, help="file descriptors allowed more")
    parser.add_argument(
        "--workers", type=int, default=available_cpus(), help="BentoML workers (the default)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--out", type=Path, default=Path("reports/bench/soak.json"), help="figures (JSON)"
    )
    return parser.parse_args(argv)


def drive(
    server: LocalServer, paced: dict[str, tuple[Stream, Pace]], seconds: int
) -> dict[str, WrkResult]:
    """Every stream at its pace at once for ``seconds``; wrk's figures by label."""
    runs = {
        label: start_wrk(
            server.url + stream.body.route,
            stream.body.content,
            pace.connections,
            seconds,
            content_type=stream.body.content_type,
            delay_ms=pace.delay_ms,
        )
        for label, (stream, pace) in paced.items()
    }
    return {label: run.result() for label, run in runs.items()}


def check_streams(server: LocalServer, chosen: list[Stream]) -> None:
    """Raise unless each stream's request gets the status it must get."""
    for stream in chosen:
        answer = httpx.post(
            server.url + stream.body.route,
            content=stream.body.content,
            headers={"content-type": stream.body.content_type},
            timeout=60,
        )
        if answer.status_code != stream.status:
            raise RuntimeError(f"{stream.label}: {answer.status_code} {answer.text[:300]}")


def unexpected(stream: Stream, result: WrkResult) -> int:
    """Answers other than the stream's status, as far as wrk tells them apart."""
    wrong = result.non_2xx if stream.status < 300 else result.requests - result.non_2xx
    return wrong + result.socket_errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {
        "DLSERVE_WORKERS": str(args.workers),
        "DLSERVE_PROVIDER": "cpu",
        "DLSERVE_MODEL_POLL_S": "10",  # the default, which test servers turn off
    }
    chosen = streams()
    with LocalServer(env) as server:
        server.wait("/readyz", timeout=180)
        check_streams(server, chosen)
        capacity = {}
        for stream in chosen:
            result = start_wrk(
                server.url + stream.body.route,
                stream.body.content,
                16,
                args.probe_seconds,
                content_type=stream.body.content_type,
            ).result()
            capacity[stream.label] = result.requests_per_second
            print(f"capacity {stream.label}: {result.requests_per_second:,.1f} req/s", flush=True)
        targets = {s.label: capacity[s.label] * args.load / len(chosen) for s in chosen}
        paced = {s.label: (s, Pace.for_rate(targets[s.label])) for s in chosen}
        for seconds in (args.calibrate_seconds, args.warmup_seconds):
            trial = drive(server, paced, seconds)
            paced = {
                label: (stream, pace.corrected(targets[label], trial[label].requests_per_second))
                for label, (stream, pace) in paced.items()
            }
        idle = sample(server, time.monotonic())
        sampler = Sampler(server, args.sample_seconds, args.seconds, args.quiet)
        sampler.start()
        soaked = drive(server, paced, args.seconds)
        sampler.stop.set()
        sampler.join()
    verdict = judge(sampler.samples, args.window_seconds, args.max_growth, args.fd_slack)
    rows = []
    for label, (stream, pace) in paced.items():
        result = soaked[label]
        rows.append(
            {
                "stream": label,
                "capacity_rps": round(capacity[label], 1),
                "target_rps": round(targets[label], 2),
                "offered_rps": round(result.requests_per_second, 2),
                "share_of_capacity": round(result.requests_per_second / capacity[label], 4),
                "pace": asdict(pace),
                "requests": result.requests,
                "unexpected_answers": unexpected(stream, result),
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
            }
        )
    load = sum(row["share_of_capacity"] for row in rows)
    figures = {
        "seconds": args.seconds,
        "workers": args.workers,
        "load": round(load, 3),
        "streams": rows,
        "after_warmup": asdict(idle),
        "verdict": asdict(verdict),
        "samples": [asdict(s) for s in sampler.samples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    for row in rows:
        print(
            f"{row['stream']}: {row['offered_rps']:,.1f} req/s "
            f"({row['share_of_capacity']:.1%} of {row['capacity_rps']:,.0f}), "
            f"{row['requests']:,} requests, {row['unexpected_answers']} unexpected, "
            f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms"
        )
    print(
        f"load {load:.1%} of capacity for {args.seconds} s on {args.workers} worker(s): "
        f"memory {verdict.memory_first_mb:,.1f} -> {verdict.memory_last_mb:,.1f} MB "
        f"({verdict.memory_growth:+.1%}, limit {args.max_growth:.0%}), "
        f"file descriptors {verdict.fds_first} -> {verdict.fds_last}, "
        f"workers replaced: {verdict.workers_replaced}: "
        f"{'PASSED' if verdict.passed else 'FAILED'}"
    )
    unexpected_total = sum(row["unexpected_answers"] for row in rows)
    return 0 if verdict.passed and unexpected_total == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
