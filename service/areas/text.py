"""Text generation area: OpenAI's completions API over the character-level GPT, streamed and
continuously batched.

``POST /v1/completions`` takes OpenAI's request (``model``, ``prompt``, ``max_tokens``,
``temperature``, ``top_p``, ``top_k`` as vLLM has it, ``seed``, ``stop``, ``stream``) and answers
OpenAI's completion object, or its chunks as server-sent events when ``stream`` is true, so the
official ``openai`` client works unchanged. Errors use OpenAI's error body (see
``openai_error``). One token is one character of the model's stored vocabulary.

``Completions`` is the model's ``StepProgram``: a request's prompt is read by its own prefill
call, then every running request advances by one token per step in one batched decode call;
each request samples with its own seeded generator, so a seeded request gives the same text
alone or batched with others. Batch jobs run the same program over a file's prompts.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from starlette.responses import JSONResponse

from core.model_store import LoadedModel, ModelUnavailableError
from core.text_generation import (
    CharVocabulary,
    SamplingParams,
    TextGenerator,
    UnknownCharacterError,
    sample,
)
from service.area import Area, BatchAdapter, Endpoint, ModelSpec, ReadyModel, ServedModels
from service.batching import Arrays
from service.errors import ErrorAnswer, RequestInputError, error_response, field_error
from service.model_contract import ModelMetadata

MODEL = "text-generator"
ROUTE = "/v1/completions"
MAX_PROMPT_CHARACTERS = 4096  # far above any context length: the context check names the rule
MAX_TOKENS = 2048  # past the context, the generator's window restarts (core.text_generation)
MAX_STOP_STRINGS = 4
MAX_STOP_CHARACTERS = 64
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# vLLM's names where the meaning is the same (vLLM prefixes "vllm:"; dlserve "dlserve_").
TIME_TO_FIRST_TOKEN = Histogram(
    "dlserve_time_to_first_token_seconds",
    "Seconds from a completion's arrival to its first generated token, by model.",
    ["model"],
    buckets=REQUEST_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "dlserve_time_per_output_token_seconds",
    "Seconds per generated token after the first, per completion, by model.",
    ["model"],
    buckets=TOKEN_BUCKETS,
)
REQUEST_SECONDS = Histogram(
    "dlserve_e2e_request_latency_seconds",
    "Seconds from a completion's arrival to its last token, by model.",
    ["model"],
    buckets=REQUEST_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "dlserve_prompt_tokens", "Prompt tokens read (prefilled), by model.", ["model"]
)
GENERATION_TOKENS = Counter("dlserve_generation_tokens", "Tokens generated, by model.", ["model"])


Prompt = Annotated[
    str,
    Field(strict=True, description="the text to continue"),
    StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARACTERS),
]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARACTERS)]
Stop = Annotated[
    StopString | list[StopString] | None,
    Field(
        description=f"up to {MAX_STOP_STRINGS} strings; the text ends before the first one "
        "generated (not included)"
    ),
]


@dataclass(frozen=True)
class CompletionRequest:
    """What the program needs of one request, validated and encoded."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams
    seed: int
    stop: tuple[str, ...] = ()
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class Completion:
    """One request's decoding state (touched only by the inference thread)."""

    request: CompletionRequest
    rng: np.random.Generator
    cache: Any = None
    logits: np.ndarray | None = None
    token: int = -1
    generated: int = 0
    text: str = ""  # the generated text, stop strings excluded
    sent: int = 0  # characters of ``text`` already handed out
    finish_reason: str | None = None
    first_token_at: float = 0.0


class Completions:
    """The text generator's ``service.stepping.StepProgram`` (see the module docstring)."""

    def __init__(self, ready: ReadyModel) -> None:
        self.generator: TextGenerator = ready.companion.generator
        self.vocabulary: CharVocabulary = ready.companion.vocabulary
        self.model = ready.name

    def start(self, request: CompletionRequest) -> Completion:
        completion = Completion(request, np.random.default_rng(request.seed))
        logits, completion.cache = self.generator.prefill(request.prompt_ids)
        PROMPT_TOKENS.labels(model=self.model).inc(len(request.prompt_ids))
        self._take_token(completion, logits)
        GENERATION_TOKENS.labels(model=self.model).inc()
        completion.first_token_at = time.perf_counter()
        TIME_TO_FIRST_TOKEN.labels(model=self.model).observe(
            completion.first_token_at - request.arrived
        )
        return completion

    def step(self, states: Sequence[Completion]) -> None:
        logits, caches = self.generator.decode(
            [state.token for state in states], [state.cache for state in states]
        )
        for state, row, cache in zip(states, logits, caches, strict=True):
            state.cache = cache
            self._take_token(state, row)
        GENERATION_TOKENS.labels(model=self.model).inc(len(states))

    def _take_token(self, state: Completion, logits: np.ndarray) -> None:
        """Sample the next token with the request's own generator; apply stop and length."""
        state.token = sample(logits, state.request.sampling, state.rng)
        state.generated += 1
        state.text += self.vocabulary.chars[state.token]
        cut = _first_stop(state.text, state.request.stop, len(state.text) - 1)
        if cut is not None:
            state.text, state.finish_reason = state.text[:cut], "stop"
        elif state.generated >= state.request.max_tokens:
            state.finish_reason = "length"
        if state.finish_reason is not None:
            self._record_finish(state)

    def _record_finish(self, state: Completion) -> None:
        finished = time.perf_counter()
        REQUEST_SECONDS.labels(model=self.model).observe(finished - state.request.arrived)
        if state.generated > 1:
            TIME_PER_OUTPUT_TOKEN.labels(model=self.model).observe(
                (finished - state.first_token_at) / (state.generated - 1)
            )

    def take_outputs(self, state: Completion) -> list[dict[str, Any]]:
        """The text generated since the last call, except a tail that may begin a stop string
        (held back until it is known not to be one), and the finish reason at the end."""
        safe = len(state.text)
        if state.finish_reason is None:
            safe -= _held_back(state.text, state.request.stop)
        piece, state.sent = state.text[state.sent : safe], max(state.sent, safe)
        if not piece and state.finish_reason is None:
            return []
        return [{"text": piece, "finish_reason": state.finish_reason, "tokens": state.generated}]

    def finished(self, state: Completion) -> bool:
        return state.finish_reason is not None

    def coalesce(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pieces waiting for a slow reader become one: their text, the last reason and count."""
        return [{**outputs[-1], "text": "".join(output["text"] for output in outputs)}]


def _first_stop(text: str, stops: tuple[str, ...], new_from: int) -> int | None:
    """Where the first stop string that ends in ``text[new_from:]`` begins, if any."""
    found = [
        index for stop in stops if (index := text.find(stop, max(0, new_from - len(stop) + 1))) >= 0
    ]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that is a proper start of a stop string."""
    return max(
        (n for stop in stops for n in range(1, len(stop)) if text.endswith(stop[:n])),
        default=0,
    )


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


def rehearse(ready: ReadyModel) -> None:
    """A two-token greedy completion of the vocabulary's first character through the route's
    encoding, prefill, one decode step and the answer's text."""
    vocabulary: list[str] = ready.contract.vocabulary
    request = encode_request(ready, vocabulary[0], 2, SamplingParams(0.0), seed=0)
    program = Completions(ready)
    state = program.start(request)
    while not program.finished(state):
        program.step([state])
    text = "".join(output["text"] for output in program.take_outputs(state))
    JSONResponse({"choices": [{"index": 0, "text": text, "finish_reason": state.finish_reason}]})


def encode_request(
    ready: ReadyModel,
    prompt: str,
    max_tokens: int,
    sampling: SamplingParams,
    seed: int | None,
    stop: tuple[str, ...] = (),
) -> CompletionRequest:
    """Check the prompt against the vocabulary and the context length (RequestInputError);
    ``max_tokens`` may pass the context (the generator's window moves on)."""
    companion: TextCompanion = ready.companion
    try:
        prompt_ids = companion.vocabulary.encode(prompt)
    except UnknownCharacterError as exc:
        raise RequestInputError(["prompt"], str(exc), "unknown_character") from None
    context = companion.generator.context_length
    if len(prompt_ids) > context:
        raise RequestInputError(
            ["prompt"],
            f"This model's maximum context length is {context} tokens. However, your prompt "
            f"has {len(prompt_ids)} tokens. Please reduce your prompt length.",
            "context_length_exceeded",
        )
    chosen = secrets.randbits(63) if seed is None else seed
    return CompletionRequest(prompt_ids, max_tokens, sampling, chosen, stop)


class Choice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    """OpenAI's completion object (a stream's chunks have the same shape, ``usage`` unset)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


async def complete(
    models: ServedModels,
    prompt: Prompt,
    model: Annotated[str | None, Field(description="the served generator's name")] = None,
    max_tokens: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_TOKENS,
            description=f"tokens to generate, at most {MAX_TOKENS}, past the context length too "
            "(the prompt alone must fit it)",
        ),
    ] = 16,
    temperature: Annotated[float, Field(ge=0, le=2, description="0 is greedy")] = 1.0,
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0,
    top_k: Annotated[int, Field(ge=0, le=1024, description="0 is off (extension, as vLLM)")] = 0,
    seed: Annotated[int | None, Field(ge=0, le=2**63 - 1)] = None,
    stop: Stop = None,
    stream: bool = False,
    stream_options: StreamOptions | None = None,
    n: Annotated[int, Field(ge=1, le=1, description="only 1 is supported")] = 1,
    user: Annotated[str | None, Field(max_length=256)] = None,
) -> CompletionResponse:
    """OpenAI-compatible text completion; ``stream`` answers server-sent events."""
    if model is not None and model != MODEL:
        message = f"The model `{model}` does not exist"
        detail = [field_error(["model"], message, "model_not_found")]
        raise ErrorAnswer(error_response(404, message, detail))
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > MAX_STOP_STRINGS:
        raise RequestInputError(
            ["stop"], f"at most {MAX_STOP_STRINGS} stop strings, not {len(stops)}", "too_many_stops"
        )
    ready = models.ready(MODEL)
    sampling = SamplingParams(temperature, top_p, top_k)
    request = encode_request(ready, prompt, max_tokens, sampling, seed, stops) if ready else None
    ready, outputs = await models.stream(MODEL, request)
    header = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": MODEL,
        "system_fingerprint": f"{ready.name}:{ready.version}",
    }
    usage = stream_options is not None and stream_options.include_usage
    if stream:
        return _chunks(outputs, header, len(request.prompt_ids), usage)
    text, finish, tokens = "", None, 0
    async for output in outputs:
        text, finish, tokens = text + output["text"], output["finish_reason"], output["tokens"]
    return JSONResponse(
        {
            **header,
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(len(request.prompt_ids), tokens),
        }
    )


async def _chunks(
    outputs: AsyncIterator[dict[str, Any]], header: dict[str, Any], prompt: int, usage: bool
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's stream: one chunk per piece of text, then (when asked) one with the usage."""
    tokens = 0
    try:
        async for output in outputs:
            tokens = output["tokens"]
            choice = {"index": 0, "text": output["text"], "logprobs": None}
            choice["finish_reason"] = output["finish_reason"]
            yield {**header, "object": "text_completion", "choices": [choice]}
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
    if usage:
        yield {
            **header,
            "object": "text_completion",
            "choices": [],
            "usage": _usage(prompt, tokens),
        }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "OpenAIError",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


# The names pydantic gives a union's members in an error's ``loc`` (``stop.constrained-str``,
# ``stop.list[constrained-str].0``): not parameters.
UNION_MEMBER = re.compile(
    r"constrained-\w+|(function|lax|strict|json)-.*|\w+\[.*\]|str|int|float|bool"
)


def _param(loc: list[str | int]) -> str | None:
    """The parameter an error's ``loc`` names, dotted (``stream_options.x``), without the
    ``body`` prefix and cut before a union member's name."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, str) and UNION_MEMBER.fullmatch(part):
            break
        if part != "body":
            parts.append(str(part))
    return ".".join(parts) or None


def openai_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """dlserve's error body -> OpenAI's ``{"error": {message, type, param, code}}``: the first
    detail names the parameter (``param``) and the rule (``message``, ``code``)."""
    detail = (body.get("detail") or [{}])[0]
    param = _param(detail.get("loc", []))
    message = f"{param}: {detail['msg']}" if param and detail.get("msg") else body["error"]
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_exceeded"
    return {"error": {"message": message, "type": kind, "param": param, "code": detail.get("type")}}


# Batch jobs: a ``prompt`` column, and ``seed``, ``max_tokens``, ``temperature`` where present.
BATCH_DEFAULTS = {"seed": np.nan, "max_tokens": 64.0, "temperature": 1.0}


def validate_prompts(
    table: pa.Table, ready: ReadyModel
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The prompts and their settings, and per row ``None`` or why it is refused (the route's
    rules). A row without a seed is seeded from its prompt (``prompt_seed``), so a resumed job
    writes the same text."""
    rows = table.num_rows
    prompts = (
        np.asarray(table.column("prompt").to_pylist(), dtype=object)
        if "prompt" in table.column_names
        else np.full(rows, None, dtype=object)
    )
    columns = {"prompt": prompts} | {
        name: _numbers(table, name, default) for name, default in BATCH_DEFAULTS.items()
    }
    reasons = np.full(rows, None, dtype=object)
    for row, prompt in enumerate(prompts):
        reasons[row] = _refusal(ready, prompt, columns, row)
    return columns, reasons


def _numbers(table: pa.Table, name: str, default: float) -> np.ndarray:
    """Column ``name`` as float64: ``default`` where it is missing or null, -1 (refused by
    every rule) where it does not hold numbers."""
    rows = table.num_rows
    if name not in table.column_names or pa.types.is_null(table.column(name).type):
        return np.full(rows, default)
    column = table.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return np.full(rows, -1.0)
    return pc.fill_null(pc.cast(column, pa.float64()), default).to_numpy(zero_copy_only=False)


def _refusal(
    ready: ReadyModel, prompt: Any, columns: dict[str, np.ndarray], row: int
) -> str | None:
    max_tokens, temperature = columns["max_tokens"][row], columns["temperature"][row]
    seed = columns["seed"][row]
    if not isinstance(prompt, str) or not prompt:
        return "prompt: must be a non-empty string"
    if not (1 <= max_tokens <= MAX_TOKENS and max_tokens == int(max_tokens)):
        return f"max_tokens: must be an integer from 1 to {MAX_TOKENS}"
    if not 0 <= temperature <= 2:
        return "temperature: must be from 0 to 2"
    if not (np.isnan(seed) or (seed >= 0 and seed == int(seed))):
        return "seed: must be a non-negative integer"
    try:
        encode_request(ready, prompt, int(max_tokens), SamplingParams(temperature), 0)
    except RequestInputError as exc:
        return f"{exc.loc[0]}: {exc}"
    return None


def prompt_seed(prompt: str) -> int:
    """A seed from the prompt's text (BLAKE2b): the same on every machine and every run."""
    return int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest()) >> 1


def job_tokens(inputs: Arrays) -> int:
    """What a batch job's valid rows ask for: each prompt's tokens (one per character) plus
    its ``max_tokens``."""
    prompt_tokens = sum(len(prompt) for prompt in inputs["prompt"])
    return prompt_tokens + int(inputs["max_tokens"].sum())


def complete_all(ready: ReadyModel, inputs: Arrays) -> Arrays:
    """Batch jobs: every row's completion, all rows decoded together step by step."""
    program = Completions(ready)
    seeds = [
        prompt_seed(prompt) if np.isnan(seed) else int(seed)
        for prompt, seed in zip(inputs["prompt"], inputs["seed"], strict=True)
    ]
    states = [
        program.start(
            encode_request(
                ready,
                prompt,
                int(max_tokens),
                SamplingParams(float(temperature)),
                int(seed),
            )
        )
        for prompt, max_tokens, temperature, seed in zip(
            inputs["prompt"], inputs["max_tokens"], inputs["temperature"], seeds, strict=True
        )
    ]
    running = [state for state in states if not program.finished(state)]
    while running:
        program.step(running)
        running = [state for state in running if not program.finished(state)]
    return {
        "text": np.array([state.text for state in states], dtype=object),
        "finish_reason": np.array([state.finish_reason for state in states], dtype=object),
        "completion_tokens": np.array([state.generated for state in states], dtype=np.int64),
        "seed": np.array(seeds, dtype=np.int64),
    }


AREA = Area(
    name="text",
    description="text generation (character-level GPT on Shakespeare), OpenAI-compatible",
    models=(
        ModelSpec(
            MODEL,
            contract=GeneratorMetadata,
            prepare=prepare,
            rehearse=rehearse,
            program=Completions,
        ),
    ),
    endpoints=(
        Endpoint(
            ROUTE,
            complete,
            models=(MODEL,),
            errors=openai_error,
            error_schema=OPENAI_ERROR_SCHEMA,
        ),
    ),
    batch=(
        BatchAdapter(
            model=MODEL,
            input_columns=("prompt", *BATCH_DEFAULTS),
            validate=validate_prompts,
            encode=lambda columns, ready: (dict(columns), {}),
            infer=complete_all,
            to_columns=lambda outputs, ready: outputs,
            batch_size=64,
            tokens=job_tokens,
        ),
    ),
)
