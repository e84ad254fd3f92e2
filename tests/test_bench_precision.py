"""``bench.precision`` measures the text generator on the smoke store: its cache graph's decode
throughput in process and ``/v1/completions`` served, FP32 against INT8, beside the validation
loss its variant lost (the figures are meaningless at this size; what is checked is that every
cell is measured, for both precisions, and the gate is the variant's own)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import precision
from core.model_store import latest_version, model_store_folder, read_stored_model
from core.precision import INT8, version_for_precision
from training.cli import main as train

TEXT = precision.TEXT_MODEL


@pytest.fixture(scope="module")
def text_store() -> Iterator[None]:
    """The smoke text generator (FP32 and its INT8 variant) in the tests' private store: the one
    ``stored_models`` registered when a test before asked for it, else the text area trained
    here alone (seconds, not every area's minutes) and removed afterwards, so that a later
    ``stored_models`` starts from an empty store as it expects."""
    if latest_version(TEXT) is not None:
        yield
        return
    assert train(["text", "--preset", "smoke", "--register", "--quiet"]) == 0
    try:
        yield
    finally:
        shutil.rmtree(model_store_folder() / TEXT, ignore_errors=True)


def test_the_text_generator_is_measured_at_both_precisions_beside_its_gate(
    text_store: None, tmp_path: Path
) -> None:
    out = tmp_path / "precision.json"
    arguments = ["--models", TEXT, "--seconds", "1", "--ceiling-seconds", "0.3", "--rounds", "1"]
    assert precision.main([*arguments, "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    (row,) = figures["rows"]
    int8 = version_for_precision(TEXT, INT8)
    assert (row["model"], row["fp32_version"], row["int8_version"]) == (
        TEXT,
        latest_version(TEXT),
        int8,
    )
    assert (row["unit"], row["typical"], row["method"]) == ("tokens", "batch_16", "dynamic")
    for side in ("fp32", "int8"):
        assert set(row[side]) == {"batch_1", "batch_16", "served"}, row[side]
        assert all(rate > 0 for rate in row[side].values()), row[side]
    metadata, _ = read_stored_model(f"{TEXT}:{int8}")
    (check,) = row["gate"]
    assert check == metadata["gate"]["checks"][0] and check["metric"] == "val_loss"
    assert f"{check['fp32']:.6f} -> {check['variant']:.6f}" in row["cost"]
    assert figures["text_max_tokens"] == precision.TEXT_MAX_TOKENS


def test_the_text_cells_count_tokens_and_the_table_says_so(text_store: None) -> None:
    (case,) = precision.cases([TEXT])
    assert case.unit == "tokens" and case.one is None and case.typical_rows == 16
    request = json.loads(case.body.content)
    assert case.body.route == "/v1/completions" and "stream" not in request
    assert request["max_tokens"] == precision.TEXT_MAX_TOKENS and request["temperature"] == 0
    model = precision.stored(TEXT, latest_version(TEXT))
    assert model.session.get_session_options().intra_op_num_threads == 1
    rates = precision.in_process(model, case, 0.2)
    assert set(rates) == {"batch_1", "batch_16"} and min(rates.values()) > 0, rates
    row = {"model": TEXT, "unit": "tokens", "typical": "batch_16", "method": "dynamic"}
    row |= {"cost": "val_loss", "fp32": rates | {"served": 2}, "int8": rates | {"served": 3}}
    table = precision.markdown([row])
    assert f"| {TEXT} (tokens/s; typical: 16 sequences) | dynamic |" in table
    assert "2 / 3 (1.50x)" in table


def test_an_unknown_model_is_refused() -> None:
    with pytest.raises(SystemExit):
        precision.parse_args(["--models", "fraud-scorer,no-such-model"])
