"""The decoding program: a request checked and encoded (``encode_request``), and
``Completions``, the generator's ``service.stepping.StepProgram``.

A request's prompt is read by its own prefill call, then every running sequence advances by one
token per step in one batched decode call. Each sequence samples with its own generator,
``numpy.random.default_rng([seed, sequence])`` (the request's seed and the sequence's index in
the request), so a seeded request gives the same text alone or batched with others; its
penalties count its own generated tokens. Log probabilities are those of the model's own
distribution (``log_softmax`` of the raw logits: before temperature, penalties, bias, top-k and
top-p), as vLLM reports them by default.
"""

from __future__ import annotations

import dataclasses
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
    log_softmax,
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
    """What the program needs of one sequence, validated and encoded.

    ``sequence``: its index in its request (its sampler is ``default_rng([seed, sequence])``).
    ``logprobs``: how many most likely tokens each answered token lists (``None``: no
    logprobs). ``echo``: the prompt comes first in the text (and, with ``logprobs``, its
    tokens' log probabilities, the first ``None``). ``scored``: the sum of the generated
    tokens' log probabilities is kept (``best_of`` picks by it).
    """

    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams
    seed: int
    stop: tuple[str, ...] = ()
    sequence: int = 0
    logprobs: int | None = None
    echo: bool = False
    scored: bool = False
    arrived: float = field(default_factory=time.perf_counter)


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


# One answered token: its text, its log probability (``None`` for a prompt's first token) and
# the most likely tokens at its position with theirs (``None`` there too).
Entry = tuple[str, float | None, dict[str, float] | None]


@dataclass
class Completion:
    """One sequence's decoding state (touched only by the inference thread)."""

    request: CompletionRequest
    rng: np.random.Generator
    cache: Any = None
    token: int = -1
    generated: int = 0
    text: str = ""  # the generated text, stop strings excluded
    sent: int = 0  # characters of ``text`` already handed out
    finish_reason: str | None = None
    first_token_at: float = 0.0
    counts: np.ndarray | None = None  # times each token was generated (for the penalties)
    cumulative_logprob: float = 0.0
    entries: list[Entry] = field(default_factory=list)  # one per generated token (logprobs)
    prompt_entries: list[Entry] = field(default_factory=list)  # echo with logprobs
    echoed: bool = False


class Completions:
    """The text generator's ``service.stepping.StepProgram`` (see the module docstring)."""

    def __init__(self, ready: ReadyModel) -> None:
        self.generator: TextGenerator = ready.companion.generator
        self.vocabulary: CharVocabulary = ready.companion.vocabulary
        self.model = ready.name

    def start(self, request: CompletionRequest) -> Completion:
        completion = Completion(request, np.random.default_rng([request.seed, request.sequence]))
        if request.sampling.penalised:
            completion.counts = np.zeros(len(self.vocabulary), dtype=np.int64)
        if request.echo and request.logprobs is not None:
            every, completion.cache = self.generator.prefill(request.prompt_ids, True)
            completion.prompt_entries = self._prompt_entries(request, every)
            logits = every[-1]
        else:
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
        """Sample the next token with the sequence's own generator and counts; keep its log
        probability when asked; apply stop and length."""
        request = state.request
        state.token = token = sample(logits, request.sampling, state.rng, state.counts)
        if state.counts is not None:
            state.counts[token] += 1
        if request.logprobs is not None or request.scored:
            logprobs = log_softmax(logits)
            state.cumulative_logprob += float(logprobs[token])
            if request.logprobs is not None:
                state.entries.append(self._entry(logprobs, token, request.logprobs))
        state.generated += 1
        state.text += self.vocabulary.chars[token]
        cut = _first_stop(state.text, request.stop, len(state.text) - 1)
        if cut is not None:
            state.text, state.finish_reason = state.text[:cut], "stop"
        elif state.generated >= request.max_tokens:
            state.finish_reason = "length"
        if state.finish_reason is not None:
            self._record_finish(state)

    def _entry(self, logprobs: np.ndarray, token: int, top: int) -> Entry:
        """``token`` with its log probability and the ``top`` most likely tokens' (ties to the
        lower id), the token itself added when it is not among them (as vLLM)."""
        chars = self.vocabulary.chars
        best = np.argsort(-logprobs, kind="stable")[:top].tolist()
        if token not in best:
            best.append(token)
        return chars[token], float(logprobs[token]), {chars[i]: float(logprobs[i]) for i in best}

    def _prompt_entries(self, request: CompletionRequest, every: np.ndarray) -> list[Entry]:
        """The prompt's tokens: the first without a log probability, each other one as the
        model predicted it from the tokens before it (``every``: each position's logits)."""
        ids, chars = request.prompt_ids, self.vocabulary.chars
        entries: list[Entry] = [(chars[ids[0]], None, None)]
        for position in range(1, len(ids)):
            entries.append(
                self._entry(log_softmax(every[position - 1]), ids[position], request.logprobs)
            )
        return entries

    def _record_finish(self, state: Completion) -> None:
        finished = time.perf_counter()
        REQUEST_SECONDS.labels(model=self.model).observe(finished - state.request.arrived)
        if state.generated > 1:
            TIME_PER_OUTPUT_TOKEN.labels(model=self.model).observe(
                (finished - state.first_token_at) / (state.generated - 1)
            )

    def take_outputs(self, state: Completion) -> list[dict[str, Any]]:
        """The text generated since the last call, except a tail that may begin a stop string
        (held back until it is known not to be one), after the prompt on the first call when
        ``echo``; the finish reason at the end, the tokens generated so far, and, when asked,
        the piece's ``logprobs`` (OpenAI's object) and the ``cumulative_logprob``."""
        request = state.request
        safe = len(state.text)
        if state.finish_reason is None:
            safe -= _held_back(state.text, request.stop)
        start, state.sent = state.sent, max(state.sent, safe)
        piece = state.text[start:safe]
        prompt = ""
        if request.echo and not state.echoed:
            prompt, state.echoed = self.vocabulary.decode(request.prompt_ids), True
        if not piece and not prompt and state.finish_reason is None:
            return []
        output: dict[str, Any] = {
            "text": prompt + piece,
            "finish_reason": state.finish_reason,
            "tokens": state.generated,
        }
        if request.logprobs is not None:
            output["logprobs"] = self._logprobs(state, start, len(piece), bool(prompt))
        if request.scored:
            output["cumulative_logprob"] = state.cumulative_logprob
        return [output]

    def _logprobs(
        self, state: Completion, start: int, length: int, with_prompt: bool
    ) -> dict[str, list[Any]]:
        """OpenAI's ``logprobs`` of generated tokens ``start`` to ``start + length`` (after the
        prompt's when ``with_prompt``). ``text_offset`` counts characters from the start of
        the prompt, as OpenAI does, whether or not the prompt is echoed."""
        prompt_length = len(state.request.prompt_ids)
        entries = state.entries[start : start + length]
        offsets = list(range(prompt_length + start, prompt_length + start + length))
        if with_prompt:
            entries = state.prompt_entries + entries
            offsets = list(range(prompt_length)) + offsets
        return {
            "tokens": [entry[0] for entry in entries],
            "token_logprobs": [entry[1] for entry in entries],
            "top_logprobs": [entry[2] for entry in entries],
            "text_offset": offsets,
        }

    def finished(self, state: Completion) -> bool:
        return state.finish_reason is not None

    def coalesce(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pieces waiting for a slow reader become one (``join_outputs``)."""
        return [join_outputs(outputs)]


def join_outputs(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Consecutive outputs of one sequence as one: their text and ``logprobs`` end to end, the
    last finish reason, token count and cumulative log probability."""
    joined = {**outputs[-1], "text": "".join(output["text"] for output in outputs)}
    if "logprobs" in joined:
        pieces = [output["logprobs"] for output in outputs]
        joined["logprobs"] = {key: [v for piece in pieces for v in piece[key]] for key in pieces[0]}
    return joined


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
    """A two-token greedy completion of the vocabulary's first character, echoed with its
    log probabilities, through the route's encoding, prefill (every position's logits), one
    decode step and the answer's text."""
    vocabulary: list[str] = ready.contract.vocabulary
    request = encode_request(ready, vocabulary[0], 2, SamplingParams(0.0), seed=0)
    program = Completions(ready)
    state = program.start(dataclasses.replace(request, logprobs=1, echo=True))
    while not program.finished(state):
        program.step([state])
    choice = join_outputs(program.take_outputs(state))
    JSONResponse({"choices": [{"index": 0, **choice}]})


def sequence_end(output: dict[str, Any]) -> tuple[str, int] | None:
    """One output of ``Completions.take_outputs``: ``(finish reason, tokens generated)`` when
    it is its sequence's last (a finish reason is set), else ``None``."""
    reason = output["finish_reason"]
    return None if reason is None else (reason, output["tokens"])
