"""``python -m training.ensure``: train the full preset of every area whose models are not all
in the model store (areas in dependency order); exit 1 when a training fails."""

from __future__ import annotations

import argparse

from core.model_store import stored_model_exists
from training.areas import FULL_PRESET, TrainingArea, training_areas
from training.cli import main as train


def missing_areas() -> list[TrainingArea]:
    """Areas with at least one model missing from the BentoML model store."""
    return [
        area
        for area in training_areas().values()
        if not all(stored_model_exists(f"{model}:latest") for model in area.models)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ensure", description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for area in missing_areas():
        print(f"models of {area.name!r} missing from the store: training the full preset")
        quiet = ["--quiet"] if args.quiet else []
        if train([area.name, "--preset", FULL_PRESET, *quiet]) != 0:
            print(f"training {area.name!r} failed; the other areas' models are unchanged")
            return 1
    models = [model for area in training_areas().values() for model in area.models]
    print(f"models present: {', '.join(models)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
