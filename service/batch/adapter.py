"""How a batch job finds the adapter of the model it scores: in the registry of areas.

Each area declares its ``BatchAdapter``s (``service.area``) beside its routes, with the same
validation and encoding, so the batch package has no per-model code.
"""

from __future__ import annotations

from service import registry
from service.area import BatchAdapter


class UnknownModelError(LookupError):
    """No area offers a batch adapter for the requested model."""


def model_choices() -> dict[str, BatchAdapter]:
    """What ``--model`` accepts: every area name (its first adapter) and every model name."""
    choices: dict[str, BatchAdapter] = {}
    for area in registry.all_areas().values():
        if area.batch:
            choices[area.name] = area.batch[0]
        choices.update({adapter.model: adapter for adapter in area.batch})
    return choices


def find_adapter(model: str) -> BatchAdapter:
    """The adapter for ``model``: a model-store name or an area (an area with several models:
    the first one it declares)."""
    choices = model_choices()
    if model not in choices:
        raise UnknownModelError(
            f"no batch adapter for model {model!r}; available: {sorted(choices)}"
        )
    return choices[model]
