"""``POST /v1/completions``: the handler, and OpenAI's answer or its stream of chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import Field
from starlette.responses import JSONResponse

from core.text_generation import SamplingParams
from service.area import ServedModels
from service.areas.text.limits import MAX_STOP_STRINGS, MAX_TOKENS, MODEL
from service.areas.text.program import encode_request
from service.areas.text.schemas import CompletionResponse, Prompt, Stop, StreamOptions, usage
from service.errors import ErrorAnswer, RequestInputError, error_response, field_error


async def complete(
    models: ServedModels,
    prompt: Prompt,
    model: Annotated[str | None, Field(description="the served generator's name")] = None,
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS, description="tokens to generate")] = 16,
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
    include_usage = stream_options is not None and stream_options.include_usage
    if stream:
        return _chunks(outputs, header, len(request.prompt_ids), include_usage)
    text, finish, tokens = "", None, 0
    async for output in outputs:
        text, finish, tokens = text + output["text"], output["finish_reason"], output["tokens"]
    return JSONResponse(
        {
            **header,
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": usage(len(request.prompt_ids), tokens),
        }
    )


async def _chunks(
    outputs: AsyncIterator[dict[str, Any]], header: dict[str, Any], prompt: int, with_usage: bool
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
    if with_usage:
        yield {
            **header,
            "object": "text_completion",
            "choices": [],
            "usage": usage(prompt, tokens),
        }
