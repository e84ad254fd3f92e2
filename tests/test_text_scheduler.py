"""The text generator's step program under the scheduler, in-process: requests admitted
together advance in one decode call per step, each with its own seeded sampling; a request's
sequences are admitted whole or not at all; a client that stops reading frees its place at
once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from core.text_generation import CharVocabulary, SamplingParams
from service.area import ReadyModel
from service.areas.text import AREA, MODEL
from service.areas.text.metrics import GENERATION_TOKENS
from service.areas.text.program import Completions, encode_request
from service.batching import OverloadedError
from service.metrics import REQUESTS_RUNNING
from service.stepping import RUN_AHEAD, StepScheduler


@pytest.fixture(scope="module")
def ready(text_model: dict) -> ReadyModel:
    return AREA.spec_by_name[MODEL].load("cpu", 1)


def _request(ready: ReadyModel, prompt: str, seed: int, max_tokens: int = 16):
    return encode_request(ready, prompt, max_tokens, SamplingParams(temperature=1.0), seed)


async def _text(outputs) -> str:
    return "".join([output["text"] async for _, output in outputs])


def test_requests_admitted_together_advance_in_one_call_per_step(ready: ReadyModel) -> None:
    steps: list[int] = []
    scheduler = StepScheduler(
        Completions(ready), max_active=8, max_waiting=8, on_step=lambda n, s: steps.append(n)
    )
    prompts = ["ROMEO:\n", "KING:\nMy lord", "A", "Enter the"]

    async def run() -> tuple[list[str], list[str]]:
        requests = [[_request(ready, p, seed=i)] for i, p in enumerate(prompts)]
        alone = [await _text(scheduler.admit(request)) for request in requests]
        steps.clear()
        together = await asyncio.gather(*(_text(scheduler.admit(r)) for r in requests))
        return alone, list(together)

    alone, together = asyncio.run(run())
    assert together == alone  # each request keeps its own sampling state
    assert max(steps) == len(prompts) and len(steps) == 15  # 16 tokens: 1 prefill + 15 steps


def test_generations_past_the_context_give_the_same_text_alone_or_together(
    ready: ReadyModel,
) -> None:
    """Four requests of 4 contexts each, prompts of 1 to a whole context: their windows fill
    and restart at different steps, and each gives its text alone."""
    context = ready.companion.generator.context_length
    max_tokens = 4 * context + 3
    prompts = ["A", "KING:\nMy lord", "ROMEO:\n" * 3, ("Enter the king " * 8)[:context]]
    scheduler = StepScheduler(Completions(ready), max_active=8, max_waiting=8)

    async def run() -> tuple[list[str], list[str]]:
        def outputs(index: int, prompt: str) -> AsyncIterator[tuple[int, dict]]:
            return scheduler.admit([_request(ready, prompt, seed=index, max_tokens=max_tokens)])

        alone = [await _text(outputs(i, p)) for i, p in enumerate(prompts)]
        together = await asyncio.gather(*(_text(outputs(i, p)) for i, p in enumerate(prompts)))
        return alone, list(together)

    alone, together = asyncio.run(run())
    assert together == alone
    assert [len(text) for text in alone] == [max_tokens] * len(prompts)


def test_a_client_that_stops_reading_frees_its_place(ready: ReadyModel) -> None:
    scheduler = StepScheduler(
        Completions(ready),
        max_active=1,
        max_waiting=1,
        on_change=lambda running, waiting: REQUESTS_RUNNING.labels(model="test").set(running),
    )
    vocabulary = CharVocabulary.from_metadata(ready.metadata)
    budget = 4 * ready.companion.generator.context_length  # far more than the thread runs ahead

    generated = GENERATION_TOKENS.labels(model=MODEL)
    before = generated._value.get()

    async def run() -> tuple[int, str]:
        outputs = scheduler.admit([_request(ready, "A", seed=1, max_tokens=budget)])
        await anext(outputs)
        await outputs.aclose()  # the client left after its first piece
        for _ in range(100):
            if scheduler.counts == (0, 0):
                break
            await asyncio.sleep(0.01)
        running = REQUESTS_RUNNING.labels(model="test")._value.get()
        # Stopped within the steps the step thread may run ahead: up to RUN_AHEAD hand-overs
        # ran before this task resumed, RUN_AHEAD more posted, one step running; not all.
        assert generated._value.get() - before <= 2 * RUN_AHEAD + 1
        # The freed place is taken at once by the next request.
        return running, await _text(scheduler.admit([_request(ready, "B", seed=2, max_tokens=3)]))

    running, text = asyncio.run(run())
    assert running == 0 and scheduler.counts == (0, 0)
    assert len(text) == 3 and set(text) <= set(vocabulary.chars)


def test_a_group_of_sequences_is_admitted_whole_and_advances_like_single_requests(
    ready: ReadyModel,
) -> None:
    """A request's sequences (n, best_of, a list of prompts) are admitted all or none, each
    advancing in the shared step; each sequence's text is what it gives alone."""
    steps: list[int] = []
    scheduler = StepScheduler(
        Completions(ready), max_active=8, max_waiting=3, on_step=lambda n, s: steps.append(n)
    )
    base = _request(ready, "ROMEO:\n", seed=5, max_tokens=8)
    group = [dataclasses.replace(base, sequence=k) for k in range(3)]

    async def run() -> tuple[list[str], dict[int, str]]:
        alone = [await _text(scheduler.admit([sequence])) for sequence in group]
        steps.clear()
        outputs = scheduler.admit(group)
        with pytest.raises(OverloadedError, match="3 sequences already waiting, 1 more"):
            scheduler.admit([base])  # the group fills the waiting places
        assert scheduler.counts == (0, 3)  # the refused request queued nothing
        together: dict[int, str] = {}
        async for index, output in outputs:
            together[index] = together.get(index, "") + output["text"]
        return alone, together

    alone, together = asyncio.run(run())
    assert [together[k] for k in range(3)] == alone
    assert len(set(alone)) > 1  # each sequence has its own seed
    assert max(steps) == 3 and len(steps) == 7  # 8 tokens: 1 prefill + 7 shared steps


def test_a_group_larger_than_the_waiting_places_is_refused_whole(ready: ReadyModel) -> None:
    scheduler = StepScheduler(Completions(ready), max_active=8, max_waiting=2)
    base = _request(ready, "A", seed=1, max_tokens=2)
    with pytest.raises(OverloadedError, match="3 more asked"):
        scheduler.admit([dataclasses.replace(base, sequence=k) for k in range(3)])
    assert scheduler.counts == (0, 0)


def test_an_interval_joins_a_stream_s_outputs_into_fewer_events(ready: ReadyModel) -> None:
    """With ``interval_s``, a request's first output comes at once and the others at most once
    per interval, joined: the same text in fewer events."""
    request = _request(ready, "ROMEO:\n", seed=3, max_tokens=12)
    plain = StepScheduler(Completions(ready), max_active=8, max_waiting=8)
    spaced = StepScheduler(Completions(ready), max_active=8, max_waiting=8, interval_s=0.2)

    async def events(scheduler: StepScheduler) -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        texts = [output["text"] async for _, output in scheduler.admit([request])]
        return texts, loop.time() - started

    (alone, _), (joined, seconds) = asyncio.run(events(plain)), asyncio.run(events(spaced))
    assert "".join(joined) == "".join(alone) and len("".join(alone)) == 12
    assert len(joined) <= 2 + seconds / 0.2  # the first, then one per interval begun
