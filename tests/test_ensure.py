"""``python -m training.ensure``: trains exactly the areas whose models are missing, in
dependency order, and stops with exit 1 when a training fails."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from training import ensure
from training.areas import TrainingArea, TrainingError, in_dependency_order, training_areas


def _area(name: str, models: tuple[str, ...], needs: tuple[str, ...] = ()) -> TrainingArea:
    def run(args: argparse.Namespace) -> str:
        raise TrainingError(f"{name} cannot train here")

    return TrainingArea(name, models, {"full": None}, lambda parser: None, run, needs)


def test_nothing_is_trained_when_every_model_is_stored(
    stored_models: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(ensure, "train", lambda argv: pytest.fail(f"trained {argv}"))
    assert ensure.missing_areas() == []
    assert ensure.main(["--quiet"]) == 0
    present = capsys.readouterr().out.removeprefix("models present: ").strip().split(", ")
    assert sorted(present) == sorted(stored_models)


def test_missing_models_are_trained_full_in_dependency_order(
    stored_models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = {
        "judge": _area("judge", ("judge-model",), needs=("base-model",)),
        "base": _area("base", ("base-model",)),
        "fraud": training_areas()["fraud"],  # stored: not trained again
    }
    ordered = in_dependency_order(list(declared.values()))
    assert [area.name for area in ordered] == ["base", "fraud", "judge"]
    monkeypatch.setattr(ensure, "training_areas", lambda: {a.name: a for a in ordered})
    calls: list[list[str]] = []
    monkeypatch.setattr(ensure, "train", lambda argv: calls.append(argv) or 0)
    assert ensure.main(["--quiet"]) == 0
    assert calls == [
        ["base", "--preset", "full", "--quiet"],
        ["judge", "--preset", "full", "--quiet"],
    ]


def test_a_failed_training_stops_with_exit_1(
    stored_models: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    broken = _area("broken", ("never-stored",))
    monkeypatch.setattr(ensure, "training_areas", lambda: {"broken": broken})
    monkeypatch.setattr(
        "training.cli.training_areas", lambda: {"broken": dataclasses.replace(broken)}
    )
    assert ensure.main(["--quiet"]) == 1
    captured = capsys.readouterr()
    assert "broken cannot train here" in captured.err
    assert "training 'broken' failed" in captured.out


def test_the_quickest_area_trains_first_after_what_it_needs() -> None:
    slow_judge = dataclasses.replace(
        _area("judge", ("judge-model",), needs=("base-model",)), full_minutes=1
    )
    base = dataclasses.replace(_area("base", ("base-model",)), full_minutes=30)
    quick = dataclasses.replace(_area("quick", ("quick-model",)), full_minutes=2)
    other = dataclasses.replace(
        _area("other", ("other-model",), needs=("stored-model",)), full_minutes=5
    )
    ordered = ensure.quickest_first([slow_judge, base, quick, other])
    assert [area.name for area in ordered] == ["quick", "other", "base", "judge"]


def test_the_status_file_names_the_model_in_training_and_those_waiting(
    stored_models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.training_status import status_path, training_state

    declared = [_area("first", ("first-model",)), _area("second", ("second-model",))]
    monkeypatch.setattr(ensure, "training_areas", lambda: {a.name: a for a in declared})
    seen: list[tuple[str | None, str | None]] = []

    def train(argv: list[str]) -> int:
        seen.append((training_state("first-model"), training_state("second-model")))
        return 0

    monkeypatch.setattr(ensure, "train", train)
    assert ensure.main(["--quiet", "--preset", "smoke"]) == 0
    assert seen == [("training", "waiting"), (None, "training")]
    assert not status_path().exists()
