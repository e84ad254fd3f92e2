"""``python -m service.batch --model text``: one completion per prompt, equal to the HTTP
route's for the same seed and settings, rejects with reasons, and the same file twice over."""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
import pytest

from harness.local_server import LocalServer
from service.areas.text import ROUTE
from service.batch.__main__ import main

ROWS = [
    {"prompt": "ROMEO:\n", "seed": 1, "max_tokens": 8, "temperature": 1.0},
    {"prompt": "KING:\nMy", "seed": 2, "max_tokens": 150, "temperature": 0.5},  # > context
    {"prompt": "", "seed": 3, "max_tokens": 5, "temperature": 1.0},  # empty: rejected
    {"prompt": "A\u263a", "seed": 4, "max_tokens": 5, "temperature": 1.0},  # unknown char
    {"prompt": "Enter", "seed": None, "max_tokens": 6, "temperature": 1.0},  # seeded by prompt
    {"prompt": "A", "seed": 5, "max_tokens": 2049, "temperature": 1.0},  # past the limit
]


def _run(tmp_path: Path, name: str) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    source = tmp_path / "prompts.jsonl"
    pd.DataFrame(ROWS).to_json(source, orient="records", lines=True)
    output = tmp_path / f"{name}.parquet"
    code = main(["--model", "text", "--quiet", "--input", str(source), "--output", str(output)])
    return code, pd.read_parquet(output), pd.read_parquet(tmp_path / f"{name}.rejects.parquet")


@pytest.mark.http
def test_batch_completions_equal_the_route_and_repeat_exactly(
    server: LocalServer, tmp_path: Path
) -> None:
    code, scores, rejects = _run(tmp_path, "first")
    assert code == 3
    assert rejects["row_id"].tolist() == [2, 3, 5]
    assert rejects["reason"][0].startswith("prompt: must be a non-empty string")
    assert "'☺' (U+263A) at position 1" in rejects["reason"][1]
    assert rejects["reason"][2] == "max_tokens: must be an integer from 1 to 2048"
    assert scores["row_id"].tolist() == [0, 1, 4]
    for row, text, seed in zip(scores["row_id"], scores["text"], scores["seed"], strict=True):
        request = {k: v for k, v in ROWS[row].items() if k != "seed"} | {"seed": int(seed)}
        answer = httpx.post(server.url + ROUTE, json=request, timeout=30).json()
        assert answer["choices"][0]["text"] == text
        assert len(text) == ROWS[row]["max_tokens"]  # no stop strings: every row runs to length
    assert set(scores["finish_reason"]) == {"length"}
    assert set(scores["model_name"]) == {"text-generator"}
    _, again, _ = _run(tmp_path, "again")
    pd.testing.assert_frame_equal(scores, again)
