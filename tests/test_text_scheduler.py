"""The text generator's step program under the scheduler, in-process: requests admitted
together advance in one decode call per step, each with its own seeded sampling, and a client
that stops reading frees its place at once."""

from __future__ import annotations

import asyncio

import pytest

from core.text_generation import CharVocabulary, SamplingParams
from service.area import ReadyModel
from service.areas.text import AREA, MODEL
from service.areas.text.metrics import GENERATION_TOKENS
from service.areas.text.program import Completions, encode_request
from service.metrics import REQUESTS_RUNNING
from service.stepping import StepScheduler


@pytest.fixture(scope="module")
def ready(text_model: dict) -> ReadyModel:
    return AREA.spec_by_name[MODEL].load("cpu", 1)


def _request(ready: ReadyModel, prompt: str, seed: int, max_tokens: int = 16):
    return encode_request(ready, prompt, max_tokens, SamplingParams(temperature=1.0), seed)


async def _text(outputs) -> str:
    return "".join([output["text"] async for output in outputs])


def test_requests_admitted_together_advance_in_one_call_per_step(ready: ReadyModel) -> None:
    steps: list[int] = []
    scheduler = StepScheduler(
        Completions(ready), max_active=8, max_waiting=8, on_step=lambda n, s: steps.append(n)
    )
    prompts = ["ROMEO:\n", "KING:\nMy lord", "A", "Enter the"]

    async def run() -> tuple[list[str], list[str]]:
        alone = [
            await _text(scheduler.admit(_request(ready, p, seed=i))) for i, p in enumerate(prompts)
        ]
        steps.clear()
        together = await asyncio.gather(
            *(_text(scheduler.admit(_request(ready, p, seed=i))) for i, p in enumerate(prompts))
        )
        return alone, list(together)

    alone, together = asyncio.run(run())
    assert together == alone  # each request keeps its own sampling state
    assert max(steps) == len(prompts) and len(steps) == 15  # 16 tokens: 1 prefill + 15 steps


def test_a_client_that_stops_reading_frees_its_place(ready: ReadyModel) -> None:
    scheduler = StepScheduler(
        Completions(ready),
        max_active=1,
        max_waiting=1,
        on_change=lambda running, waiting: REQUESTS_RUNNING.labels(model="test").set(running),
    )
    vocabulary = CharVocabulary.from_metadata(ready.metadata)
    budget = ready.companion.generator.context_length - 1

    generated = GENERATION_TOKENS.labels(model=MODEL)
    before = generated._value.get()

    async def run() -> tuple[int, str]:
        outputs = scheduler.admit(_request(ready, "A", seed=1, max_tokens=budget))
        await anext(outputs)
        await outputs.aclose()  # the client left after its first piece
        for _ in range(100):
            if scheduler.counts == (0, 0):
                break
            await asyncio.sleep(0.01)
        running = REQUESTS_RUNNING.labels(model="test")._value.get()
        assert generated._value.get() - before <= 3  # stopped within a step or two, not 31
        # The freed place is taken at once by the next request.
        return running, await _text(scheduler.admit(_request(ready, "B", seed=2, max_tokens=3)))

    running, text = asyncio.run(run())
    assert running == 0 and scheduler.counts == (0, 0)
    assert len(text) == 3 and set(text) <= set(vocabulary.chars)
