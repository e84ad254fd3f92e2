"""How much of its preset a run trained. A preset trains what it says (its epochs or steps) on
any machine, however slow or busy; only an explicit ``--time-guard`` may cut a run short, and
then the version says so: ``under_trained`` in its metadata (``/v1/models``), the report and the
one-line summary."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Completion:
    """``done`` of the ``planned`` ``unit`` (``"epochs"`` or ``"steps"``)."""

    unit: str
    planned: int
    done: int

    @property
    def complete(self) -> bool:
        return self.done >= self.planned

    def as_metadata(self) -> dict[str, Any]:
        """What the stored model's ``training`` entry and the report carry."""
        return {
            "completion": {"unit": self.unit, "planned": self.planned, "done": self.done},
            "under_trained": not self.complete,
        }

    def summary(self) -> str:
        """``""`` when complete; otherwise a loud suffix for the one-line summary."""
        if self.complete:
            return ""
        return f" UNDER-TRAINED: {self.done} of {self.planned} {self.unit} (--time-guard)"


def add_time_guard_argument(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--time-guard SECONDS``: off unless given."""
    parser.add_argument(
        "--time-guard",
        type=float,
        default=None,
        help=f"stop after this many seconds of training (at the next {unit[:-1]}) and register "
        f"the version marked under-trained (default: none, the preset's {unit} run in full)",
    )


def guard_reached(args: argparse.Namespace, elapsed_s: float) -> bool:
    """Whether ``--time-guard`` (when given) has run out; callers ask after the first step or
    epoch, so a guarded run trains at least one."""
    return args.time_guard is not None and elapsed_s >= args.time_guard
