"""The rest of OpenAI's completions parameters over real HTTP, each through the official
``openai`` client, streamed and not: lists of prompts, ``n``, ``best_of``, ``echo``, ``logprobs``
(``text_offset`` included), presence and frequency penalties, ``logit_bias``, ``user`` (logged)
and ``suffix`` (refused); the bounds on the sequences and tokens one request may ask for."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from service.area import ReadyModel
from service.areas.text import AREA, MODEL
from service.areas.text.route import complete
from service.config import Settings
from service.errors import RequestInputError

pytestmark = pytest.mark.http
PROMPT = "ROMEO:\n"
PROMPTS = ["ROMEO:\n", "KING:\nMy lord", "Enter"]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def vocabulary(text_model: dict) -> list[str]:
    return text_model["vocabulary"]


def _create(client: openai.OpenAI, **fields: Any) -> Any:
    return client.completions.create(model=MODEL, **{"prompt": PROMPT, **fields})


def _streamed(client: openai.OpenAI, **fields: Any) -> dict[int, dict[str, Any]]:
    """Each choice of a stream, its pieces joined: text, finish reason, logprobs."""
    joined: dict[int, dict[str, Any]] = {}
    for chunk in _create(client, stream=True, **fields):
        for choice in chunk.choices:
            entry = joined.setdefault(choice.index, {"text": "", "pieces": 0, "logprobs": None})
            entry["text"] += choice.text
            entry["pieces"] += 1
            entry["finish_reason"] = choice.finish_reason
            if choice.logprobs is not None:
                old = entry["logprobs"] or {key: [] for key in choice.logprobs.model_dump()}
                new = choice.logprobs.model_dump()
                entry["logprobs"] = {key: old[key] + new[key] for key in old}
    return joined


def _bad_request(client: openai.OpenAI, **fields: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as raised:
        _create(client, **fields)
    assert raised.value.status_code == 400
    assert raised.value.body["type"] == "invalid_request_error"
    return raised.value.body


def test_a_list_of_prompts_gives_one_choice_per_prompt_in_order(client: openai.OpenAI) -> None:
    answer = _create(client, prompt=PROMPTS, max_tokens=10, temperature=0)
    alone = [_create(client, prompt=p, max_tokens=10, temperature=0) for p in PROMPTS]
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert [c.text for c in answer.choices] == [a.choices[0].text for a in alone]
    assert answer.usage.prompt_tokens == sum(len(p) for p in PROMPTS)
    assert answer.usage.completion_tokens == 30


def test_n_gives_n_seeded_choices_per_prompt_indexed_as_openai(client: openai.OpenAI) -> None:
    fields = {"max_tokens": 12, "temperature": 1.0, "seed": 11, "n": 2}
    answer = _create(client, prompt=PROMPTS[:2], **fields)
    assert [choice.index for choice in answer.choices] == [0, 1, 2, 3]
    texts = [choice.text for choice in answer.choices]
    assert texts[0] != texts[1]  # sequence k samples with default_rng([seed, k])
    again = _create(client, prompt=PROMPTS[:2], **fields)
    assert [choice.text for choice in again.choices] == texts
    streamed = _streamed(client, prompt=PROMPTS[:2], **fields)
    assert [streamed[i]["text"] for i in range(4)] == texts
    assert answer.usage.completion_tokens == 4 * 12


def test_many_sequences_under_concurrent_load_give_the_text_they_give_alone(
    client: openai.OpenAI,
) -> None:
    seeds = list(range(20, 26))

    def texts(seed: int) -> list[str]:
        answer = _create(client, prompt=PROMPTS, n=2, max_tokens=16, seed=seed)
        return [choice.text for choice in answer.choices]

    alone = [texts(seed) for seed in seeds]
    with ThreadPoolExecutor(len(seeds)) as pool:
        assert list(pool.map(texts, seeds)) == alone


def test_best_of_answers_the_candidates_with_the_highest_log_probability(
    client: openai.OpenAI,
) -> None:
    fields = {"max_tokens": 10, "temperature": 1.0, "seed": 5, "logprobs": 0}
    candidates = _create(client, n=4, **fields).choices  # the same four sequences
    totals = [sum(choice.logprobs.token_logprobs) for choice in candidates]
    best = _create(client, n=2, best_of=4, **fields)
    order = sorted(range(4), key=lambda k: -totals[k])[:2]
    assert [choice.text for choice in best.choices] == [candidates[k].text for k in order]
    assert [choice.index for choice in best.choices] == [0, 1]
    assert best.usage.completion_tokens == 40  # every candidate was generated


def test_best_of_below_n_or_streamed_is_refused(client: openai.OpenAI) -> None:
    error = _bad_request(client, n=3, best_of=2)
    assert error["param"] == "best_of" and "at least n (3)" in error["message"]
    error = _bad_request(client, best_of=2, stream=True)
    assert error["param"] == "best_of" and "cannot be streamed" in error["message"]


def test_echo_puts_the_prompt_first(client: openai.OpenAI) -> None:
    plain = _create(client, max_tokens=8, temperature=0).choices[0].text
    assert _create(client, max_tokens=8, temperature=0, echo=True).choices[0].text == (
        PROMPT + plain
    )
    streamed = _streamed(client, max_tokens=8, temperature=0, echo=True)
    assert streamed[0]["text"] == PROMPT + plain


def test_greedy_logprobs_name_the_most_likely_token_with_offsets(
    client: openai.OpenAI,
) -> None:
    choice = _create(client, max_tokens=12, temperature=0, logprobs=3).choices[0]
    logprobs = choice.logprobs
    assert logprobs.tokens == list(choice.text)
    assert logprobs.text_offset == list(range(len(PROMPT), len(PROMPT) + 12))  # as OpenAI
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert len(top) == 3 and max(top, key=top.get) == token  # greedy: the most likely
        assert logprob == max(top.values()) and logprob <= 0
        assert sum(math.exp(value) for value in top.values()) <= 1 + 1e-9


def test_sampled_logprobs_add_the_chosen_token_and_stream_in_pieces(
    client: openai.OpenAI,
) -> None:
    fields = {"max_tokens": 16, "temperature": 2.0, "seed": 3, "logprobs": 1}
    whole = _create(client, **fields).choices[0]
    for token, logprob, top in zip(
        whole.logprobs.tokens,
        whole.logprobs.token_logprobs,
        whole.logprobs.top_logprobs,
        strict=True,
    ):
        assert top[token] == logprob and 1 <= len(top) <= 2
    assert any(len(top) == 2 for top in whole.logprobs.top_logprobs)  # temperature 2 strays
    streamed = _streamed(client, **fields)[0]
    assert streamed["pieces"] > 1
    assert streamed["text"] == whole.text
    assert streamed["logprobs"] == whole.logprobs.model_dump()


def test_echo_with_logprobs_scores_the_prompt_first_null(client: openai.OpenAI) -> None:
    choice = _create(client, max_tokens=4, temperature=0, echo=True, logprobs=2).choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text and choice.text.startswith(PROMPT)
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(value <= 0 for value in logprobs.token_logprobs[1:])
    assert logprobs.text_offset == list(range(len(choice.text)))
    streamed = _streamed(client, max_tokens=4, temperature=0, echo=True, logprobs=2)[0]
    assert streamed["logprobs"] == logprobs.model_dump()


def test_logprobs_beyond_openais_maximum_are_refused(client: openai.OpenAI) -> None:
    error = _bad_request(client, logprobs=6)
    assert error["param"] == "logprobs" and "less than or equal to 5" in error["message"]


def _most_repeated(text: str) -> int:
    return max(Counter(text).values())


def test_penalties_change_what_greedy_decoding_repeats(client: openai.OpenAI) -> None:
    plain = _create(client, max_tokens=24, temperature=0).choices[0].text
    frequency = _create(client, max_tokens=24, temperature=0, frequency_penalty=2.0)
    presence = _create(client, max_tokens=24, temperature=0, presence_penalty=2.0)
    assert _most_repeated(frequency.choices[0].text) < _most_repeated(plain)
    assert len(set(presence.choices[0].text)) > len(set(plain))
    streamed = _streamed(client, max_tokens=24, temperature=0, frequency_penalty=2.0)
    assert streamed[0]["text"] == frequency.choices[0].text
    for field in ("presence_penalty", "frequency_penalty"):
        error = _bad_request(client, **{field: 2.5})
        assert error["param"] == field and "less than or equal to 2" in error["message"]


def test_a_logit_bias_of_100_makes_greedy_decoding_choose_that_character(
    client: openai.OpenAI, vocabulary: list[str]
) -> None:
    token = vocabulary.index("Z")
    answer = _create(client, max_tokens=6, temperature=0, logit_bias={str(token): 100})
    assert answer.choices[0].text == "ZZZZZZ"
    banned = _create(client, max_tokens=20, temperature=1.0, seed=1, logit_bias={"0": -100})
    assert vocabulary[0] not in banned.choices[0].text


@pytest.mark.parametrize(
    ("bias", "param", "message"),
    [
        ({"9999": 1}, "logit_bias", "vocabulary of {size} tokens: integers from 0 to {last}"),
        ({"a": 1}, "logit_bias", "vocabulary of {size} tokens"),
        ({"-1": 1}, "logit_bias", "vocabulary of {size} tokens"),
        ({"1": 101}, "logit_bias.1", "less than or equal to 100"),
    ],
)
def test_a_logit_bias_outside_the_vocabulary_or_range_is_refused(
    client: openai.OpenAI, vocabulary: list[str], bias: dict, param: str, message: str
) -> None:
    error = _bad_request(client, logit_bias=bias)
    assert error["param"] == param
    assert message.format(size=len(vocabulary), last=len(vocabulary) - 1) in error["message"]


def test_user_is_accepted_and_logged_with_the_completion_id(client: openai.OpenAI, server) -> None:
    answer = _create(client, max_tokens=2, user="reader-1729")
    assert f"completion {answer.id} for user 'reader-1729'" in server.logs(tail=None)
    error = _bad_request(client, user="u" * 257)
    assert error["param"] == "user"


def test_suffix_is_refused_by_name(client: openai.OpenAI) -> None:
    error = _bad_request(client, suffix="the end")
    assert error["param"] == "suffix" and "inserts nothing" in error["message"]


def test_requests_for_more_sequences_than_the_scheduler_holds_are_refused(
    client: openai.OpenAI,
) -> None:
    error = _bad_request(client, n=65)
    assert error["param"] == "n" and "at most 64 fit the step scheduler" in error["message"]
    error = _bad_request(client, prompt=[*PROMPTS, "A"], best_of=20, n=1)
    assert error["param"] == "best_of" and "4 prompts x 20 sequences each = 80" in error["message"]
    error = _bad_request(client, prompt=["A"] * 65)
    assert error["param"] == "prompt" and "at most 64 items" in error["message"]


def test_the_token_budget_counts_every_sequence(text_model: dict) -> None:
    """In-process: a small DLSERVE_MAX_COMPLETION_TOKENS, named with the field that
    multiplies the sequences (the smoke model's context is too short to reach the default)."""
    ready: ReadyModel = AREA.spec_by_name[MODEL].load("cpu", 1)
    settings = Settings(max_completion_tokens=100)
    models = SimpleNamespace(settings=settings, ready=lambda name: ready)

    def refusal(**fields: Any) -> RequestInputError:
        with pytest.raises(RequestInputError) as raised:
            asyncio.run(complete(models, **{"prompt": PROMPT, **fields}))
        return raised.value

    error = refusal(n=5, max_tokens=20)  # 5 x (7 + 20) = 135 tokens
    assert error.loc == ["n"] and "asks for 135 tokens" in str(error)
    assert "at most 100 (DLSERVE_MAX_COMPLETION_TOKENS)" in str(error)
    assert refusal(prompt=[PROMPT] * 4, max_tokens=20).loc == ["prompt"]


def test_the_model_card_lists_each_characters_token_id(text_model: dict) -> None:
    card = (Path(__file__).parents[1] / "docs/models/text-generator.md").read_text()
    shown = {"\n": "newline", " ": "space"}
    vocabulary = text_model["vocabulary"]
    for start in range(0, len(vocabulary), 10):
        cells = [shown.get(c, f"`{c}`") for c in vocabulary[start : start + 10]]
        cells += [""] * (10 - len(cells))
        assert f"| {start} | " + " | ".join(cells) + " |" in card
