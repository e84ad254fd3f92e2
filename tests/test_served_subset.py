"""A server tuned away from the defaults: ``DLSERVE_MODELS=sentiment`` (a subset),
``DLSERVE_WORKERS=2`` and ``DLSERVE_MAX_WAIT_MS=300`` (open batches wait for more rows)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from core.model_store import load_model
from harness.http_checks import metric_value
from harness.images import b64, encode, load_test_images
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.areas import sentiment
from tests.sentiment_sentences import review_sentences

pytestmark = pytest.mark.http
WORKERS = 2


@pytest.fixture(scope="module")
def tuned(stored_models: dict) -> Iterator[LocalServer]:
    env = {
        "DLSERVE_MODELS": "sentiment",
        "DLSERVE_WORKERS": str(WORKERS),
        "DLSERVE_MAX_WAIT_MS": "300",
    }
    with LocalServer(env) as running:
        yield running.wait("/readyz", timeout=240)  # two workers load four graphs


def test_only_the_enabled_area_is_loaded_and_ready(tuned: LocalServer) -> None:
    assert httpx.get(tuned.url + "/readyz").status_code == 200
    names = {m["name"] for m in httpx.get(tuned.url + "/v1/models").json()["models"]}
    assert names == {"sentiment-rnn", "sentiment-transformer"}


def test_the_routes_of_other_areas_answer_404_naming_the_setting(tuned: LocalServer) -> None:
    pixels, _ = load_test_images(1)
    requests = {
        "/v1/fraud/score": {"transactions": transactions(1)},
        "/v1/images/classify_batch": {"images": [b64(encode(pixels[0]))]},
    }
    for route, body in requests.items():
        response = httpx.post(tuned.url + route, json=body, timeout=10)
        assert response.status_code == 404, route
        assert "is not enabled (DLSERVE_MODELS)" in response.json()["error"]
    v2 = httpx.get(tuned.url + "/v2/models/fraud-scorer/ready", timeout=10)
    assert v2.status_code == 404 and "is not enabled (DLSERVE_MODELS)" in v2.json()["error"]
    assert httpx.get(tuned.url + "/v2/models/sentiment-rnn/ready", timeout=10).status_code == 200


def test_two_workers_serve(tuned: LocalServer) -> None:
    listing = subprocess.run(
        ["ps", "-ww", "-o", "ppid=,args=", "-e"], capture_output=True, text=True, check=True
    ).stdout
    workers = [
        line
        for line in listing.splitlines()
        if line.split()[0] == str(tuned.process.pid) and "_bentoml_impl.worker" in line
    ]
    assert len(workers) == WORKERS, listing
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda text: (
                    httpx.post(
                        tuned.url + sentiment.ROUTE, json={"texts": [text]}, timeout=30
                    ).status_code
                ),
                review_sentences()[:16],
            )
        )
    assert codes == [200] * 16


def test_concurrent_requests_are_joined_and_answer_as_alone(
    tuned: LocalServer, sentiment_models: dict[str, dict]
) -> None:
    """Requests of different lengths arriving within the wait are joined into one call (padded
    to the longest) and each answers exactly as when it is scored alone."""
    texts = review_sentences()[:8]
    metadata = sentiment_models["rnn"]
    model = load_model(f"{metadata['name']}:{metadata['version']}", "cpu")
    encoder = sentiment.stored_encoder(model)
    alone = [float(model.run(encoder.encode([t])[0])["positive_probability"][0]) for t in texts]
    calls_before = metric_value(tuned, "dlserve_batch_rows_count", model="sentiment-rnn")

    def post(text: str) -> dict:
        body = {"texts": [text], "model": "rnn"}
        return httpx.post(tuned.url + sentiment.ROUTE, json=body, timeout=30).json()

    with ThreadPoolExecutor(len(texts)) as pool:
        answers = [answer["results"][0] for answer in pool.map(post, texts)]
    calls = metric_value(tuned, "dlserve_batch_rows_count", model="sentiment-rnn") - calls_before
    assert 1 <= calls < len(texts)  # joined: fewer inference calls than requests
    positive = [
        a["probability"] if a["label"] == "positive" else 1 - a["probability"] for a in answers
    ]
    np.testing.assert_allclose(positive, alone, atol=1e-5)
