"""What a stored model's ``metadata.json`` must hold before its version serves: one pydantic
schema per area (``ModelSpec.contract``), extending ``ModelMetadata``.

A contract lists every key the area's routes, batch adapters and ``/v2`` read from the metadata
while answering (the fraud decision threshold, the generator's ``noise_dim``, the labels, ...),
typed and bounded, plus the checks that the stored model fits the routes (its inputs, outputs
and labels). A version whose metadata breaks its contract is refused at load, with every
problem named (``validate_metadata``); the routes read the validated contract
(``ReadyModel.contract``), never a raw key, so a key a request reads cannot be missing.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.model_store import ModelUnavailableError
from service.tensors import NAMES

Contract = TypeVar("Contract", bound="ModelMetadata")
Axis = Annotated[int, Field(strict=True, ge=1)] | Annotated[str, Field(min_length=1)]


class TensorSpec(BaseModel):
    """One graph input or output: its name, numpy dtype and shape (a named axis varies)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    dtype: str
    shape: list[Axis]

    @field_validator("dtype")
    @classmethod
    def _numeric_dtype(cls, dtype: str) -> str:
        try:
            known = np.dtype(dtype) in NAMES
        except TypeError:
            known = False
        if not known:
            raise ValueError(f"{dtype!r} is not a tensor datatype ({sorted(map(str, NAMES))})")
        return dtype


class ModelMetadata(BaseModel):
    """What every served model's metadata holds: what ``/v1/models`` and ``/v2`` read of it.
    Other keys are kept (``ReadyModel.metadata``) but no route reads them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: str
    task: str
    sha256: str
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    labels: list[str] = []

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def validate_metadata(contract: type[Contract], metadata: dict[str, Any], tag: str) -> Contract:
    """``metadata`` as ``contract``; ``ModelUnavailableError`` naming every missing or broken
    key (``decision.threshold: Field required``) when it does not fit."""
    try:
        return contract.model_validate(metadata)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'metadata'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ModelUnavailableError(
            f"model {tag!r}: metadata.json does not fit the routes' contract "
            f"({contract.__name__}): {problems}; re-register the model"
        ) from None
