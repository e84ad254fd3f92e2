"""OpenAI's completions request fields and answer objects, with dlserve's bounds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.areas.text.limits import (
    MAX_BEST_OF,
    MAX_LOGIT_BIAS,
    MAX_LOGPROBS,
    MAX_N,
    MAX_PROMPT_CHARACTERS,
    MAX_PROMPTS,
    MAX_STOP_CHARACTERS,
    MAX_STOP_STRINGS,
    MAX_TOKENS,
    MAX_USER_CHARACTERS,
)
from service.openai_errors import one_or_list

Prompt = Annotated[
    str,
    Field(strict=True, description="the text to continue"),
    StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARACTERS),
]


Prompts = one_or_list(
    Prompt,
    MAX_PROMPTS,
    f"a text, or a list of up to {MAX_PROMPTS} texts: `n` choices per prompt, in order "
    "(choice `prompt_index * n + j`); token-id prompts are not taken",
)
MaxTokens = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_TOKENS,
        description=f"tokens to generate per choice (one token is one character), at most "
        f"{MAX_TOKENS}, past the context length too (the prompt alone must fit it)",
    ),
]
N = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_N,
        description=f"choices per prompt (at most {MAX_N}); prompts x `best_of` (else `n`) "
        "sequences must fit DLSERVE_MAX_WAITING_SEQUENCES and DLSERVE_MAX_COMPLETION_TOKENS",
    ),
]
BestOf = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_BEST_OF,
        description=f"candidates per prompt (at most {MAX_BEST_OF}, at least `n`); the `n` "
        "with the highest sum of log probabilities are answered; not with `stream` when "
        "above `n`",
    ),
]
Echo = Annotated[bool, Field(description="the prompt comes first in each choice's text")]
Logprobs = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_LOGPROBS,
        description=f"the log probabilities of each token and of the most likely ones at its "
        f"position (at most {MAX_LOGPROBS}, OpenAI's maximum; the chosen token is added when "
        "not among them): the model's own distribution, before temperature, penalties and "
        "bias; `text_offset` counts characters from the start of the prompt",
    ),
]
Penalty = Annotated[
    float,
    Field(
        ge=-2,
        le=2,
        description="subtracted from a token's logit once it was generated (presence) or per "
        "time it was generated (frequency), as OpenAI documents",
    ),
]
Bias = Annotated[float, Field(ge=-100, le=100)]
LogitBias = Annotated[
    dict[str, Bias] | None,
    Field(
        max_length=MAX_LOGIT_BIAS,
        description="token id (a string of the id) -> a value from -100 to 100 added to its "
        "logit; ids are positions in the model's vocabulary (GET /v1/models lists it)",
    ),
]
User = Annotated[
    str | None,
    Field(max_length=MAX_USER_CHARACTERS, description="logged at INFO with the completion's id"),
]
Suffix = Annotated[
    str | None, Field(description="refused (400): a decoder-only model inserts nothing")
]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARACTERS)]
Stop = Annotated[
    StopString | list[StopString] | None,
    Field(
        description=f"up to {MAX_STOP_STRINGS} strings; the text ends before the first one "
        "generated (not included)"
    ),
]


class CompletionLogprobs(BaseModel):
    """OpenAI's ``logprobs`` of a choice: per token its text, its log probability, the most
    likely tokens' (``None`` for an echoed prompt's first token) and its character offset."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class Choice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


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


def usage(prompt: int, completion: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
