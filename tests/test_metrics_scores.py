"""Score histograms: observed in bulk with the same counts and sum as one ``observe`` per score,
and each model's buckets where its scores fall."""

from __future__ import annotations

import numpy as np
from prometheus_client import Histogram

from service import registry
from service.metrics import LINEAR_SCORE_BUCKETS, observe_all, observe_scores, score_histogram


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_bulk_observation_equals_one_observe_per_score() -> None:
    buckets = (0.01, 0.05, 0.06, 0.5, 1.0)
    scores = np.concatenate(
        [np.random.default_rng(3).random(500) ** 4, buckets, [0.0, 1.0, 0.0599999]]
    ).astype(np.float32)  # bounds themselves fall in their own bucket (le = "less or equal")
    one_by_one = Histogram("one", "h", buckets=buckets, registry=None)
    for score in scores.tolist():
        one_by_one.observe(score)
    in_bulk = Histogram("bulk", "h", buckets=buckets, registry=None)
    observe_scores(in_bulk, scores)
    observe_scores(in_bulk, scores[:2])  # a few: grouped in pure Python
    observe_scores(one_by_one, scores[:2])
    observe_scores(in_bulk, np.array([], dtype=np.float32))  # nothing to add
    expected = {
        (name.replace("one", "bulk"), le): v for (name, le), v in samples(one_by_one).items()
    }
    got = samples(in_bulk)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert np.isclose(got[key], value, rtol=1e-9), key
    assert got[("bulk_count", "")] == len(scores) + 2


def test_a_few_values_grouped_in_python_equal_one_observe_each() -> None:
    buckets = (0.005, 0.1, 2.5)
    values = [0.005, 0.004, 0.1, 0.3, 2.5, 7.0, 0.3]  # bounds, between them, past the last
    one_by_one = Histogram("single", "h", buckets=buckets, registry=None)
    for value in values:
        one_by_one.observe(value)
    grouped = Histogram("grouped", "h", buckets=buckets, registry=None)
    observe_all(grouped, values[:1])
    observe_all(grouped, values[1:])
    observe_all(grouped, [])
    expected = {
        (name.replace("single", "grouped"), le): v for (name, le), v in samples(one_by_one).items()
    }
    got = samples(grouped)
    assert got.keys() == expected.keys()
    assert all(np.isclose(got[key], value, rtol=1e-12) for key, value in expected.items())


def test_each_model_has_its_own_buckets() -> None:
    fraud = score_histogram("fraud-scorer-test", (0.01, 0.06, 1.0))
    image = score_histogram("image-classifier-test", (0.5, 0.99, 1.0))
    assert fraud._upper_bounds == [0.01, 0.06, 1.0, float("inf")]
    assert image._upper_bounds == [0.5, 0.99, 1.0, float("inf")]
    assert score_histogram("fraud-scorer-test", LINEAR_SCORE_BUCKETS) is fraud  # first call wins


def test_fraud_buckets_see_both_sides_of_the_decision_threshold() -> None:
    (spec,) = [s for s in registry.model_specs() if s.name == "fraud-scorer"]
    below = [b for b in spec.score_buckets if b < 0.06]
    assert len(below) >= 5 and 0.06 in spec.score_buckets
    for declared in registry.model_specs():
        buckets = declared.score_buckets
        assert list(buckets) == sorted(buckets) and buckets[-1] == 1.0, declared.name
