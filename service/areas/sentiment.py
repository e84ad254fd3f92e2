"""Sentiment area: ``POST /v1/sentiment``, tokenisation with each model's stored tokenizer,
the answer, and the batch adapters.

Two models answer ``POST /v1/sentiment``: ``rnn`` (bidirectional GRU) and ``transformer``
(fine-tuned MiniLM). A request may name one; otherwise the ready model with the higher stored
test accuracy answers. Each batch is padded to its longest text, never to the model's maximum;
``truncated`` marks texts longer than the model's ``max_tokens``. A request's tokens (texts x
its longest text) and a micro-batch's are bounded by ``DLSERVE_MAX_REQUEST_TOKENS`` and
``DLSERVE_MAX_BATCH_TOKENS``. Batch jobs score a ``text``
column with the same rules and encoding.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator
from starlette.responses import JSONResponse

from core.model_store import LoadedModel, ModelUnavailableError
from core.text_encoding import TOKENIZER_FILE, TextEncoder
from service.abandon import unless_client_leaves, until_client_leaves
from service.area import (
    Area,
    BatchAdapter,
    Budget,
    ClassOutput,
    Endpoint,
    ModelSpec,
    ReadyModel,
    ServedModels,
    TensorInputs,
    rehearse_batched,
)
from service.batching import Arrays, concatenate_padded, sequence_length
from service.errors import RequestInputError
from service.model_contract import ModelMetadata
from service.served_model import ModelReference, reference

ROUTE = "/v1/sentiment"
MAX_TEXTS = 256
MAX_CHARACTERS = 5000
STORE_NAMES = {"transformer": "sentiment-transformer", "rnn": "sentiment-rnn"}
LABELS = ("negative", "positive")
TEXT_COLUMN = "text"


NO_CONTENT = (
    "must not be empty or whitespace-only, nor only control, format or combining characters "
    "(the tokenizer's normalisation would leave nothing to read)"
)
# A character the tokenizers' normalisation keeps (BERT's: control and format characters and
# U+FFFD dropped, accents stripped): not whitespace, not a control, format, private-use or
# unassigned character (Unicode C*), not a combining mark (Mn). In RE2, for batch columns:
CONTENT_CHARACTER = r"[^\p{Z}\p{C}\p{Mn}\x{FFFD}\t\n\v\f\r]"


def has_content(text: str) -> bool:
    """Whether ``text`` holds a character that survives normalisation (``CONTENT_CHARACTER``)."""
    return any(
        character != "\ufffd"
        and not character.isspace()
        and (category := unicodedata.category(character))[0] not in "ZC"
        and category != "Mn"
        for character in text
    )


def _not_blank(text: str) -> str:
    if not has_content(text):
        raise ValueError(f"text {NO_CONTENT}")
    return text


Text = Annotated[
    str,
    Field(strict=True),
    StringConstraints(max_length=MAX_CHARACTERS),
    AfterValidator(_not_blank),
]
Texts = Annotated[
    list[Text],
    Field(
        min_length=1,
        max_length=MAX_TEXTS,
        description=f"1 to {MAX_TEXTS} review texts, each 1 to {MAX_CHARACTERS} characters "
        "and not only whitespace, control, format or combining characters",
    ),
]
ModelChoice = Annotated[
    Literal["rnn", "transformer"] | None,
    Field(description="which model answers (default: the more accurate one)"),
]


class SentimentResult(BaseModel):
    label: Literal["negative", "positive"]
    probability: float = Field(description="the model's probability of the returned label")
    truncated: bool = Field(description="the text had more tokens than the model's maximum")


class SentimentResponse(BaseModel):
    model: ModelReference
    results: list[SentimentResult]


class HeadlineMetrics(BaseModel):
    test_accuracy: float = Field(ge=0, le=1, allow_inf_nan=False)


class SentimentMetadata(ModelMetadata):
    """What the sentiment route reads of a stored model: ``max_tokens`` (truncation), its test
    accuracy (which model answers by default), the labels ``negative, positive``, token ids
    and mask in, ``positive_probability`` out."""

    max_tokens: int = Field(strict=True, ge=1, le=100_000)
    headline_metrics: HeadlineMetrics

    @model_validator(mode="after")
    def _fits_the_route(self) -> SentimentMetadata:
        if self.input_names() != ["input_ids", "attention_mask"]:
            raise ValueError(f"takes {self.input_names()}, not [input_ids, attention_mask]")
        if tuple(self.labels) != LABELS:
            raise ValueError(f"has labels {self.labels}, not {list(LABELS)}")
        if "positive_probability" not in self.output_names():
            raise ValueError(f"gives {self.output_names()}, not positive_probability")
        return self


def stored_encoder(model: LoadedModel, area: str = "sentiment") -> TextEncoder:
    """The tokenizer stored beside a model, with the model's ``max_tokens`` (its contract
    holds); ``area``: the training sub-command that registers the model."""
    try:
        return TextEncoder.from_file(model.directory / TOKENIZER_FILE, model.metadata["max_tokens"])
    except Exception as exc:  # missing file or key; tokenizers raises plain Exception
        raise ModelUnavailableError(
            f"model {model.name!r} has no usable {TOKENIZER_FILE} or max_tokens "
            f"({type(exc).__name__}); re-train and register it with `python -m training {area}`"
        ) from exc


def default_model(models: ServedModels) -> str:
    """The request name of the ready model with the best stored test accuracy."""

    def accuracy(choice: str) -> float:
        ready = models.ready(STORE_NAMES[choice])
        if ready is None:
            return -1.0
        return ready.contract.headline_metrics.test_accuracy

    return max(STORE_NAMES, key=accuracy)  # ties and no ready model: "transformer"


def counted_model(models: ServedModels, body: dict[str, Any] | None) -> str:
    """The model a request is counted under: the one it names, else the default (as
    ``classify`` picks it)."""
    choice = (body or {}).get("model")
    named = isinstance(choice, str) and choice in STORE_NAMES
    return STORE_NAMES[choice if named else default_model(models)]


def label_index(outputs: Arrays) -> np.ndarray:
    """P(positive) per text -> the index of its label in ``LABELS`` (positive from 0.5)."""
    return (outputs["positive_probability"].astype(np.float64) >= 0.5).astype(np.int64)


def to_columns(outputs: Arrays) -> dict[str, np.ndarray]:
    """P(positive) per text -> ``label`` and the ``probability`` of that label, as arrays."""
    positive = outputs["positive_probability"].astype(np.float64)
    index = label_index(outputs)
    return {
        "label": np.asarray(LABELS, dtype=object)[index],
        "probability": np.where(index == 1, positive, 1.0 - positive),
    }


def to_results(outputs: Arrays, truncated: list[bool]) -> list[dict[str, Any]]:
    """P(positive) per text -> label, probability of that label, truncated flag; in order."""
    columns = to_columns(outputs)
    return [
        {"label": label, "probability": probability, "truncated": cut}
        for label, probability, cut in zip(
            columns["label"].tolist(), columns["probability"].tolist(), truncated, strict=True
        )
    ]


def validate_texts(table: pa.Table) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Batch jobs: the ``text`` column -> the texts and, per row, ``None`` or why the row is
    refused, by the request's rules (a string of 1 to MAX_CHARACTERS characters with content,
    ``has_content``)."""
    rows = table.num_rows
    reasons = np.full(rows, None, dtype=object)
    column = table.column(TEXT_COLUMN) if TEXT_COLUMN in table.column_names else None
    if column is None or not (
        pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    ):
        reasons[:] = (
            "text: column is missing"
            if column is None
            else "text: missing"
            if pa.types.is_null(column.type)
            else "text: must be a string"
        )
        return {TEXT_COLUMN: np.full(rows, "", dtype=object)}, reasons
    lengths = pc.fill_null(pc.utf8_length(column), 0).to_numpy()
    content = pc.match_substring_regex(column, CONTENT_CHARACTER)
    blank = pc.invert(pc.fill_null(content, False)).to_numpy(zero_copy_only=False)
    reasons[lengths > MAX_CHARACTERS] = f"text: at most {MAX_CHARACTERS} characters"
    reasons[blank] = f"text: {NO_CONTENT}"
    reasons[pc.is_null(column).to_numpy(zero_copy_only=False)] = "text: missing"
    return {TEXT_COLUMN: column.to_numpy(zero_copy_only=False)}, reasons


def encode_texts(
    columns: dict[str, np.ndarray], ready: ReadyModel
) -> tuple[Arrays, dict[str, np.ndarray]]:
    """Batch jobs: valid texts -> the graph's inputs (the route's encoder) and ``truncated``."""
    arrays, truncated = ready.companion.encode(columns[TEXT_COLUMN].tolist())
    return arrays, {"truncated": np.array(truncated, dtype=bool)}


def check_tokens(inputs: Arrays, ready: ReadyModel) -> None:
    """Open Inference Protocol inputs: ``input_ids`` in the stored tokenizer's vocabulary, at
    most the model's ``max_tokens`` per text, and an ``attention_mask`` of 0/1 covering at
    least the first token of every text (``RequestInputError`` naming the input)."""
    encoder: TextEncoder = ready.companion
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    vocabulary = encoder.tokenizer.get_vocab_size()
    if ids.shape[1] > encoder.max_tokens:
        raise RequestInputError(
            ["input_ids"],
            f"{ids.shape[1]} tokens per text; the model takes at most {encoder.max_tokens}",
            "too_many_tokens",
        )
    if ids.min() < 0 or ids.max() >= vocabulary:
        raise RequestInputError(
            ["input_ids"], f"token ids must be from 0 to {vocabulary - 1}", "unknown_token"
        )
    if ((mask != 0) & (mask != 1)).any() or not mask[:, 0].all():
        raise RequestInputError(
            ["attention_mask"],
            "values must be 0 or 1, with 1 for the first token of every text",
            "bad_mask",
        )


async def classify(
    models: ServedModels, texts: Texts, ctx: bentoml.Context, model: ModelChoice = None
) -> SentimentResponse:
    """Label 1 to 256 texts positive or negative with ``model`` (default: the best)."""
    name = STORE_NAMES[model or default_model(models)]
    ready = models.ready(name)
    # Without a ready model there is no encoder: ``predict`` answers why (404 or 503).
    # Tokenising 256 long texts takes about a second: off the event loop, and a client that
    # leaves meanwhile, or while its texts wait for inference, leaves the queue.
    encode = ready.companion.encode if ready else lambda texts: ({}, [])
    arrays, truncated = await unless_client_leaves(ctx.request, lambda stop: encode(texts))
    ready, outputs = await until_client_leaves(ctx.request, models.predict(name, arrays))
    return JSONResponse(answer(ready, outputs, truncated))


def answer(ready: ReadyModel, outputs: Arrays, truncated: list[bool]) -> dict[str, Any]:
    """The route's answer to the graph's outputs."""
    return {"model": reference(ready), "results": to_results(outputs, truncated)}


def rehearse(ready: ReadyModel) -> None:
    """A sample review through the model's tokenizer, the graph and the route's answer."""
    arrays, truncated = ready.companion.encode(["A warm, funny and moving film."])
    check_tokens(arrays, ready)
    rehearse_batched(ready, arrays, lambda ready, outputs: answer(ready, outputs, truncated))


def token_budget(field: str) -> Budget:
    """A token-sequence model's request and call budget; ``field`` carries the texts."""
    return Budget(
        unit="tokens",
        width=sequence_length("input_ids"),
        loc=(field,),
        counted="texts x the longest text's tokens, at most the model's max_tokens each",
    )


# Confident reviews crowd both ends: fine buckets at 0 and at 1.
SCORE_BUCKETS = (
    *(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0),
)


AREA = Area(
    name="sentiment",
    description="sentiment of review texts (bidirectional GRU, fine-tuned MiniLM)",
    models=tuple(
        ModelSpec(
            store_name,
            contract=SentimentMetadata,
            prepare=stored_encoder,
            rehearse=rehearse,
            score_output="positive_probability",
            score_buckets=SCORE_BUCKETS,
            class_output=ClassOutput(label_index, lambda ready: LABELS),
            join=concatenate_padded,
            tensors=TensorInputs(max_rows=MAX_TEXTS, check=check_tokens),
            budget=token_budget("texts"),
        )
        for store_name in STORE_NAMES.values()
    ),
    endpoints=(
        Endpoint(ROUTE, classify, models=tuple(STORE_NAMES.values()), counted_as=counted_model),
    ),
    # The transformer first: ``--model sentiment`` means the more accurate model.
    batch=tuple(
        BatchAdapter(
            model=store_name,
            input_columns=(TEXT_COLUMN,),
            validate=lambda table, ready: validate_texts(table),
            encode=encode_texts,
            to_columns=lambda outputs, ready: to_columns(outputs),
            batch_size=256,  # padded to 128 tokens: the transformer's attention is ~200 MB/call
        )
        for store_name in STORE_NAMES.values()
    ),
)
