"""``POST /v1/completions``: the handler, and OpenAI's answer or its stream of chunks.

A request is ``len(prompts) x best_of`` sequences (``best_of`` defaults to ``n``), sequence
``k = prompt_index * best_of + j``, each advancing in the step scheduler like any other and
seeded with the request's seed and ``k``. Its choices are ordered by prompt, then ``j``: choice
``prompt_index * n + j``. With ``best_of`` above ``n``, each prompt's ``n`` candidates with the
highest sum of log probabilities are answered (best first), and the answer is not streamed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import Field
from starlette.responses import JSONResponse

from core.text_generation import SamplingParams
from service.area import ReadyModel, ServedModels
from service.areas.text.limits import MAX_STOP_STRINGS, MODEL
from service.areas.text.program import CompletionRequest, encode_request, join_outputs
from service.areas.text.schemas import (
    BestOf,
    CompletionResponse,
    Echo,
    LogitBias,
    Logprobs,
    MaxTokens,
    N,
    Penalty,
    Prompts,
    Stop,
    StreamOptions,
    Suffix,
    User,
    usage,
)
from service.errors import ErrorAnswer, RequestInputError, error_response, field_error
from service.request_numbers import bounded_int

log = logging.getLogger(__name__)


async def complete(
    models: ServedModels,
    prompt: Prompts,
    model: Annotated[str | None, Field(description="the served generator's name")] = None,
    max_tokens: MaxTokens = 16,
    temperature: Annotated[float, Field(ge=0, le=2, description="0 is greedy")] = 1.0,
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0,
    top_k: Annotated[int, Field(ge=0, le=1024, description="0 is off (extension, as vLLM)")] = 0,
    seed: Annotated[
        int | None,
        Field(
            ge=0,
            le=2**63 - 1,
            description="sequence k of the request samples with numpy's "
            "default_rng([seed, k]): the same text alone or under load",
        ),
    ] = None,
    stop: Stop = None,
    stream: bool = False,
    stream_options: StreamOptions | None = None,
    n: N = 1,
    best_of: BestOf = None,
    echo: Echo = False,
    logprobs: Logprobs = None,
    presence_penalty: Penalty = 0.0,
    frequency_penalty: Penalty = 0.0,
    logit_bias: LogitBias = None,
    user: User = None,
    suffix: Suffix = None,
) -> CompletionResponse:
    """OpenAI-compatible text completion; ``stream`` answers server-sent events."""
    if model is not None and model != MODEL:
        message = f"The model `{model}` does not exist"
        detail = [field_error(["model"], message, "model_not_found")]
        raise ErrorAnswer(error_response(404, message, detail))
    if suffix is not None:
        raise RequestInputError(
            ["suffix"],
            "is not supported: a decoder-only model continues a prompt, it inserts nothing",
            "unsupported_parameter",
        )
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > MAX_STOP_STRINGS:
        raise RequestInputError(
            ["stop"], f"at most {MAX_STOP_STRINGS} stop strings, not {len(stops)}", "too_many_stops"
        )
    candidates = _candidates(n, best_of, stream)
    prompts = [prompt] if isinstance(prompt, str) else prompt
    _check_sequences(models, len(prompts), candidates, best_of)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    if user is not None:
        log.info("completion %s for user %r", completion_id, user)
    ready = models.ready(MODEL)
    requests: list[CompletionRequest] = []
    if ready is not None:
        sampling = SamplingParams(
            temperature,
            top_p,
            top_k,
            presence_penalty,
            frequency_penalty,
            _bias(ready, logit_bias or {}),
        )
        requests = _sequences(
            [encode_request(ready, text, max_tokens, sampling, seed, stops) for text in prompts],
            candidates,
            logprobs,
            echo,
            scored=candidates > n,
        )
        _check_tokens(models, requests, max_tokens, best_of, n)
    ready, outputs = await models.stream(MODEL, requests)
    header = {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": MODEL,
        "system_fingerprint": f"{ready.name}:{ready.version}",
    }
    prompt_tokens = sum(len(request.prompt_ids) for request in requests[::candidates])
    if stream:
        include_usage = stream_options is not None and stream_options.include_usage
        return _chunks(outputs, header, prompt_tokens, include_usage)
    choices, generated = await _choices(outputs, len(requests), candidates, n)
    return JSONResponse({**header, "choices": choices, "usage": usage(prompt_tokens, generated)})


def _candidates(n: int, best_of: int | None, stream: bool) -> int:
    """Sequences per prompt: ``best_of``, at least ``n`` and not streamed when above it."""
    candidates = n if best_of is None else best_of
    if candidates < n:
        raise RequestInputError(["best_of"], f"must be at least n ({n})", "best_of_below_n")
    if stream and candidates > n:
        raise RequestInputError(
            ["best_of"],
            "cannot be streamed when above n (it waits for every candidate)",
            "best_of_streamed",
        )
    return candidates


def _check_sequences(
    models: ServedModels, prompts: int, candidates: int, best_of: int | None
) -> None:
    """A request asking for more sequences than the step scheduler ever holds waiting is a 400
    naming the field that multiplies them."""
    limit = models.settings.max_waiting_sequences
    if prompts * candidates > limit:
        raise RequestInputError(
            [_multiplier(candidates, best_of)],
            f"{prompts} prompts x {candidates} sequences each = {prompts * candidates} "
            f"sequences; at most {limit} fit the step scheduler (DLSERVE_MAX_WAITING_SEQUENCES)",
            "too_many_sequences",
        )


def _check_tokens(
    models: ServedModels,
    requests: list[CompletionRequest],
    max_tokens: int,
    best_of: int | None,
    n: int,
) -> None:
    """Every sequence's prompt tokens plus ``max_tokens``, summed, within
    ``DLSERVE_MAX_COMPLETION_TOKENS`` (else a 400 naming what multiplies them)."""
    limit = models.settings.max_completion_tokens
    cost = sum(len(request.prompt_ids) + max_tokens for request in requests)
    if cost > limit:
        candidates = n if best_of is None else best_of
        name = _multiplier(candidates, best_of) if len(requests) > 1 else "max_tokens"
        raise RequestInputError(
            [name],
            f"the request asks for {cost} tokens ({len(requests)} sequences, each its prompt's "
            f"tokens plus max_tokens); at most {limit} (DLSERVE_MAX_COMPLETION_TOKENS)",
            "too_many_tokens",
        )


def _multiplier(candidates: int, best_of: int | None) -> str:
    """The field that multiplies a request's sequences: ``best_of``, ``n``, else ``prompt``."""
    if candidates > 1:
        return "best_of" if best_of is not None else "n"
    return "prompt"


def _bias(ready: ReadyModel, logit_bias: dict[str, float]) -> tuple[tuple[int, float], ...]:
    """``logit_bias``'s keys as token ids of the model's vocabulary (a 400 naming the field
    and the vocabulary's size for any other key)."""
    size = len(ready.companion.vocabulary)
    try:
        ids = [bounded_int(key, ["logit_bias"], 0, size - 1, "unknown_token") for key in logit_bias]
    except RequestInputError:
        raise RequestInputError(
            ["logit_bias"],
            f"keys are token ids of the model's vocabulary of {size} tokens: integers from 0 to "
            f"{size - 1} (see GET /v1/models)",
            "unknown_token",
        ) from None
    return tuple(zip(ids, logit_bias.values(), strict=True))


def _sequences(
    requests: list[CompletionRequest],
    candidates: int,
    logprobs: int | None,
    echo: bool,
    scored: bool,
) -> list[CompletionRequest]:
    """``candidates`` sequences per prompt, sequence ``k = prompt_index * candidates + j``."""
    return [
        dataclasses.replace(
            request,
            sequence=index * candidates + j,
            logprobs=logprobs,
            echo=echo,
            scored=scored,
        )
        for index, request in enumerate(requests)
        for j in range(candidates)
    ]


async def _choices(
    outputs: AsyncIterator[tuple[int, dict[str, Any]]], sequences: int, candidates: int, n: int
) -> tuple[list[dict[str, Any]], int]:
    """Every sequence's outputs joined, each prompt's best ``n`` of its ``candidates``; the
    choices in order and the tokens generated (every candidate's)."""
    pieces: list[list[dict[str, Any]]] = [[] for _ in range(sequences)]
    async for index, output in outputs:
        pieces[index].append(output)
    joined = [join_outputs(outputs) for outputs in pieces]
    choices: list[dict[str, Any]] = []
    for first in range(0, sequences, candidates):
        group = joined[first : first + candidates]
        if candidates > n:
            group = sorted(group, key=lambda choice: -choice["cumulative_logprob"])[:n]
        for choice in group:
            choices.append(
                {
                    "index": len(choices),
                    "text": choice["text"],
                    "finish_reason": choice["finish_reason"],
                    "logprobs": choice.get("logprobs"),
                }
            )
    return choices, sum(choice["tokens"] for choice in joined)


async def _chunks(
    outputs: AsyncIterator[tuple[int, dict[str, Any]]],
    header: dict[str, Any],
    prompt_tokens: int,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's stream: one chunk per piece of a choice's text (choice ``index``: the
    sequence's, as a streamed request has ``best_of`` equal to ``n``), then (when asked) one
    with the usage."""
    tokens: dict[int, int] = {}
    try:
        async for index, output in outputs:
            tokens[index] = output["tokens"]
            choice = {
                "index": index,
                "text": output["text"],
                "logprobs": output.get("logprobs"),
                "finish_reason": output["finish_reason"],
            }
            yield {**header, "choices": [choice]}
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
    if include_usage:
        yield {**header, "choices": [], "usage": usage(prompt_tokens, sum(tokens.values()))}
