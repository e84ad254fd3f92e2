"""``python -m service.batch``: score a file with a served model; exit 0 clean, 3 with rejects.

Exit codes: 0 every row scored; 3 finished, some rows rejected (see the rejects file); 2 bad
arguments, input, model or resume state; 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.model_store import ModelUnavailableError
from service.batch.adapter import UnknownModelError, model_choices
from service.batch.job import JobConfig, Summary, dry_run, run_local
from service.batch.parts import ResumeMismatchError
from service.batch.readers import InputError
from service.payload_log.replay import KINDS, PAYLOAD_ROW, ROUTES, is_payload_log

EXIT_REJECTS = 3
EXIT_BAD_JOB = 2


def column_pair(text: str) -> tuple[str, str]:
    """``INPUT=COLUMN`` -> ``(INPUT, COLUMN)``; argparse reports anything else."""
    model_input, _, file_column = text.partition("=")
    if not model_input or not file_column:
        raise argparse.ArgumentTypeError(f"{text!r} is not INPUT=COLUMN (e.g. text=review)")
    return model_input, file_column


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.batch", description=__doc__)
    choices = model_choices()
    parser.add_argument(
        "--model",
        required=True,
        help=f"an area (its first model) or a model-store name: {', '.join(choices)}",
    )
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="CSV, Parquet or JSON Lines (.jsonl) file, a folder of image files, or a payload "
        "log folder (DLSERVE_PAYLOAD_LOG_DIR: its answered requests' rows, keyed payload_row)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="scores file: .parquet, or .csv; rejects go beside it as NAME.rejects.SUFFIX",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="rows per chunk and per ONNX call (default: the model's: "
        + ", ".join(sorted({f"{a.model} {a.batch_size}" for a in choices.values()}))
        + ")",
    )
    parser.add_argument(
        "--replay",
        choices=KINDS,
        default=ROUTES,
        help="which records of a payload log --input to score: routes (the area's named "
        "routes, uploads included; default) or v2 (POST /v2/models/{name}/infer: the graph's "
        "input tensors, outputs by their V2 names)",
    )
    parser.add_argument(
        "--version", default="latest", help="the stored version to score with (default: latest)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="skip chunks a killed run already committed"
    )
    parser.add_argument(
        "--id-column", help="input column copied to the output as the row key (default: row_id)"
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        type=column_pair,
        metavar="INPUT=COLUMN",
        help="read the model input INPUT from the file's column COLUMN, e.g. text=review "
        "(repeatable; default: the input's own name)",
    )
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="where to run (default: local)"
    )
    parser.add_argument(
        "--ray-address", help="Ray cluster to join (default: start a local Ray on 127.0.0.1)"
    )
    parser.add_argument(
        "--ray-actors", type=int, help="Ray actors, one ONNX session each (default: CPUs - 1)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="score the first chunk only and write nothing"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar (for logs)")
    return parser


def config_from(args: argparse.Namespace) -> JobConfig:
    return JobConfig(
        model=args.model,
        input=args.input,
        output=args.output,
        batch_size=args.batch_size,
        resume=args.resume,
        id_column=args.id_column or (PAYLOAD_ROW if is_payload_log(args.input) else None),
        quiet=args.quiet,
        column_map=tuple(args.column),
        version=args.version,
        replay=args.replay,
    )


def run(args: argparse.Namespace) -> Summary:
    """Run the job on the chosen engine."""
    config = config_from(args)
    if args.engine == "ray":
        from service.batch.ray_engine import run_ray

        return run_ray(config, args.ray_address, args.ray_actors)
    return run_local(config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        print("--batch-size must be at least 1", file=sys.stderr)
        return EXIT_BAD_JOB
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.dry_run:
            print(dry_run(config_from(args)))
            return 0
        summary = run(args)
    except (InputError, ResumeMismatchError, UnknownModelError, ModelUnavailableError) as exc:
        print(f"batch job refused: {exc}", file=sys.stderr)
        return EXIT_BAD_JOB
    print(summary.line)
    return EXIT_REJECTS if summary.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
