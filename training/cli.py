"""Command line for every area: shared flags here, area flags in each area's ``train`` module.

An area module provides ``PRESETS`` (name -> preset; ``full`` trains the served model),
``add_arguments(parser)`` for its own flags, and ``run(args) -> str``: it trains, writes its
report and returns the headline numbers for the one-line summary.
"""

from __future__ import annotations

import argparse
import importlib
import time
from types import ModuleType

AREAS = {
    "fraud": "training.fraud.train",
    "image": "training.image.train",
    "sentiment": "training.sentiment.train",
    "gan": "training.gan.train",
}


def _area_module(area: str) -> ModuleType:
    return importlib.import_module(AREAS[area])


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per area."""
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Train, evaluate, export and register a model."
    )
    areas = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    for area in AREAS:
        module = _area_module(area)
        sub = areas.add_parser(area, help=(module.__doc__ or area).strip().splitlines()[0])
        sub.add_argument(
            "--preset",
            choices=sorted(module.PRESETS),
            default="full",
            help="size of the run: 'smoke' takes seconds, 'full' makes the served "
            "model (default: full)",
        )
        sub.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="train one batch per model and stop before export and reports",
        )
        sub.add_argument(
            "--quiet",
            action="store_true",
            help="no progress bars (for logs); the summary line still prints",
        )
        sub.add_argument(
            "--register",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="store the exported model(s) in the BentoML model store "
            "(default: only for the full preset, so a smoke run never replaces a served model)",
        )
        module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one area's training; print a one-line summary; return the exit code."""
    args = build_parser().parse_args(argv)
    if args.register is None:
        args.register = args.preset == "full"
    started = time.perf_counter()
    summary = _area_module(args.area).run(args)
    seconds = time.perf_counter() - started
    print(
        f"training {args.area} preset={args.preset} seed={args.seed}: {summary} in {seconds:.1f}s",
        flush=True,
    )
    return 0
