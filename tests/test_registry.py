"""The registries of areas: what they collect, what they refuse, and the docs that list them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from service import registry
from service.area import Area, Endpoint, ModelSpec
from service.batch.adapter import model_choices
from training.areas import training_areas

ROOT = Path(__file__).resolve().parents[1]


def test_every_served_model_is_trained_by_an_area_and_every_trained_model_is_served() -> None:
    served = {spec.name for spec in registry.model_specs()}
    trained = {model for area in training_areas().values() for model in area.models}
    assert served == trained


def test_batch_jobs_accept_every_area_and_model_with_an_adapter() -> None:
    choices = model_choices()
    for area in registry.all_areas().values():
        for adapter in area.batch:
            assert choices[adapter.model] is adapter
        if area.batch:
            assert choices[area.name] is area.batch[0]


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("clash_route", "no_area"):
        sys.modules.pop(name, None)


def test_a_plugin_reusing_a_route_is_refused(plugin_dir: Path) -> None:
    (plugin_dir / "clash_route.py").write_text(
        "from service.area import Area, Endpoint, ModelSpec\n"
        "async def handle(models): ...\n"
        "AREA = Area('clash', (ModelSpec('clash-model'),),"
        " (Endpoint('/v1/fraud/score', handle, ('clash-model',)),))\n"
    )
    with pytest.raises(registry.RegistryError, match="'/v1/fraud/score' is declared by 'fraud'"):
        registry.all_areas(("clash_route",))


def test_a_plugin_without_an_area_is_refused(plugin_dir: Path) -> None:
    (plugin_dir / "no_area.py").write_text("VALUE = 1\n")
    with pytest.raises(registry.RegistryError, match="no_area defines no AREA"):
        registry.all_areas(("no_area",))


def test_an_endpoint_naming_a_model_of_another_area_is_refused() -> None:
    async def handle(models: object) -> None: ...

    with pytest.raises(ValueError, match="names \\['fraud-scorer'\\]"):
        Area("x", (ModelSpec("x-model"),), (Endpoint("/v1/x", handle, ("fraud-scorer",)),))


def _readme_model_table() -> list[dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("## Models\n", 1)[1].split("\n\n", 2)[1]
    header, _, *rows = table.strip().splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    return [
        dict(zip(names, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
        for row in rows
    ]


def test_the_readme_model_table_matches_the_registries() -> None:
    rows = {row["model"].strip("`"): row for row in _readme_model_table()}
    specs = {spec.name: spec for spec in registry.model_specs()}
    assert set(rows) == set(specs)
    producer = {m: area.name for area in training_areas().values() for m in area.models}
    for name, row in rows.items():
        area = registry.area_of(name)
        assert row["area"] == area.name
        assert row["kind"] == ("stepwise" if specs[name].stepwise else "batched")
        routes = [e.route for e in area.endpoints if name in e.models]
        assert re.findall(r"`POST ([^`]+)`", row["routes"]) == routes
        assert f"`python -m training {producer[name]}`" == row["training"]
        card = re.fullmatch(r"\[card\]\((docs/models/[\w.-]+\.md)\)", row["card"])
        assert card is not None and (ROOT / card.group(1)).is_file(), row["card"]


def test_the_registry_lists_every_model_for_the_export_loop() -> None:
    """``python -m service.registry``: what deploy/docker/export-models.sh exports."""
    listed = subprocess.run(
        [sys.executable, "-m", "service.registry"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed == [spec.name for spec in registry.model_specs()] and len(listed) >= 6
