"""The decoding program: a request checked and encoded (``encode_request``), and
``Completions``, the generator's ``service.stepping.StepProgram``.

A request's prompt is read by its own prefill call, then every running request advances by one
token per step in one batched decode call; each request samples with its own seeded generator,
so a seeded request gives the same text alone or batched with others.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.responses import JSONResponse

from core.text_generation import (
    CharVocabulary,
    SamplingParams,
    TextGenerator,
    UnknownCharacterError,
    sample,
)
from service.area import ReadyModel
from service.areas.text.metrics import (
    GENERATION_TOKENS,
    PROMPT_TOKENS,
    REQUEST_SECONDS,
    TIME_PER_OUTPUT_TOKEN,
    TIME_TO_FIRST_TOKEN,
)
from service.areas.text.model import TextCompanion
from service.errors import RequestInputError


@dataclass(frozen=True)
class CompletionRequest:
    """What the program needs of one request, validated and encoded."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams
    seed: int
    stop: tuple[str, ...] = ()
    arrived: float = field(default_factory=time.perf_counter)


def encode_request(
    ready: ReadyModel,
    prompt: str,
    max_tokens: int,
    sampling: SamplingParams,
    seed: int | None,
    stop: tuple[str, ...] = (),
) -> CompletionRequest:
    """Check the prompt against the vocabulary and the context length (RequestInputError)."""
    companion: TextCompanion = ready.companion
    try:
        prompt_ids = companion.vocabulary.encode(prompt)
    except UnknownCharacterError as exc:
        raise RequestInputError(["prompt"], str(exc), "unknown_character") from None
    context = companion.generator.context_length
    if len(prompt_ids) + max_tokens > context:
        raise RequestInputError(
            ["prompt"],
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the prompt, "
            f"{max_tokens} for the completion). Please reduce your prompt or completion length.",
            "context_length_exceeded",
        )
    chosen = secrets.randbits(63) if seed is None else seed
    return CompletionRequest(prompt_ids, max_tokens, sampling, chosen, stop)


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
