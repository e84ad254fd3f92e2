"""A progress bar for long loops (training epochs, batch scoring); torch-free."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, description: str, quiet: bool, unit: str = "step") -> tqdm:
    """A bar showing steps done, rate and time left (on stderr); silent when ``quiet``."""
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
    )
