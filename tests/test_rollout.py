"""Rollouts in-process (``service.rollout``): the PSI, the spec's limits, the canary's hash,
and, on the smoke fraud scorer with a second version beside it, a shadowed burst joined
into few candidate calls within its bound, and the cancel; on the image classifier, class
frequencies, class agreement and a class drift rolled back; on the text generator, a canary's
streams counted to their end and a length or finish-reason drift rolled back."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from core.text_generation import SamplingParams
from harness.images import load_test_images
from harness.payloads import transactions
from service.area import SequenceEnd
from service.areas.fraud import Transaction, to_arrays
from service.areas.text.program import encode_request, sequence_end
from service.config import Settings, SettingsError
from service.inference import DataPlane
from service.rollout import (
    ROLLOUT_REQUESTS,
    ROLLOUT_SHADOW,
    SERVED_WRITES_EVERY,
    RolloutSpec,
    psi,
    refusal_of,
    stable_share,
    start,
)
from service.rollout_stepwise import watched
from service.traffic import Traffic
from tests import model_versions as mv

NAME = "fraud-scorer"
INPUTS = to_arrays([Transaction(**row) for row in transactions(3)])


def test_psi_is_zero_for_one_distribution_and_large_for_an_inverted_one() -> None:
    served = np.array([500, 300, 150, 50, 0])
    assert psi(served, served * 3) == pytest.approx(0.0)
    assert psi(served, served[::-1]) > 0.25
    # a small sampling difference stays under the usual threshold
    assert psi(served, np.array([480, 320, 140, 60, 0])) < 0.05


def test_the_spec_names_the_field_and_its_limit() -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate({"candidate": "v2", "mode": "canary", "percent": 0})
    assert caught.value.errors()[0]["loc"] == ("percent",)
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate(
            {"candidate": "v2", "mode": "shadow", "min_requests": 500, "promote_after": 100}
        )
    (error,) = caught.value.errors()
    assert error["loc"] == ("promote_after",) and "min_requests (500)" in error["msg"]
    with pytest.raises(ValidationError):  # no strings as numbers, no unknown fields
        RolloutSpec.model_validate({"candidate": "v2", "mode": "canary", "percent": "10"})
    with pytest.raises(ValidationError):
        RolloutSpec.model_validate({"candidate": "v2", "mode": "canary", "precent": 10})


def test_the_canary_hash_is_stable_and_spreads_keys_evenly() -> None:
    shares = [stable_share("m", "v2", f"key-{n}") for n in range(20_000)]
    assert shares == [stable_share("m", "v2", f"key-{n}") for n in range(20_000)]
    assert 0.09 <= np.mean(np.array(shares) < 0.1) <= 0.11
    # another candidate draws other keys
    other = [stable_share("m", "v3", f"key-{n}") < 0.1 for n in range(20_000)]
    assert other != [share < 0.1 for share in shares]


@contextmanager
def _beside(
    monkeypatch: pytest.MonkeyPatch, area: str, stored: dict, alter: mv.Alter | None = None
) -> Iterator[tuple[DataPlane, str]]:
    """``area``'s model served at its session version ``stored`` (pinned), and a copy
    registered beside it (``alter``ed): the data plane and the copy's version."""
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    name = stored["name"]
    candidate = mv.new_version(store, name, alter, source=store / name / stored["version"])
    monkeypatch.setenv("DLSERVE_MODELS", area)
    monkeypatch.setenv("DLSERVE_PINNED_MODELS", f"{name}:{stored['version']}")
    try:
        yield DataPlane.load(Settings.from_env(), Traffic()), candidate
    finally:
        mv.remove_version(store, name, candidate)


@pytest.fixture
def plane_and_candidate(
    fraud_model: dict, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DataPlane, str]]:
    """The fraud scorer served at its session version (pinned), a copy registered beside."""
    with _beside(monkeypatch, "fraud", fraud_model) as beside:
        yield beside


def test_a_shadow_burst_is_joined_into_few_calls_and_the_overflow_dropped_and_counted(
    plane_and_candidate: tuple[DataPlane, str],
) -> None:
    """50 concurrent 3-row requests, every one shadowed, at most 40 in flight: the 40 taken
    are compared in a few candidate calls (64 rows each at most), the other 10 dropped."""
    plane, candidate = plane_and_candidate
    served = plane.model(NAME)
    old = served.ready.version
    spec = RolloutSpec(candidate=candidate, mode="shadow", min_requests=10, promote_after=None)
    rollout = start(served, spec, max_shadows=40)
    assert rollout.state == "shadow" and served.pinned == old
    series = {o: ROLLOUT_SHADOW.labels(NAME, o) for o in ("dropped", "compared", "calls")}
    before = {outcome: counter._value.get() for outcome, counter in series.items()}
    served_ok = ROLLOUT_REQUESTS.labels(NAME, old, "served", "ok")
    served_before = served_ok._value.get()

    async def burst() -> list[str]:
        answers = await asyncio.gather(*(served.predict(INPUTS) for _ in range(50)))
        while rollout.shadow.compared + rollout.shadow.dropped < 50:  # flushes on this loop
            await asyncio.sleep(0)
        return [ready.version for ready, _ in answers]

    versions = asyncio.run(burst())
    assert set(versions) == {old}, "a shadowed request was answered by the candidate"
    shadow = rollout.shadow
    assert shadow.compared + shadow.dropped == 50 and shadow.errors == 0
    assert shadow.dropped >= 1 and shadow.compared >= 21, shadow
    assert shadow.calls <= -(-shadow.compared * 3 // 64) + 1, shadow  # rows / 64, rounded up
    for outcome, counter in series.items():
        assert counter._value.get() - before[outcome] == getattr(shadow, outcome), outcome
    assert shadow.agreement == 1.0 and shadow.rows == 3 * shadow.compared
    assert rollout.figures["served"].requests == 50
    assert rollout.figures["candidate"].requests == shadow.compared
    assert rollout.describe()["shadow"]["in_flight"] == 0
    # the served answers reach Prometheus SERVED_WRITES_EVERY at a time, and all at the end
    assert SERVED_WRITES_EVERY > 50 and served_ok._value.get() == served_before
    rollout.cancel()
    assert served_ok._value.get() - served_before == 50


def test_a_shadow_flush_stays_within_the_candidate_s_queue_bound(
    fraud_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``DLSERVE_MAX_QUEUE_ROWS`` 10, shadows of 3-row requests are flushed at most 10 rows
    a call (3 requests), so the candidate's batcher refuses none of them: all compared."""
    monkeypatch.setenv("DLSERVE_MAX_QUEUE_ROWS", "10")
    with _beside(monkeypatch, "fraud", fraud_model) as (plane, candidate):
        served = plane.model(NAME)
        spec = RolloutSpec(candidate=candidate, mode="shadow", min_requests=10, promote_after=None)
        rollout = start(served, spec, max_shadows=64)

        async def one_at_a_time() -> None:  # (the served queue bound holds 3 requests too)
            for _ in range(12):
                await served.predict(INPUTS)
            while rollout.shadow.compared + rollout.shadow.dropped < 12:  # flushes on this loop
                await asyncio.sleep(0)

        asyncio.run(one_at_a_time())
        rollout.cancel()
    shadow = rollout.shadow
    assert shadow.dropped == 0 and shadow.compared == 12 and shadow.rows == 36, shadow
    assert shadow.calls >= 4  # 36 rows, 9 a call at most (3 requests of 3 rows)
    assert rollout.figures["candidate"].requests == 12


def test_a_shadow_flush_that_disagrees_rolls_the_candidate_back(
    plane_and_candidate: tuple[DataPlane, str], fraud_model: dict
) -> None:
    """A candidate answering 1 - p, shadowed: its first flushes (figures and comparison per
    flush) break the bounds; the candidate is dropped and its buffer closed."""
    plane, _ = plane_and_candidate
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    source = store / NAME / fraud_model["version"]
    inverted = mv.new_version(store, NAME, mv.invert_output("fraud_probability"), source=source)
    served = plane.model(NAME)
    spec = RolloutSpec(
        candidate=inverted, mode="shadow", min_requests=10, min_agreement=0.9, promote_after=None
    )
    try:
        rollout = start(served, spec, max_shadows=64)
        generation = rollout.candidate

        async def shadowed() -> None:
            for _ in range(2000):  # one request at a time, until the verdict
                if not rollout.running:
                    return
                await served.predict(INPUTS)

        asyncio.run(shadowed())
    finally:
        mv.remove_version(store, NAME, inverted)
    assert rollout.state == "rolled_back", rollout.reason
    assert "PSI" in rollout.reason or "agreement" in rollout.reason, rollout.reason
    assert rollout.shadow.calls >= 1 and rollout.shadow.agreement is not None
    assert rollout.shadow.agreement < 0.9 and rollout.figures["candidate"].requests >= 10
    assert generation is not None and generation.closed and rollout.candidate is None
    assert rollout.describe()["shadow"]["in_flight"] == 0


def test_a_cancel_drops_the_candidate_and_gives_the_hold_back(
    plane_and_candidate: tuple[DataPlane, str],
) -> None:
    plane, candidate = plane_and_candidate
    served = plane.model(NAME)
    pinned = served.pinned
    spec = RolloutSpec(candidate=candidate, mode="canary", percent=100, promote_after=None)
    rollout = start(served, spec, max_shadows=2)
    generation = rollout.candidate
    assert generation is not None
    ready, _ = asyncio.run(served.predict(INPUTS))  # no key: 100% draws the candidate
    assert ready.version == candidate
    assert refusal_of(served, spec) is not None  # one rollout at a time
    rollout.cancel()
    assert rollout.state == "canceled" and served.pinned == pinned
    assert generation.closed and rollout.candidate is None
    ready, _ = asyncio.run(served.predict(INPUTS))
    assert ready.version != candidate
    states = [t["state"] for t in rollout.describe()["transitions"]]
    assert states == ["loading", "canary", "canceled"]


def test_a_declared_rollout_with_a_bad_field_stops_the_start_naming_it(
    fraud_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLSERVE_MODELS", "fraud")
    monkeypatch.setenv("DLSERVE_ROLLOUTS", '{"fraud-scorer": {"candidate": "v2", "mode": "blue"}}')
    with pytest.raises(SettingsError, match=r"DLSERVE_ROLLOUTS: fraud-scorer: mode: Input should"):
        DataPlane.load(Settings.from_env(), Traffic())
    monkeypatch.setenv(
        "DLSERVE_ROLLOUTS", '{"image-classifier": {"candidate": "v2", "mode": "canary"}}'
    )
    with pytest.raises(SettingsError, match=r"model 'image-classifier' is not served here"):
        DataPlane.load(Settings.from_env(), Traffic())


async def _settled(rollout: Any, answers: list[Any]) -> list[Any]:
    """``answers`` (awaited in order), then the rollout's shadowed requests compared (or the
    rollout ended)."""
    done = [await answer for answer in answers]
    while rollout.running and rollout.describe()["shadow"]["in_flight"]:  # flushes on this loop
        await asyncio.sleep(0)
    return done


def test_a_class_drift_is_rolled_back_and_a_shadow_compares_classes(
    image_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate that lists the 10 classes in reverse, shadowing requests of the same 8
    images: every row disagrees by class while its confidences (the score output) are the
    served ones, so only the class frequencies' PSI can roll it back, which it does at the
    first check (the first flush past ``min_requests``)."""
    images, _ = load_test_images(8)
    reverse = mv.reverse_classes("probabilities", 10)
    with _beside(monkeypatch, "image", image_model, reverse) as (plane, candidate):
        served = plane.model("image-classifier")
        labels = served.ready.contract.labels
        spec = RolloutSpec(candidate=candidate, mode="shadow", min_requests=10, promote_after=None)
        rollout = start(served, spec, max_shadows=64)
        requests = [served.predict({"images": images}) for _ in range(15)]
        asyncio.run(_settled(rollout, requests))
        described = rollout.describe()
    assert rollout.state == "rolled_back", described["reason"]
    assert described["reason"].startswith("classes PSI"), described["reason"]
    assert described["drift"]["scores"] == 0.0 and described["drift"]["classes"] > 0.25
    shadow = described["shadow"]
    assert shadow["agreement_by"] == "class" and shadow["mean_abs_difference"] is None
    assert shadow["agreement"] == 0.0 and shadow["rows"] == 8 * shadow["compared"]
    assert 10 <= shadow["compared"] <= 15 and 1 <= shadow["calls"] <= shadow["compared"]
    served_classes = described["figures"]["served"]["classes"]
    candidate_classes = described["figures"]["candidate"]["classes"]
    assert list(served_classes) == labels and sum(served_classes.values()) % 8 == 0
    # the same images each time: the candidate's counts mirror the served ones, per request
    served_requests = sum(served_classes.values()) // 8
    per_request = [served_classes[label] // served_requests for label in labels]
    compared = shadow["compared"]
    assert [candidate_classes[label] for label in labels] == [
        compared * c for c in per_request[::-1]
    ]


def test_an_equal_copy_agrees_by_class_in_a_shadow(
    image_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = load_test_images(40)
    with _beside(monkeypatch, "image", image_model) as (plane, candidate):
        served = plane.model("image-classifier")
        spec = RolloutSpec(candidate=candidate, mode="shadow", min_requests=10, promote_after=10)
        rollout = start(served, spec, max_shadows=64)
        batches = [{"images": images[i : i + 4]} for i in range(0, 40, 4)]
        asyncio.run(_settled(rollout, [served.predict(b) for b in batches]))
    assert rollout.state == "promoted", rollout.reason
    figures = rollout.describe()["figures"]
    assert figures["candidate"]["classes"] == figures["served"]["classes"]
    assert rollout.shadow.agreement == 1.0 and rollout.shadow.rows == 40
    assert rollout.drift == {"scores": 0.0, "classes": 0.0}


def _completions(served: Any, count: int, max_tokens: int) -> list[tuple[str, list[Any]]]:
    """``count`` seeded completions of one prompt streamed to the end: per request, the
    version that answered and its outputs."""
    ready = served.ready

    async def one(seed: int) -> tuple[str, list[Any]]:
        request = encode_request(
            ready, ready.contract.vocabulary[0], max_tokens, SamplingParams(1.0), seed
        )
        version, outputs = served.stream([request])
        return version.version, [output async for _, output in outputs]

    async def every() -> list[tuple[str, list[Any]]]:
        return [await one(seed) for seed in range(count)]

    return asyncio.run(every())


def test_a_stepwise_canary_counts_streams_to_their_end_and_refuses_a_shadow(
    text_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _beside(monkeypatch, "text", text_model) as (plane, candidate):
        served = plane.model("text-generator")
        shadow = RolloutSpec(candidate=candidate, mode="shadow")
        refusal = refusal_of(served, shadow)
        assert refusal is not None and refusal.startswith("mode 'shadow'"), refusal
        spec = RolloutSpec(
            candidate=candidate, mode="canary", percent=100, min_requests=10, promote_after=12
        )
        rollout = start(served, spec, max_shadows=2)
        answers = _completions(served, 12, max_tokens=5)
    assert {version for version, _ in answers} == {candidate}
    assert all(outputs[-1]["finish_reason"] == "length" for _, outputs in answers)
    figures = rollout.describe()["figures"]["candidate"]
    assert figures["requests"] == 12 and figures["errors"] == 0 and figures["sequences"] == 12
    assert figures["finish_reasons"] == {"length": 12}
    assert figures["completion_tokens"]["8"] == 12  # 5 tokens: the bucket up to 8
    # no served answer reached min_requests: promoted without a drift check
    assert rollout.state == "promoted" and rollout.drift == {}, rollout.reason


def test_a_stepwise_length_or_finish_drift_is_rolled_back(
    text_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Completions as the stream watcher reports them: the served version's run to their
    length, the candidate's stop after 2 tokens; rolled back at the first check."""
    with _beside(monkeypatch, "text", text_model) as (plane, candidate):
        served = plane.model("text-generator")
        current = served.acquire()  # the served version's generation (before any canary)
        served.release(current)
        spec = RolloutSpec(candidate=candidate, mode="canary", percent=50, min_requests=10)
        rollout = start(served, spec, max_shadows=2)
        for _ in range(10):
            rollout.completed(current, [("length", 64)], 0.5)
            rollout.completed(rollout.candidate, [("stop", 2)], 0.1)
    assert rollout.state == "rolled_back" and rollout.candidate is None
    assert "PSI" in rollout.reason and set(rollout.drift) == {"completion_tokens", "finish_reasons"}
    assert min(rollout.drift.values()) > spec.max_psi


def test_a_stepwise_candidate_whose_streams_fail_is_rolled_back_on_its_error_ratio(
    text_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams of the candidate that raise, through the rollout's watcher as
    ``ServedModel.stream`` wraps them: each an error of the candidate's."""

    async def failing() -> AsyncIterator[tuple[int, Any]]:
        yield 0, {"text": "a", "finish_reason": None, "tokens": 1}
        raise RuntimeError("the decode call failed")

    async def consume(outputs: AsyncIterator[tuple[int, Any]]) -> None:
        with pytest.raises(RuntimeError):
            _ = [item async for item in outputs]

    with _beside(monkeypatch, "text", text_model) as (plane, candidate):
        served = plane.model("text-generator")
        spec = RolloutSpec(candidate=candidate, mode="canary", percent=10, min_requests=10)
        rollout = start(served, spec, max_shadows=2)
        generation = rollout.candidate
        assert generation is not None
        for _ in range(10):
            asyncio.run(consume(rollout.watch(generation, failing())))
    assert rollout.state == "rolled_back", rollout.reason
    assert rollout.reason.startswith("error ratio 1.000 > 0.05 over 10 requests"), rollout.reason
    figures = rollout.describe()["figures"]["candidate"]
    assert figures["errors"] == figures["requests"] == 10 and figures["sequences"] == 0


def test_the_stream_watcher_reports_an_end_a_failure_and_nothing_for_a_reader_that_left() -> None:
    seen: list[Any] = []
    end = SequenceEnd(sequence_end)

    async def outputs(fail: bool) -> AsyncIterator[tuple[int, Any]]:
        yield 0, {"text": "a", "finish_reason": None, "tokens": 1}
        if fail:
            raise RuntimeError("the step failed")
        yield 0, {"text": "b", "finish_reason": "stop", "tokens": 2}

    def watch(fail: bool) -> AsyncIterator[tuple[int, Any]]:
        ticks = iter((1.0, 1.5))
        return watched(
            outputs(fail),
            end,
            lambda ends, s: seen.append((ends, s)),
            lambda: seen.append("failed"),
            lambda: next(ticks),
        )

    async def run() -> None:
        assert len([item async for item in watch(False)]) == 2
        with pytest.raises(RuntimeError):
            _ = [item async for item in watch(True)]
        early = watch(False)
        await anext(early)
        await early.aclose()

    asyncio.run(run())
    assert seen == [([("stop", 2)], 0.5), "failed"]
