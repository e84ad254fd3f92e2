"""``python -m training.ensure``: train every area whose models are not all in the model store,
quickest first (an area still after the areas whose models it needs), one at a time; exit 1
when a training fails.

While it runs, a status file beside the store (``core.training_status``) names the models
being trained and those waiting, so a service started meanwhile (``make serve``) shows them
as ``training``; each model is served as soon as it is registered.
"""

from __future__ import annotations

import argparse
import time

from core.model_store import stored_model_exists
from core.training_status import clear_status, write_status
from training.areas import FULL_PRESET, TrainingArea, training_areas
from training.cli import main as train


def missing_areas(names: list[str] | None = None) -> list[TrainingArea]:
    """Areas (all, or those ``names``) with a model missing from the store, quickest first."""
    areas = training_areas()
    chosen = [areas[name] for name in names] if names else list(areas.values())
    missing = [
        area
        for area in chosen
        if not all(stored_model_exists(f"{model}:latest") for model in area.models)
    ]
    return quickest_first(missing)


def quickest_first(areas: list[TrainingArea]) -> list[TrainingArea]:
    """``areas`` by ``full_minutes``, except that an area waits for the areas in the list that
    produce a model it ``needs``."""
    producer = {model: area.name for area in areas for model in area.models}

    def waits_for(area: TrainingArea) -> set[str]:
        return {producer[model] for model in area.needs if model in producer} - {area.name}

    remaining = sorted(areas, key=lambda area: area.full_minutes)
    ordered: list[TrainingArea] = []
    while remaining:
        done = {area.name for area in ordered}
        area = next(area for area in remaining if waits_for(area) <= done)
        ordered.append(area)
        remaining.remove(area)
    return ordered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ensure", description=__doc__)
    parser.add_argument("areas", nargs="*", help="only these areas (default: all)")
    parser.add_argument(
        "--preset",
        default=FULL_PRESET,
        help=f"preset to train (default {FULL_PRESET}; another one is registered too)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.areas) - set(training_areas()))
    if unknown:
        parser.error(f"unknown areas {unknown}; known: {list(training_areas())}")
    todo = missing_areas(args.areas)
    options = ["--quiet"] if args.quiet else []
    options += [] if args.preset == FULL_PRESET else ["--register"]
    try:
        for step, area in enumerate(todo, 1):
            waiting = [model for later in todo[step:] for model in later.models]
            write_status(list(area.models), waiting)
            print(
                f"[{step}/{len(todo)}] models of {area.name!r} missing from the store: training "
                f"the {args.preset} preset (full: about {area.full_minutes:g} min on 2 cores)",
                flush=True,
            )
            started = time.monotonic()
            if train([area.name, "--preset", args.preset, *options]) != 0:
                print(f"training {area.name!r} failed; the other areas' models are unchanged")
                return 1
            print(
                f"[{step}/{len(todo)}] {area.name!r} registered after "
                f"{time.monotonic() - started:.0f} s: {', '.join(area.models)}",
                flush=True,
            )
    finally:
        clear_status()
    models = [model for area in training_areas().values() for model in area.models]
    print(f"models present: {', '.join(models)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
