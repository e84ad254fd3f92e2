"""Embeddings area: OpenAI's embeddings API over the pre-trained all-MiniLM-L6-v2.

``POST /v1/embeddings`` takes OpenAI's request (``model``, ``input`` as one text or a list,
``encoding_format`` ``float`` or ``base64``, ``dimensions``, ``user``) and answers OpenAI's list
of embedding objects with its usage, so the official ``openai`` client works unchanged. Errors
use OpenAI's error body (``service.openai_errors``).

Each text is tokenised with the tokenizer stored beside the model (truncated at its
``max_tokens``, 256, as sentence-transformers does), the micro-batcher joins concurrent
requests' texts into one call, and the graph gives the mean-pooled, L2-normalised vector of
each text. ``dimensions`` is honoured by keeping the first ``dimensions`` values and
normalising them again (the model was not trained for shortened vectors, so they rank less
well than the full ones). ``usage.prompt_tokens`` counts the tokens the model read, special
tokens included. Texts follow ``/v1/sentiment``'s rules; token-id inputs are refused.
Batch jobs embed a ``text`` column into a Parquet column of vectors.
"""

from __future__ import annotations

import base64
import functools
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator
from starlette.responses import JSONResponse

from service.abandon import unless_client_leaves, until_client_leaves
from service.area import (
    Area,
    BatchAdapter,
    Endpoint,
    ModelSpec,
    ReadyModel,
    ServedModels,
    TensorInputs,
    rehearse_batched,
)
from service.areas.sentiment import (
    MAX_CHARACTERS,
    TEXT_COLUMN,
    Text,
    check_tokens,
    encode_texts,
    stored_encoder,
    token_budget,
    validate_texts,
)
from service.batching import Arrays, concatenate_padded
from service.errors import ErrorAnswer, RequestInputError, error_response, field_error
from service.model_contract import ModelMetadata
from service.openai_errors import OPENAI_ERROR_SCHEMA, one_or_list, openai_error

MODEL = "text-embedder"
ROUTE = "/v1/embeddings"
OUTPUT = "sentence_embedding"
MAX_INPUTS = 256
MAX_DIMENSIONS = 4096  # far above any stored model's: the model's own size names the rule


Inputs = one_or_list(
    Text,
    MAX_INPUTS,
    f"one text or a list of 1 to {MAX_INPUTS}, each 1 to {MAX_CHARACTERS} characters and not "
    "only whitespace, control, format or combining characters; longer than the model's "
    "max_tokens is truncated",
)


class EmbedderMetadata(ModelMetadata):
    """What the embeddings route reads of a stored model: ``max_tokens`` (truncation),
    ``dimensions`` (the vectors' size), token ids and mask in, ``sentence_embedding`` out."""

    max_tokens: int = Field(strict=True, ge=1, le=100_000)
    dimensions: int = Field(strict=True, ge=1, le=MAX_DIMENSIONS)

    @model_validator(mode="after")
    def _fits_the_route(self) -> EmbedderMetadata:
        if self.input_names() != ["input_ids", "attention_mask"]:
            raise ValueError(f"takes {self.input_names()}, not [input_ids, attention_mask]")
        if OUTPUT not in self.output_names():
            raise ValueError(f"gives {self.output_names()}, not {OUTPUT}")
        return self


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """OpenAI's embeddings answer."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def shortened(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` values of each vector, normalised again to unit length (all of
    them, unchanged, when ``None``)."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def encoded(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    """Each vector as JSON floats, or as base64 of its little-endian float32 bytes."""
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    return vectors.tolist()


def answer(
    vectors: np.ndarray, tokens: int, encoding_format: str = "float", dimensions: int | None = None
) -> dict[str, Any]:
    """The route's answer to the graph's vectors and the tokens read."""
    data = encoded(shortened(vectors, dimensions), encoding_format)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": embedding}
            for index, embedding in enumerate(data)
        ],
        "model": MODEL,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def check_dimensions(ready: ReadyModel | None, dimensions: int | None) -> None:
    """``dimensions`` at most the model's own size (RequestInputError)."""
    size = ready.contract.dimensions if ready is not None else MAX_DIMENSIONS
    if dimensions is not None and dimensions > size:
        raise RequestInputError(
            ["dimensions"],
            f"at most {size}, the model's embedding size; {dimensions} requested",
            "less_than_equal",
        )


async def embed(
    models: ServedModels,
    model: Annotated[str, Field(max_length=256, description=f"the embedder's name ({MODEL})")],
    input: Inputs,
    ctx: bentoml.Context,
    encoding_format: Literal["float", "base64"] = "float",
    dimensions: Annotated[
        int | None,
        Field(strict=True, ge=1, le=MAX_DIMENSIONS, description="at most the model's size"),
    ] = None,
    user: Annotated[str | None, Field(max_length=256)] = None,
) -> EmbeddingResponse:
    """OpenAI-compatible embeddings of one text or a list of texts."""
    if model != MODEL:
        message = f"The model `{model}` does not exist"
        detail = [field_error(["model"], message, "model_not_found")]
        raise ErrorAnswer(error_response(404, message, detail))
    texts = [input] if isinstance(input, str) else input
    ready = models.ready(MODEL)
    check_dimensions(ready, dimensions)
    # Without a ready model there is no encoder: ``predict`` answers why (404 or 503).
    encode = ready.companion.encode if ready else lambda texts: ({}, [])
    arrays, _ = await unless_client_leaves(ctx.request, lambda stop: encode(texts))
    tokens = int(arrays["attention_mask"].sum()) if arrays else 0
    ready, outputs = await until_client_leaves(ctx.request, models.predict(MODEL, arrays))
    return JSONResponse(answer(outputs[OUTPUT], tokens, encoding_format, dimensions))


def rehearse(ready: ReadyModel) -> None:
    """A sample text through the model's tokenizer, the graph and the route's answer (both
    encodings); the vector must be of the stored size and unit length."""
    arrays, _ = ready.companion.encode(["A sentence to embed."])
    check_tokens(arrays, ready)

    def checked_answer(ready: ReadyModel, outputs: Arrays) -> dict[str, Any]:
        vectors = outputs[OUTPUT]
        if vectors.shape != (1, ready.contract.dimensions):
            raise ValueError(f"{OUTPUT} has shape {vectors.shape}")
        if not np.isclose(np.linalg.norm(vectors), 1.0, atol=1e-4):
            raise ValueError(f"{OUTPUT} is not of unit length")
        answer(vectors, 1, "base64")
        return answer(vectors, 1)

    rehearse_batched(ready, arrays, checked_answer)


def to_columns(outputs: Arrays) -> dict[str, Any]:
    """Batch jobs: each text's vector as one fixed-size list of float32 (``embedding``)."""
    vectors = np.ascontiguousarray(outputs[OUTPUT], dtype=np.float32)
    values = pa.array(vectors.reshape(-1))
    return {"embedding": pa.FixedSizeListArray.from_arrays(values, vectors.shape[1])}


AREA = Area(
    name="embeddings",
    description="sentence embeddings (pre-trained all-MiniLM-L6-v2), OpenAI-compatible",
    models=(
        ModelSpec(
            MODEL,
            contract=EmbedderMetadata,
            prepare=functools.partial(stored_encoder, area="embeddings"),
            rehearse=rehearse,
            join=concatenate_padded,
            tensors=TensorInputs(max_rows=MAX_INPUTS, check=check_tokens),
            budget=token_budget("input"),
        ),
    ),
    endpoints=(
        Endpoint(
            ROUTE, embed, models=(MODEL,), errors=openai_error, error_schema=OPENAI_ERROR_SCHEMA
        ),
    ),
    batch=(
        BatchAdapter(
            model=MODEL,
            input_columns=(TEXT_COLUMN,),
            validate=lambda table, ready: validate_texts(table),
            encode=encode_texts,
            to_columns=lambda outputs, ready: to_columns(outputs),
            batch_size=256,  # as the sentiment transformer's: same encoder, same memory per row
            csv_output=False,
        ),
    ),
)
