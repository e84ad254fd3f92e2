"""``POST /v1/embeddings`` over real HTTP with the official ``openai`` client: the vectors of PyPI
``sentence-transformers`` on the same weights, both encodings, ``dimensions``, usage, joined
requests, errors in OpenAI's shape, the ``/v2`` tensor route and a batch job to Parquet."""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pandas as pd
import pytest

from core.text_encoding import TOKENIZER_FILE, TextEncoder
from harness.local_server import LocalServer
from service.areas.embeddings import MAX_INPUTS, MODEL, ROUTE
from service.areas.sentiment import MAX_CHARACTERS
from service.batch.__main__ import main as batch_main
from training.sentiment.models import minilm_dir

pytestmark = pytest.mark.http
TEXTS = [
    "A warm, funny and beautifully acted film.",
    "Dull.",
    "Ünïcödé, emoji 🎬 and 日本語 in one sentence.",
    "word " * 400,  # longer than max_tokens (256): truncated, as sentence-transformers does
]
TOLERANCE = 1e-5  # largest absolute difference from sentence-transformers, per value


@pytest.fixture(scope="module")
def client(server: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference_vectors() -> np.ndarray:
    """``sentence-transformers``' own vectors of ``TEXTS`` on the installed weights."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    return model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)


def _vectors(answer: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    assert [item.index for item in answer.data] == list(range(len(answer.data)))
    return np.array([item.embedding for item in answer.data], dtype=np.float64)


def test_vectors_equal_sentence_transformers_in_both_encodings(
    client: openai.OpenAI, reference_vectors: np.ndarray, embedder_model: dict
) -> None:
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert floats.object == "list" and floats.model == MODEL
    assert np.abs(_vectors(floats) - reference_vectors).max() <= TOLERANCE
    # The client's default asks for base64 and decodes it: the same numbers.
    decoded = _vectors(client.embeddings.create(model=MODEL, input=TEXTS))
    assert np.array_equal(decoded, _vectors(floats))
    raw = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="base64")
    unpacked = [np.frombuffer(base64.b64decode(item.embedding), "<f4") for item in raw.data]
    assert np.array_equal(np.array(unpacked, dtype=np.float64), _vectors(floats))
    encoder = TextEncoder.from_file(minilm_dir() / TOKENIZER_FILE, embedder_model["max_tokens"])
    tokens = int(encoder.encode(TEXTS)[0]["attention_mask"].sum())
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (tokens, tokens)


def test_one_string_is_one_embedding(client: openai.OpenAI, reference_vectors: np.ndarray) -> None:
    answer = client.embeddings.create(model=MODEL, input=TEXTS[0], user="someone")
    assert len(answer.data) == 1
    assert np.abs(_vectors(answer)[0] - reference_vectors[0]).max() <= TOLERANCE


def test_dimensions_keeps_the_first_values_renormalised(
    client: openai.OpenAI, reference_vectors: np.ndarray
) -> None:
    short = _vectors(client.embeddings.create(model=MODEL, input=TEXTS, dimensions=64))
    cut = reference_vectors[:, :64]
    expected = cut / np.linalg.norm(cut, axis=1, keepdims=True)
    assert short.shape == (len(TEXTS), 64)
    assert np.abs(short - expected).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)


def test_concurrent_requests_joined_in_one_call_give_the_vectors_of_one_alone(
    client: openai.OpenAI,
) -> None:
    alone = [_vectors(client.embeddings.create(model=MODEL, input=[text])) for text in TEXTS]
    requests = TEXTS * 6  # different lengths, padded together when the batcher joins them
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(
            pool.map(lambda t: _vectors(client.embeddings.create(model=MODEL, input=[t])), requests)
        )
    for index, vectors in enumerate(together):
        assert np.abs(vectors - alone[index % len(TEXTS)]).max() <= 1e-6


@pytest.mark.parametrize(
    ("body", "param", "rule"),
    [
        ({"input": ["a"] * (MAX_INPUTS + 1)}, "input", f"at most {MAX_INPUTS} items"),
        ({"input": "x" * (MAX_CHARACTERS + 1)}, "input", f"at most {MAX_CHARACTERS} characters"),
        ({"input": []}, "input", "at least 1 item"),
        ({"input": ["fine", "  "]}, "input", "whitespace-only"),
        ({"input": [[101, 102]]}, "input", "valid string"),
        ({"input": ["word " * 300] * 33}, "input", "at most 8192 tokens per request"),
        ({"input": "a", "dimensions": 385}, "dimensions", "at most 384"),
        ({"input": "a", "dimensions": 0}, "dimensions", "greater than or equal to 1"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
        ({"input": "a", "surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(
    server: LocalServer, body: dict, param: str, rule: str
) -> None:
    response = httpx.post(server.url + ROUTE, json={"model": MODEL, **body}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert rule in error["message"], error


def test_an_unknown_model_is_a_404_the_client_raises(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert raised.value.body["param"] == "model"


def test_the_tensor_route_gives_the_same_vectors(
    server: LocalServer, client: openai.OpenAI, embedder_model: dict
) -> None:
    encoder = TextEncoder.from_file(minilm_dir() / TOKENIZER_FILE, embedder_model["max_tokens"])
    arrays, _ = encoder.encode(TEXTS[:2])
    inputs = [
        {
            "name": name,
            "shape": list(value.shape),
            "datatype": "INT64",
            "data": value.ravel().tolist(),
        }
        for name, value in arrays.items()
    ]
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer", json={"inputs": inputs}, timeout=30
    )
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [2, embedder_model["dimensions"]]
    expected = _vectors(client.embeddings.create(model=MODEL, input=TEXTS[:2]))
    assert np.abs(np.reshape(output["data"], output["shape"]) - expected).max() <= 1e-6


def test_a_batch_job_writes_the_route_vectors_to_parquet(
    server: LocalServer, client: openai.OpenAI, tmp_path: Path
) -> None:
    source = tmp_path / "texts.jsonl"
    pd.DataFrame({"text": [*TEXTS, "   "]}).to_json(source, orient="records", lines=True)
    output = tmp_path / "vectors.parquet"
    args = ["--model", "embeddings", "--input", str(source), "--output", str(output)]
    assert batch_main([*args, "--batch-size", "3", "--quiet"]) == 3  # finished, with a reject
    scores = pd.read_parquet(output)
    assert scores["row_id"].tolist() == list(range(len(TEXTS)))
    assert scores["truncated"].tolist() == [False, False, False, True]
    expected = _vectors(client.embeddings.create(model=MODEL, input=TEXTS))
    assert np.abs(np.stack(scores["embedding"].to_list()) - expected).max() <= 1e-6
    rejects = pd.read_parquet(tmp_path / "vectors.rejects.parquet")
    assert rejects["row_id"].tolist() == [len(TEXTS)]
    csv = ["--model", "embeddings", "--input", str(source), "--output", str(tmp_path / "v.csv")]
    assert batch_main([*csv, "--quiet"]) == 2  # vectors do not fit CSV: refused before reading
    assert not (tmp_path / "v.csv").exists()
