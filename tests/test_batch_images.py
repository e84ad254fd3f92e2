"""Batch jobs for the image model: a folder of files or a Parquet bytes column, with the
HTTP route's decoding; labels equal ``/v1/images/classify_batch``'s answers."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.local_server import LocalServer
from service.batch.__main__ import main

pytestmark = pytest.mark.http


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 30), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_folder_and_a_parquet_column_score_like_http(server: LocalServer, tmp_path: Path) -> None:
    files = {f"img-{seed}.png": _png(seed) for seed in range(6)}
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "broken.png").write_bytes(b"not a png")
    output = tmp_path / "labels.parquet"
    common = ["--model", "image", "--id-column", "path", "--batch-size", "4", "--quiet"]
    assert main([*common, "--input", str(folder), "--output", str(output)]) == 3
    scores = pd.read_parquet(output)
    rejects = pd.read_parquet(tmp_path / "labels.rejects.parquet")
    assert scores["path"].tolist() == sorted(files)
    assert rejects["path"].tolist() == ["broken.png"]
    assert rejects["reason"].iloc[0].startswith("image: ")

    table = tmp_path / "images.parquet"
    pd.DataFrame({"path": list(files), "image": list(files.values())}).to_parquet(table)
    from_column = tmp_path / "column.parquet"
    assert main([*common, "--input", str(table), "--output", str(from_column)]) == 0
    merged = scores.merge(pd.read_parquet(from_column), on="path", suffixes=("", "_column"))
    assert (merged["label"] == merged["label_column"]).all()

    body = {"images": [base64.b64encode(files[name]).decode() for name in scores["path"]]}
    answer = httpx.post(server.url + "/v1/images/classify_batch?k=1", json=body, timeout=30)
    results = answer.json()["results"]
    assert scores["label"].tolist() == [result["label"] for result in results]
    np.testing.assert_allclose(
        scores["probability"],
        [result["top_k"][0]["probability"] for result in results],
        rtol=1e-5,
        atol=1e-6,
    )
