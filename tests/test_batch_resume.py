"""``--resume`` accepts only the parts of the very same job: a different ``--column`` mapping
(or another scoring-relevant option) is refused with the options that differ."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from service.batch.__main__ import main
from service.batch.adapter import find_adapter
from service.batch.job import JobConfig, load_for_batch, open_store, prepare, to_tables
from service.batch.readers import open_source
from training.fraud.simulator import simulate_transactions


def _start_job(source: Path, output: Path, column_map: tuple[tuple[str, str], ...]) -> None:
    """Leave the parts folder of a job that committed its first chunk, then stopped."""
    adapter = find_adapter("fraud")
    config = JobConfig("fraud", source, output, batch_size=100, column_map=column_map)
    model = load_for_batch(adapter)
    store = open_store(config, adapter, open_source(source, 100, []).fingerprint, model)
    chunk = prepare(adapter, model, next(config.open(adapter).chunks), 0, config)
    store.commit(0, *to_tables(adapter, model, chunk, adapter.infer(model, chunk.inputs), None))


@pytest.fixture
def two_amounts(tmp_path: Path) -> Path:
    """Transactions with two amount columns, ``amt`` and ``amt_usd``."""
    frame = simulate_transactions(300, seed=3).rename(columns={"amount": "amt"})
    frame["amt_usd"] = frame["amt"] * 1.1
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    return source


def test_resume_with_another_column_mapping_is_refused(
    stored_models: dict, two_amounts: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "out.parquet"
    _start_job(two_amounts, output, (("amount", "amt"),))
    args = ["--model", "fraud", "--input", str(two_amounts), "--output", str(output), "--quiet"]
    resumed = [*args, "--batch-size", "100", "--resume", "--column", "amount=amt_usd"]
    assert main(resumed) == 2
    error = capsys.readouterr().err
    assert "columns: original" in error and "'amt'" in error and "'amt_usd'" in error
    assert not output.exists()


def test_resume_with_the_same_options_finishes_the_job(
    stored_models: dict, two_amounts: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.parquet"
    _start_job(two_amounts, output, (("amount", "amt"),))
    args = ["--model", "fraud", "--input", str(two_amounts), "--output", str(output), "--quiet"]
    assert main([*args, "--batch-size", "100", "--resume", "--column", "amount=amt"]) == 0
    assert len(pd.read_parquet(output)) == 300
