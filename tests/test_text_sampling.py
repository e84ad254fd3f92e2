"""The sampling side of text generation, without a model: OpenAI's presence and frequency
penalties and logit bias on the logits, log probabilities, and their bounds."""

from __future__ import annotations

import numpy as np
import pytest

from core.text_generation import SamplingParams, adjusted_logits, log_softmax, sample


def test_penalties_and_bias_follow_openais_formula() -> None:
    logits = np.array([1.0, 2.0, 3.0, 4.0])
    counts = np.array([0, 1, 3, 0])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias=((0, 5.0),))
    expected = [1.0 + 5.0, 2.0 - 0.25 - 0.5, 3.0 - 0.75 - 0.5, 4.0]
    np.testing.assert_allclose(adjusted_logits(logits, params, counts), expected)
    np.testing.assert_allclose(logits, [1.0, 2.0, 3.0, 4.0])  # the input is not changed


def test_greedy_sampling_applies_the_bias_and_the_counts() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 3.0, 2.5])
    assert sample(logits, SamplingParams(0.0), rng) == 1
    assert sample(logits, SamplingParams(0.0, logit_bias=((0, 100.0),)), rng) == 0
    penalised = SamplingParams(0.0, frequency_penalty=1.0)
    assert sample(logits, penalised, rng, np.array([0, 1, 0])) == 2  # 3 - 1 < 2.5


def test_a_frequency_penalty_spreads_greedy_choices() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([2.0, 1.9, 1.8, 0.0])
    for params, expected in (
        (SamplingParams(0.0), {0}),
        (SamplingParams(0.0, frequency_penalty=0.5), {0, 1, 2}),
    ):
        counts = np.zeros(4, dtype=np.int64)
        for _ in range(9):
            counts[sample(logits, params, rng, counts)] += 1
        assert set(np.flatnonzero(counts)) == expected


def test_log_softmax_is_a_distribution_even_for_large_logits() -> None:
    logprobs = log_softmax(np.array([1000.0, 999.0, -5.0]))
    assert np.isclose(np.exp(logprobs).sum(), 1.0) and np.all(logprobs <= 0)
    assert np.isclose(logprobs[0] - logprobs[1], 1.0)
    rows = np.array([[1000.0, 999.0, -5.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    batched = log_softmax(rows[None])  # [1, 2, vocab]: each row on its own
    assert batched.shape == (1, 2, 3) and batched.dtype == np.float64
    np.testing.assert_allclose(batched[0, 0], logprobs)
    np.testing.assert_allclose(batched[0, 1], np.log(np.full(3, 1 / 3)))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"presence_penalty": 2.5}, "presence_penalty must lie in"),
        ({"frequency_penalty": -2.01}, "frequency_penalty must lie in"),
        ({"logit_bias": ((1, 100.5),)}, "logit_bias"),
        ({"logit_bias": ((-1, 1.0),)}, "logit_bias"),
    ],
)
def test_sampling_params_refuse_values_outside_openais_ranges(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**fields)
