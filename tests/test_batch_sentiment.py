"""Batch jobs for the sentiment models: a named text column, the route's rules for bad texts,
the route's tokeniser, and labels equal to ``/v1/sentiment``'s answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import TypeAdapter, ValidationError

from harness.local_server import LocalServer
from service.areas.sentiment import MAX_CHARACTERS, Texts, validate_texts
from service.batch.__main__ import main

TEXTS = [
    "A warm, funny and beautifully acted film.",
    "Dull, predictable and far too long.",
    "word " * 400,  # longer than either model's max_tokens: truncated
    "Not bad at all.",
]
# Texts with nothing left once normalised got "negative, 1.0" from the RNN (issue 20, row 15).
NO_CONTENT_TEXTS = [
    "\x00\x01\x1f",
    "\u200b\u200e\ufeff",
    "\u0301\u0300 ",
    "\ufffd\x7f\x85",
    "\u2028\x0b",
]
BAD_TEXTS: list[Any] = [None, "", "   \n", "x" * (MAX_CHARACTERS + 1), *NO_CONTENT_TEXTS]


def _accepted_by_pydantic(text: Any) -> bool:
    try:
        TypeAdapter(Texts).validate_python([text])
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("text", [*BAD_TEXTS, "x" * MAX_CHARACTERS, " ok ", "\x00é\x01", "日"])
def test_validator_and_the_request_model_agree(text: Any) -> None:
    _, reasons = validate_texts(pa.table({"text": pa.array([text, "fine"], pa.string())}))
    assert (reasons[0] is None) == _accepted_by_pydantic(text)
    assert reasons[1] is None


def test_a_missing_or_non_text_column_rejects_every_row() -> None:
    _, reasons = validate_texts(pa.table({"review": ["good"]}))
    assert reasons.tolist() == ["text: column is missing"]
    _, reasons = validate_texts(pa.table({"text": [3, 4]}))
    assert reasons.tolist() == ["text: must be a string"] * 2


@pytest.mark.http
@pytest.mark.parametrize("model", ["rnn", "transformer"])
def test_a_named_column_scores_like_http(server: LocalServer, tmp_path: Path, model: str) -> None:
    reviews = [*TEXTS, *BAD_TEXTS]
    source = tmp_path / "reviews.jsonl"
    pd.DataFrame({"key": range(len(reviews)), "review": reviews}).to_json(
        source, orient="records", lines=True
    )
    output = tmp_path / "labels.parquet"
    args = ["--model", f"sentiment-{model}", "--input", str(source), "--output", str(output)]
    options = ["--column", "text=review", "--id-column", "key", "--batch-size", "3", "--quiet"]
    assert main([*args, *options]) == 3  # finished, with rejects
    scores = pd.read_parquet(output)
    rejects = pd.read_parquet(tmp_path / "labels.rejects.parquet")
    assert scores["key"].tolist() == list(range(len(TEXTS)))
    assert sorted(rejects["key"]) == list(range(len(TEXTS), len(reviews)))
    assert rejects["reason"].str.startswith("text: ").all()
    assert (scores["model_name"] == f"sentiment-{model}").all()

    body = {"texts": TEXTS, "model": model}
    results = httpx.post(server.url + "/v1/sentiment", json=body, timeout=30).json()["results"]
    assert scores["label"].tolist() == [result["label"] for result in results]
    assert scores["truncated"].tolist() == [result["truncated"] for result in results]
    assert scores["truncated"].tolist() == [False, False, True, False]
    np.testing.assert_allclose(
        scores["probability"], [r["probability"] for r in results], rtol=1e-4, atol=1e-5
    )


def test_a_bad_column_mapping_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model",
                "sentiment",
                "--input",
                "x.csv",
                "--output",
                "y.parquet",
                "--column",
                "text",
            ]
        )
    assert exit_info.value.code == 2
