"""The rollout declarations workers share (``service.rollout_fleet``), in-process: two data
planes over one folder stand for two workers of a server, on the smoke fraud scorer with a
copy registered beside it. Each poll is called, not waited for."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.inference import DataPlane
from service.rollout import RolloutSpec, start
from service.rollout_fleet import Fleet, Refused
from service.traffic import Traffic
from tests import model_versions as mv

NAME = "fraud-scorer"


@pytest.fixture
def two_workers(
    fraud_model: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[DataPlane, DataPlane, str]]:
    """Two planes serving the fraud scorer pinned, whose fleets share ``tmp_path``; the
    candidate (a copy) registered beside."""
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    candidate = mv.new_version(store, NAME, source=store / NAME / fraud_model["version"])
    monkeypatch.setenv("DLSERVE_MODELS", "fraud")
    monkeypatch.setenv("DLSERVE_PINNED_MODELS", f"{NAME}:{fraud_model['version']}")
    planes = []
    for _ in range(2):
        plane = DataPlane.load(Settings.from_env(), Traffic())
        plane.fleet = Fleet(plane.served, tmp_path, max_shadows=2)
        planes.append(plane)
    try:
        yield planes[0], planes[1], candidate
    finally:
        mv.remove_version(store, NAME, candidate)


def _post(plane: DataPlane, spec: RolloutSpec) -> None:
    """What the route does on the worker that takes the call."""
    served, fleet = plane.model(NAME), plane.fleet
    generation = fleet.declare_start(served, spec)
    start(served, spec, fleet.max_shadows, generation, fleet.claim)


def test_a_start_reaches_the_other_worker_and_the_first_ending_wins_on_both(
    two_workers: tuple[DataPlane, DataPlane, str],
) -> None:
    one, other, candidate = two_workers
    spec = RolloutSpec(candidate=candidate, mode="canary", percent=50, promote_after=None)
    _post(one, spec)
    first = one.model(NAME).rollout
    assert first is not None and first.state == "canary" and first.generation == 1
    assert other.model(NAME).rollout is None
    with pytest.raises(Refused, match="runs on the server's workers"):
        other.fleet.declare_start(other.model(NAME), spec)

    asyncio.run(other.fleet.poll())
    second = other.model(NAME).rollout
    assert second is not None and second.state == "canary" and second.generation == 1
    asyncio.run(one.fleet.poll())  # its own declaration: nothing to apply
    assert one.model(NAME).rollout is first and first.state == "canary"

    second.rollback("a verdict on the other worker")  # declared first: generation 2
    assert second.state == "rolled_back"
    first.promote("a later verdict")  # refused: the other worker ended it first
    assert first.state == "canary" and first.candidate is not None
    first.rollback("yet another verdict")  # asks no more, changes nothing
    assert first.state == "canary"
    asyncio.run(one.fleet.poll())
    assert first.state == "rolled_back" and first.candidate is None
    assert first.reason == f"a verdict on the other worker (declared by worker {os.getpid()})"
    assert one.model(NAME).ready.version == other.model(NAME).ready.version != candidate

    _post(one, spec)  # the next rollout: generation 3, applied on the other worker
    asyncio.run(other.fleet.poll())
    assert other.model(NAME).rollout.generation == one.model(NAME).rollout.generation == 3
    one.model(NAME).rollout.promote("promoted by a call")
    asyncio.run(other.fleet.poll())
    for plane in (one, other):
        served = plane.model(NAME)
        assert served.rollout.state == "promoted" and served.ready.version == candidate
        assert served.pinned == candidate
