"""Rollouts in-process (``service.rollout``): the PSI, the spec's limits, the canary's hash,
and, on the smoke fraud scorer with a second version beside it, a shadowed burst joined
into few candidate calls within its bound, and the cancel."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from harness.payloads import transactions
from service.areas.fraud import Transaction, to_arrays
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


@pytest.fixture
def plane_and_candidate(
    fraud_model: dict, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DataPlane, str]]:
    """The fraud scorer served at its session version (pinned), a copy registered beside."""
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    candidate = mv.new_version(store, NAME, source=store / NAME / fraud_model["version"])
    monkeypatch.setenv("DLSERVE_MODELS", "fraud")
    monkeypatch.setenv("DLSERVE_PINNED_MODELS", f"{NAME}:{fraud_model['version']}")
    try:
        yield DataPlane.load(Settings.from_env(), Traffic()), candidate
    finally:
        mv.remove_version(store, NAME, candidate)


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
