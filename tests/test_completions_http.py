"""``POST /v1/completions`` over real HTTP with the official ``openai`` client: greedy text equal
to in-process decoding, seeds, stop strings, streaming, continuous batching, errors in OpenAI's
shape, and the metrics. The other parameters of OpenAI's reference (lists of prompts, ``n``,
``best_of``, ``echo``, ``logprobs``, the penalties, ``logit_bias``, ``user``, ``suffix``) are in
test_completions_params_http.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from core.model_store import load_model
from core.text_generation import CharVocabulary, TextGenerator, generate, session_call
from harness.http_checks import metric_value, series_sum
from harness.local_server import LocalServer
from service.areas.text import MODEL, ROUTE

pytestmark = pytest.mark.http
PROMPT = "ROMEO:\n"


@pytest.fixture(scope="module")
def client(server: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _complete(client: openai.OpenAI, **fields: Any) -> openai.types.Completion:
    return client.completions.create(model=MODEL, prompt=PROMPT, **fields)


def _streamed(client: openai.OpenAI, **fields: Any) -> tuple[str, list[Any]]:
    chunks = list(_complete(client, stream=True, **fields))
    return "".join(choice.text for chunk in chunks for choice in chunk.choices), chunks


def test_greedy_text_equals_in_process_decoding(client: openai.OpenAI, text_model: dict) -> None:
    answer = _complete(client, max_tokens=12, temperature=0)
    stored = load_model(f"{MODEL}:{text_model['version']}", "cpu")
    vocabulary = CharVocabulary.from_metadata(text_model)
    expected = generate(
        TextGenerator(session_call(stored.session), text_model), vocabulary.encode(PROMPT), 12
    )
    assert answer.object == "text_completion" and answer.model == MODEL
    assert answer.choices[0].text == vocabulary.decode(expected)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.prompt_tokens == len(PROMPT) and answer.usage.completion_tokens == 12
    assert answer.usage.total_tokens == len(PROMPT) + 12
    assert answer.system_fingerprint == f"{MODEL}:{text_model['version']}"


def test_the_same_seed_gives_the_same_text(client: openai.OpenAI) -> None:
    first = _complete(client, max_tokens=20, temperature=1.0, seed=7).choices[0].text
    assert _complete(client, max_tokens=20, temperature=1.0, seed=7).choices[0].text == first
    others = {
        _complete(client, max_tokens=20, temperature=1.0, seed=s).choices[0].text for s in range(5)
    }
    assert len(others) > 1  # seeds matter


def test_a_stream_carries_the_same_text_in_openai_chunks(client: openai.OpenAI) -> None:
    whole = _complete(client, max_tokens=20, temperature=0.8, seed=3).choices[0].text
    text, chunks = _streamed(client, max_tokens=20, temperature=0.8, seed=3)
    assert text == whole and len(chunks) > 1
    assert all(chunk.object == "text_completion" for chunk in chunks)
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "length"
    assert {chunk.id for chunk in chunks} == {chunks[0].id}


def test_a_stream_can_end_with_the_usage(client: openai.OpenAI) -> None:
    _, chunks = _streamed(client, max_tokens=5, stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


def test_a_stop_string_ends_the_text_and_is_not_included(client: openai.OpenAI) -> None:
    greedy = _complete(client, max_tokens=24, temperature=0).choices[0].text
    stop = greedy[6:8]
    expected = greedy[: greedy.index(stop)]
    for stream in (False, True):
        if stream:
            text, _ = _streamed(client, max_tokens=24, temperature=0, stop=[stop, "\x01"])
        else:
            answer = _complete(client, max_tokens=24, temperature=0, stop=stop)
            text = answer.choices[0].text
            assert answer.choices[0].finish_reason == "stop"
        assert text == expected


def test_seeded_requests_give_the_same_text_alone_and_under_concurrent_load(
    client: openai.OpenAI,
) -> None:
    """(That concurrent sequences advance in one call per step is shown in-process, in
    test_text_scheduler.py: over HTTP the smoke model finishes too fast to overlap reliably.)"""
    seeds = list(range(10, 18))
    alone = [_complete(client, max_tokens=20, seed=s).choices[0].text for s in seeds]
    with ThreadPoolExecutor(len(seeds)) as pool:
        together = list(
            pool.map(lambda s: _complete(client, max_tokens=20, seed=s).choices[0].text, seeds)
        )
    assert together == alone


def test_the_openai_model_list_names_the_generator(client: openai.OpenAI) -> None:
    assert MODEL in {model.id for model in client.models.list()}


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "ROMEO\u263a"}, "prompt", "'☺' (U+263A) at position 5"),
        ({"max_tokens": 2049}, "max_tokens", "less than or equal to 2048"),
        ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"top_k": -1}, "top_k", "greater than or equal to 0"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 stop strings"),
        ({"stop": 5}, "stop", "valid string"),  # was stop.constrained-str
        ({"stop": ["a", 5]}, "stop", "valid string"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(
    client: openai.OpenAI, fields: dict, param: str, message: str
) -> None:
    arguments = {"model": MODEL, "prompt": PROMPT, **fields}
    extension = {"top_k": arguments.pop("top_k")} if "top_k" in arguments else None  # as vLLM
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(**arguments, extra_body=extension)
    error = raised.value.body
    assert raised.value.status_code == 400
    assert error["param"] == param and message in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_a_prompt_longer_than_the_context_names_it_and_the_limit(
    client: openai.OpenAI, text_model: dict
) -> None:
    context = text_model["context_length"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=MODEL, prompt="A" * (context + 1), max_tokens=1)
    message = raised.value.body["message"]
    assert raised.value.body["param"] == "prompt"
    assert f"maximum context length is {context} tokens" in message
    assert f"your prompt has {context + 1} tokens" in message
    assert raised.value.body["code"] == "context_length_exceeded"


def test_the_longest_completion_goes_far_past_the_context(
    client: openai.OpenAI, text_model: dict
) -> None:
    """A whole-context prompt and 2,048 new characters: the greedy text equals in-process
    decoding, whose window restarts when the cache is full."""
    context = text_model["context_length"]
    prompt = (PROMPT * context)[:context]
    answer = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2048, temperature=0)
    stored = load_model(f"{MODEL}:{text_model['version']}", "cpu")
    vocabulary = CharVocabulary.from_metadata(text_model)
    generator = TextGenerator(session_call(stored.session), text_model)
    expected = generate(generator, vocabulary.encode(prompt), 2048)
    assert answer.usage.completion_tokens == 2048 and answer.choices[0].finish_reason == "length"
    assert answer.choices[0].text == vocabulary.decode(expected)


def test_an_unknown_model_is_a_404_in_openai_shape(server: LocalServer) -> None:
    response = httpx.post(server.url + ROUTE, json={"model": "gpt-9", "prompt": "A"}, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_even_framework_errors_use_openai_shape(server: LocalServer) -> None:
    response = httpx.post(server.url + ROUTE, content=b"{not json", timeout=10)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_completions_are_answered_on_the_lean_path_and_counted_by_bentoml_s_metrics(
    server: LocalServer,
) -> None:
    """Streamed or not, the route skips BentoML's per-request layers (service/lean_path.py);
    BentoML's request metrics count the stream once its last byte is sent."""
    ok = {"endpoint": ROUTE, "http_response_code": "200", "runner_name": "dlserve"}
    before = series_sum(server, "bentoml_service_request_total", **ok)
    body = {"prompt": PROMPT, "max_tokens": 3}
    with httpx.stream("POST", server.url + ROUTE, json={**body, "stream": True}) as streamed:
        events = [line for line in streamed.iter_lines() if line]
    whole = httpx.post(server.url + ROUTE, json=body, timeout=30)
    assert streamed.headers.get("x-dlserve-path") == "lean" == whole.headers.get("x-dlserve-path")
    assert events[-1] == "data: [DONE]" and whole.json()["usage"]["completion_tokens"] == 3
    assert series_sum(server, "bentoml_service_request_total", **ok) == before + 2


def test_generation_metrics_count_tokens_and_time(
    client: openai.OpenAI, server: LocalServer
) -> None:
    before = metric_value(server, "dlserve_generation_tokens_total", model=MODEL)
    first_before = metric_value(server, "dlserve_time_to_first_token_seconds_count", model=MODEL)
    _complete(client, max_tokens=9, temperature=0)
    assert metric_value(server, "dlserve_generation_tokens_total", model=MODEL) == before + 9
    assert metric_value(server, "dlserve_time_to_first_token_seconds_count", model=MODEL) == (
        first_before + 1
    )
    assert metric_value(server, "dlserve_prompt_tokens_total", model=MODEL) >= len(PROMPT)
    assert np.isfinite(metric_value(server, "dlserve_e2e_request_latency_seconds_sum", model=MODEL))
