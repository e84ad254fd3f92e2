"""The stored generator's contract (``GeneratorMetadata``) and what the route builds from it at
load (``prepare``: the decoder and the vocabulary)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from core.model_store import LoadedModel, ModelUnavailableError
from core.text_generation import CharVocabulary, TextGenerator
from service.model_contract import ModelMetadata


@dataclass(frozen=True)
class TextCompanion:
    """What the text routes build once per loaded model."""

    generator: TextGenerator
    vocabulary: CharVocabulary


Size = Annotated[int, Field(strict=True, ge=1, le=1_000_000)]
Character = Annotated[str, StringConstraints(min_length=1, max_length=1)]


class GeneratorMetadata(ModelMetadata):
    """What the completions route and its decoder read of a stored model: the vocabulary (one
    token per character), the context length, the cache's layers, heads and head size, and
    the cache graph's inputs."""

    vocabulary: list[Character] = Field(min_length=1)
    context_length: Size
    layers: Size
    heads: Size
    head_dim: Size

    @model_validator(mode="after")
    def _fits_the_route(self) -> GeneratorMetadata:
        needed = {"input_ids", "position_ids", "attention_mask"}
        missing = needed - set(self.input_names())
        if missing or "logits" not in self.output_names():
            raise ValueError(
                f"takes {self.input_names()} without {sorted(missing)} or gives no logits: "
                "retrain with `python -m training text`"
            )
        return self


def prepare(model: LoadedModel) -> TextCompanion:
    """The decoder and the vocabulary (the contract holds: their keys are there)."""
    try:
        vocabulary = CharVocabulary.from_metadata(model.metadata)
        return TextCompanion(
            TextGenerator(partial(model.run, release_arena=False), model.metadata), vocabulary
        )
    except ValueError as exc:  # repeated characters, a graph without its cache inputs
        raise ModelUnavailableError(f"model {model.name!r}: {exc}") from exc
