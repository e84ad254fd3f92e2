"""OpenAI's completions request fields and answer objects, with dlserve's bounds."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.areas.text.limits import MAX_PROMPT_CHARACTERS, MAX_STOP_CHARACTERS, MAX_STOP_STRINGS

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


def usage(prompt: int, completion: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
