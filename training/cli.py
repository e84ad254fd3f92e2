"""Command line for every area: shared flags here, area flags and the run in each area's
``TrainingArea`` (``training/<area>/train.py``, collected by ``training.areas``)."""

from __future__ import annotations

import argparse
import sys
import time

from training.areas import FULL_PRESET, TrainingError, training_areas


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per declared area."""
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Train, evaluate, export and register a model."
    )
    subcommands = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    for area in training_areas().values():
        sub = subcommands.add_parser(area.name, help=area.summary)
        sub.add_argument(
            "--preset",
            choices=sorted(area.presets),
            default=FULL_PRESET,
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
        area.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one area's training and print a one-line summary: exit 0, or 1 with the reason
    when the run fails for a known cause (``TrainingError``)."""
    args = build_parser().parse_args(argv)
    if args.register is None:
        args.register = args.preset == FULL_PRESET
    started = time.perf_counter()
    try:
        summary = training_areas()[args.area].run(args)
    except TrainingError as exc:
        print(f"training {args.area} preset={args.preset} failed: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(
        f"training {args.area} preset={args.preset} seed={args.seed}: {summary} in {seconds:.1f}s",
        flush=True,
    )
    return 0
