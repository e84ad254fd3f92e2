"""The registry of training areas: ``AREA = TrainingArea(...)`` in ``training/<area>/train.py``.

The training CLI's sub-commands, ``python -m training.ensure`` and the models the test suite
smoke-trains all come from these declarations. A new area adds its package under ``training/``
with a ``train`` module declaring ``AREA``; nothing else in ``training/`` changes.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import training

FULL_PRESET = "full"
SMOKE_PRESET = "smoke"


class TrainingError(RuntimeError):
    """A training run cannot go on (bad data, a failed parity gate, ...): the message says why.

    The CLI prints it and exits 1; anything else is a bug and keeps its traceback.
    """


@dataclass(frozen=True)
class TrainingArea:
    """How one area trains, reports, exports and registers its models.

    ``name``: the CLI sub-command. ``models``: the model-store names its ``full`` preset
    registers (what ``ensure`` looks for, what the tests smoke-train). ``presets``: preset name
    -> preset (``full`` makes the served models; ``smoke`` takes seconds, for the tests).
    ``add_arguments(parser)``: the area's own flags. ``run(args) -> summary``: trains, writes
    the report, registers when ``args.register``; raises ``TrainingError`` on a known failure.
    ``needs``: stored models that must exist first (their areas train before this one).
    ``full_minutes``: about how long the ``full`` preset takes on 2 cores (``ensure`` trains
    the quickest missing area first, so the service has something to serve soonest).
    """

    name: str
    models: tuple[str, ...]
    presets: Mapping[str, Any]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], str]
    needs: tuple[str, ...] = ()
    full_minutes: float = 60.0

    @property
    def summary(self) -> str:
        """One line for ``--help``: the first line of the ``run`` module's docstring."""
        doc = sys.modules[self.run.__module__].__doc__ or self.name
        return doc.strip().splitlines()[0]


@functools.cache
def training_areas() -> dict[str, TrainingArea]:
    """Every declared area, ordered so that an area comes after the areas it ``needs``."""
    declared = []
    for info in pkgutil.iter_modules(training.__path__):
        if info.ispkg:
            module = importlib.import_module(f"training.{info.name}.train")
            declared.append(module.AREA)
    return {area.name: area for area in in_dependency_order(declared)}


def in_dependency_order(declared: list[TrainingArea]) -> list[TrainingArea]:
    """``declared`` reordered so that each area follows the areas producing what it needs
    (otherwise in declaration order)."""
    producer = {model: area.name for area in declared for model in area.models}
    ordered: list[TrainingArea] = []
    remaining = {area.name: area for area in declared}
    while remaining:
        ready = [
            area
            for area in remaining.values()
            if all(producer.get(model) not in remaining for model in area.needs)
        ]
        if not ready:
            raise RuntimeError(f"training areas need each other: {sorted(remaining)}")
        for area in ready:
            ordered.append(remaining.pop(area.name))
    return ordered
