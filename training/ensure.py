"""``python -m training.ensure``: train the full preset of each default model not in the store."""

from __future__ import annotations

import argparse

import bentoml

from training.cli import main as train

DEFAULT_MODELS = {
    "fraud": "fraud-scorer:latest",
    "image": "image-classifier:latest",
    # One sentiment run trains and registers both sentiment-rnn and sentiment-transformer.
    "sentiment": "sentiment-transformer:latest",
}


def missing_areas() -> list[str]:
    """Areas whose served model is not in the BentoML model store."""
    missing = []
    for area, tag in DEFAULT_MODELS.items():
        try:
            bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            missing.append(area)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ensure", description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for area in missing_areas():
        print(f"model for {area!r} missing from the store: training the full preset", flush=True)
        if train([area, "--preset", "full", *(["--quiet"] if args.quiet else [])]) != 0:
            return 1
    print(f"models present: {', '.join(DEFAULT_MODELS.values())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
