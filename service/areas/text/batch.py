"""Batch jobs over the generator: a ``prompt`` column, and ``seed``, ``max_tokens``,
``temperature`` where present, checked by the route's rules and decoded together step by step."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.text_generation import SamplingParams
from service.area import ReadyModel
from service.areas.text.limits import MAX_TOKENS
from service.areas.text.program import Completions, encode_request
from service.batching import Arrays
from service.errors import RequestInputError

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
