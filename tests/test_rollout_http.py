"""Canary and shadow rollouts over HTTP (issue 23): each server serves a private copy of a
smoke model (the fraud scorer, the image classifier, the text generator), pinned to it, and a
candidate version registered beside it; clients post all along and no request may fail. Tests
wait on ``/v1/models``' rollout state, never on time."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.http_checks import metric_value
from harness.images import b64, encode, load_test_images
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.payload_log.replay import read_records
from service.rollout import RolloutSpec, stable_share
from tests import model_versions as mv
from tests.test_model_reload_http import _store, _until

pytestmark = pytest.mark.http
FRAUD = "fraud-scorer"
ROUTE = "/v1/fraud/score"
BODY = {"transactions": transactions(2)}
KEY = "x-rollout-key"
API_KEY = "rollout-test-key-0123456789"
ROLLOUT_REQUESTS = "dlserve_rollout_requests_total"
AUTH = {"authorization": f"Bearer {API_KEY}"}


def _server(
    tmp_path: Path,
    stored_models: dict,
    alter: mv.Alter | None = None,
    model: str = FRAUD,
    area: str = "fraud",
    **settings: str,
):
    """A keyed server serving the stored version of ``model`` (of ``area``), pinned, with
    ``settings`` (more environment); and a candidate registered beside it (``alter``ed).
    Returns (server, old version, candidate)."""
    home = _store(tmp_path / "home", [model])
    old = stored_models[model]["version"]
    candidate = mv.new_version(mv.store_of(home), model, alter)
    env = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": area,
        "DLSERVE_PINNED_MODELS": f"{model}:{old}",
        "DLSERVE_API_KEYS": API_KEY,
        **settings,
    }
    return LocalServer(env), old, candidate


def _rollout(server: LocalServer, model: str = FRAUD) -> dict:
    return _entry_keyed(server, model)["rollout"]


def _entry_keyed(server: LocalServer, model: str = FRAUD) -> dict:
    models = httpx.get(server.url + "/v1/models", headers=AUTH, timeout=10).json()["models"]
    return next(entry for entry in models if entry["name"] == model)


class Clients:
    """``connections`` threads posting ``body`` to ``route`` (default: the fraud route), each
    request with the next key of ``keys`` (none: no key header), until the keys run out or
    ``stop()``; every answer's (key, status, version) in ``answers``. ``fresh``: each request
    on a new connection (so that the kernel spreads them over a server's workers)."""

    def __init__(
        self,
        url: str,
        keys: Iterator[str | None],
        connections: int = 16,
        route: str = ROUTE,
        body: dict | None = None,
        fresh: bool = False,
    ) -> None:
        self.route, self.body = route, body or BODY
        self._limits = httpx.Limits(max_keepalive_connections=0) if fresh else httpx.Limits()
        self.answers: list[tuple[str | None, int, str | None]] = []
        self.sent: list[float] = []  # when each answer's request was sent (time.monotonic)
        self._keys = keys
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url,)) for _ in range(connections)
        ]

    def _next(self) -> tuple[bool, str | None]:
        with self._lock:
            return next(((True, key) for key in self._keys), (False, None))

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=AUTH, limits=self._limits) as client:
            while not self._stop.is_set():
                more, key = self._next()
                if not more:
                    return
                sent = time.monotonic()
                try:
                    headers = {KEY: key} if key else {}
                    response = client.post(self.route, json=self.body, headers=headers)
                    status = response.status_code
                    version = response.json()["model"]["version"] if status == 200 else None
                except httpx.HTTPError:
                    status, version = 0, None
                with self._lock:
                    self.answers.append((key, status, version))
                    self.sent.append(sent)

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, failed: type[BaseException] | None, *_: object) -> None:
        if failed is not None:  # the test failed while they ran: no more requests
            self.stop()
        self.join()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def versions_sent_after(self, moment: float) -> set[str | None]:
        """The versions that answered requests sent after ``moment``."""
        return {a[2] for a, sent in zip(self.answers, self.sent, strict=True) if sent > moment}

    def failed(self) -> list[tuple[str | None, int, str | None]]:
        return [answer for answer in self.answers if answer[1] != 200]


def _answers_once(
    server: LocalServer, clients: Clients, state: str, more: int, model: str = FRAUD
) -> float:
    """Wait until ``model``'s rollout is in ``state``, then for ``more`` answers more, and stop
    ``clients``; the moment ``state`` was seen (requests sent after it were sent in it)."""
    _until(lambda: _rollout(server, model)["state"] == state, 120, state)
    seen = time.monotonic()
    count = len(clients.answers)
    _until(lambda: len(clients.answers) > count + more + 16, 60, f"{more} answers in {state}")
    clients.stop()
    return seen


def _forever(prefix: str) -> Iterator[str]:
    number = 0
    while True:
        number += 1
        yield f"{prefix}-{number}"


def test_a_canary_gets_its_share_and_a_key_sticks_to_one_version(
    stored_models: dict, tmp_path: Path
) -> None:
    """10% canary over 4,000 distinct keys, 16 connections; then the same keys again; then
    promoted by a call."""
    server, old, candidate = _server(tmp_path, stored_models)
    with server:
        server.wait("/readyz", timeout=120)
        spec = {"candidate": candidate, "mode": "canary", "percent": 10, "promote_after": None}
        started = httpx.post(
            server.url + f"/v1/models/{FRAUD}/rollout", json=spec, headers=AUTH, timeout=60
        )
        assert started.status_code == 200, started.text
        assert started.json()["state"] == "canary"
        keys = [f"client-{n}" for n in range(4000)]
        with Clients(server.url, iter(keys)) as first:
            pass
        assert not first.failed(), first.failed()[:5]
        versions = {key: version for key, _, version in first.answers}
        share = Counter(versions.values())[candidate] / len(keys)
        assert set(versions.values()) == {old, candidate}
        assert 0.08 <= share <= 0.12, f"the 10% canary got {share:.1%} of {len(keys)} keys"
        with Clients(server.url, iter(keys[:1000])) as again:
            pass
        assert not again.failed()
        moved = [key for key, _, version in again.answers if versions[key] != version]
        assert not moved, f"{len(moved)} keys changed version: {moved[:5]}"
        rollout = _rollout(server)
        assert rollout["figures"]["candidate"]["requests"] == sum(
            1 for key, _, version in first.answers + again.answers if version == candidate
        )
        with Clients(server.url, _forever("after")) as during:
            promoted = httpx.post(
                server.url + f"/v1/models/{FRAUD}/rollout/promote", headers=AUTH, timeout=10
            )
            assert promoted.status_code == 200 and promoted.json()["state"] == "promoted"
            after_promotion = time.monotonic()  # requests sent before may end on old
            count = len(during.answers)
            _until(lambda: len(during.answers) > count + 116, 60, "answers")
            during.stop()
        assert not during.failed(), during.failed()[:5]
        assert during.versions_sent_after(after_promotion) == {candidate}
        assert _entry_keyed(server)["version"] == candidate
        assert (
            metric_value(server, "dlserve_rollout_transitions_total", model=FRAUD, state="promoted")
            == 1
        )


def test_a_shadow_answers_with_the_served_version_records_agreement_and_is_promoted(
    stored_models: dict, tmp_path: Path
) -> None:
    """Every request shadowed on an equal copy; promoted on its own after 300 answers."""
    server, old, candidate = _server(tmp_path, stored_models)
    with server:
        server.wait("/readyz", timeout=120)
        spec = {"candidate": candidate, "mode": "shadow", "min_requests": 50, "promote_after": 300}
        with Clients(server.url, _forever("shadow")) as clients:
            started = httpx.post(
                server.url + f"/v1/models/{FRAUD}/rollout", json=spec, headers=AUTH, timeout=60
            )
            assert started.status_code == 200, started.text
            promoted_at = _answers_once(server, clients, "promoted", more=50)
        assert not clients.failed(), clients.failed()[:5]
        rollout = _rollout(server)
        shadow = rollout["shadow"]
        assert shadow["compared"] >= 300 - shadow["errors"], shadow
        assert shadow["errors"] == 0 and shadow["agreement"] == 1.0, shadow
        assert shadow["rows"] == 2 * shadow["compared"]
        assert rollout["figures"]["served"]["requests"] >= shadow["compared"]
        assert rollout["transitions"][-1]["state"] == "promoted"
        assert "300 candidate answers" in rollout["reason"]
        served = {"model": FRAUD, "outcome": "ok"}
        # while shadowed, no client got the candidate's answer
        assert (
            metric_value(server, ROLLOUT_REQUESTS, version=candidate, role="canary", **served) == 0
        )
        assert metric_value(server, ROLLOUT_REQUESTS, version=old, role="served", **served) > 0
        assert {v for *_, v in clients.answers} == {old, candidate}
        assert clients.versions_sent_after(promoted_at) == {candidate}
        compared = metric_value(
            server, "dlserve_rollout_shadow_total", model=FRAUD, outcome="compared"
        )
        assert compared == shadow["compared"]


def test_a_bad_candidate_is_rolled_back_within_its_window(
    stored_models: dict, tmp_path: Path
) -> None:
    """A fraud graph answering 1 - p, as a 50% canary: rolled back on its score PSI once it
    has 100 answers; the route's bad input first."""
    server, old, candidate = _server(tmp_path, stored_models, mv.invert_output("fraud_probability"))
    with server:
        server.wait("/readyz", timeout=120)
        route = server.url + f"/v1/models/{FRAUD}/rollout"
        assert httpx.post(route, json={"candidate": candidate, "mode": "canary"}).status_code == 401
        refused = httpx.post(
            route, json={"candidate": candidate, "mode": "canary", "percent": 150}, headers=AUTH
        )
        assert refused.status_code == 400, refused.text
        detail = refused.json()["detail"]
        assert detail[0]["loc"] == ["body", "percent"] and "100" in detail[0]["msg"], detail
        too_soon = {
            "candidate": candidate,
            "mode": "canary",
            "min_requests": 500,
            "promote_after": 100,
        }
        refused = httpx.post(route, json=too_soon, headers=AUTH)
        assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == [
            "body",
            "promote_after",
        ]
        missing = httpx.post(
            route, json={"candidate": "nosuchversion", "mode": "canary"}, headers=AUTH, timeout=60
        )
        assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == [
            "body",
            "candidate",
        ]
        unknown = httpx.post(server.url + "/v1/models/nope/rollout", json={}, headers=AUTH)
        assert unknown.status_code == 404
        assert httpx.post(route + "/promote", headers=AUTH).status_code == 409

        spec = {
            "candidate": candidate,
            "mode": "canary",
            "percent": 50,
            "min_requests": 100,
            "promote_after": None,
        }
        started = httpx.post(route, json=spec, headers=AUTH, timeout=60)
        assert started.status_code == 200, started.text
        # before any traffic: a fast machine judges the 50% canary within half a second
        assert httpx.post(route, json=spec, headers=AUTH, timeout=60).status_code == 409
        with Clients(server.url, _forever("bad")) as clients:
            rolled_back_at = _answers_once(server, clients, "rolled_back", more=100)
        assert not clients.failed(), clients.failed()[:5]
        rollout = _rollout(server)
        assert "PSI" in rollout["reason"] and rollout["psi"] > 0.25, rollout["reason"]
        candidate_answers = rollout["figures"]["candidate"]["requests"]
        assert 100 <= candidate_answers < 150, candidate_answers  # the window, and its verdict
        assert clients.versions_sent_after(rolled_back_at) == {old}
        assert _entry_keyed(server)["version"] == old
        assert (
            metric_value(
                server, "dlserve_rollout_transitions_total", model=FRAUD, state="rolled_back"
            )
            == 1
        )


def test_a_payload_record_names_the_served_version_and_the_shadow_that_also_ran(
    stored_models: dict, tmp_path: Path
) -> None:
    """The payload log reads the request's routing record: the version that answered, and the
    candidate a shadow rollout also ran the request on."""
    folder = tmp_path / "payloads"
    server, old, candidate = _server(
        tmp_path,
        stored_models,
        DLSERVE_PAYLOAD_LOG_DIR=str(folder),
        DLSERVE_PAYLOAD_LOG_RATE=f"{FRAUD}=1",
        DLSERVE_PAYLOAD_LOG_FLUSH_S="0.2",
    )
    with server:
        server.wait("/readyz", timeout=120)
        spec = {"candidate": candidate, "mode": "shadow", "promote_after": None}
        started = httpx.post(
            server.url + f"/v1/models/{FRAUD}/rollout", json=spec, headers=AUTH, timeout=60
        )
        assert started.status_code == 200, started.text
        _until(lambda: _rollout(server)["state"] == "shadow", 120, "shadowing")
        ids = [f"shadowed-{index}" for index in range(5)]
        for request_id in ids:  # one at a time: no shadow run is dropped
            answer = httpx.post(
                server.url + ROUTE,
                json=BODY,
                headers={**AUTH, "x-request-id": request_id},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"]["version"] == old

        def logged() -> dict[str, dict] | None:
            if not folder.exists():  # the writer makes it with its first part
                return None
            records = {r["request_id"]: r for r in read_records(folder).to_pylist()}
            return records if set(ids) <= set(records) else None

        _until(lambda: logged() is not None, 60, "the records in the payload log")
        records = logged()
    assert records is not None
    for request_id in ids:
        assert records[request_id]["version"] == old
        assert records[request_id]["shadow_version"] == candidate


def test_the_openapi_document_lists_the_rollout_routes_with_their_schemas(
    server: LocalServer,
) -> None:
    document = httpx.get(server.url + "/docs.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    assert schemas["RolloutSpec"] == RolloutSpec.model_json_schema()
    assert schemas["RolloutSpec"]["properties"]["percent"]["maximum"] == 100
    start = document["paths"]["/v1/models/{name}/rollout"]["post"]
    body = start["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RolloutSpec"}
    act = document["paths"]["/v1/models/{name}/rollout/{action}"]["post"]
    action = next(p for p in act["parameters"] if p["name"] == "action")
    assert action["schema"]["enum"] == ["promote", "rollback", "cancel"]
    for operation, statuses in ((start, {"400", "404", "409", "422"}), (act, {"404", "409"})):
        responses = operation["responses"]
        assert responses["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Rollout"
        }
        assert statuses | {"401", "default"} <= set(responses), sorted(responses)
    assert {"generation", "state", "candidate"} <= set(schemas["Rollout"]["required"])


IMAGES = "image-classifier"


def test_a_class_drift_is_rolled_back_and_the_shadow_compares_classes(
    stored_models: dict, tmp_path: Path
) -> None:
    """An image classifier listing its classes in reverse (same confidences), shadowed on every
    request of 8 images: no row agrees by class; rolled back on the class frequencies' PSI
    once it has 30 answers, the scores' PSI staying 0."""
    images, _ = load_test_images(8)
    body = {"images": [b64(encode(pixels)) for pixels in images]}
    reverse = mv.reverse_classes("probabilities", 10)
    server, old, candidate = _server(tmp_path, stored_models, reverse, IMAGES, "image")
    with server:
        server.wait("/readyz", timeout=120)
        spec = {"candidate": candidate, "mode": "shadow", "min_requests": 30}
        route = "/v1/images/classify_batch"
        with Clients(server.url, _forever("image"), 8, route, body) as clients:
            started = httpx.post(
                server.url + f"/v1/models/{IMAGES}/rollout", json=spec, headers=AUTH, timeout=60
            )
            assert started.status_code == 200, started.text
            _answers_once(server, clients, "rolled_back", more=20, model=IMAGES)
        assert not clients.failed(), clients.failed()[:5]
        rollout = _rollout(server, IMAGES)
    assert {version for *_, version in clients.answers} == {old}
    assert rollout["reason"].startswith("classes PSI"), rollout["reason"]
    assert rollout["drift"]["scores"] == 0.0 and rollout["drift"]["classes"] > 0.25
    shadow = rollout["shadow"]
    assert shadow["agreement_by"] == "class" and shadow["agreement"] == 0.0, shadow
    assert shadow["rows"] == 8 * shadow["compared"] >= 8 * 30
    figures = rollout["figures"]
    labels = list(figures["served"]["classes"])
    assert len(labels) == 10 and sum(figures["served"]["classes"].values()) % 8 == 0
    served_share = [figures["served"]["classes"][label] for label in labels]
    candidate_share = [figures["candidate"]["classes"][label] for label in labels]
    total_served, total_candidate = sum(served_share), sum(candidate_share)
    # the same 8 images each time: the candidate's frequencies mirror the served ones
    assert [c / total_candidate for c in candidate_share] == pytest.approx(
        [c / total_served for c in served_share[::-1]]
    )


TEXT = "text-generator"


def _completion(client: httpx.Client, key: str, stream: bool) -> tuple[str, str, int]:
    """One completion of 8 tokens under ``key`` (streamed or not): the version that answered,
    the finish reason and the status (the first two empty unless 200)."""
    body = {"prompt": "The ", "max_tokens": 8, "seed": 11, "stream": stream}
    with client.stream("POST", "/v1/completions", json=body, headers={KEY: key}) as response:
        if response.status_code != 200:
            return "", "", response.status_code
        if stream:
            lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
            last = json.loads(lines[-2])  # before [DONE]
            assert lines[-1] == "[DONE]", lines[-1]
        else:
            last = json.loads(response.read())
    return last["system_fingerprint"].split(":")[1], last["choices"][0]["finish_reason"], 200


def test_a_text_canary_splits_streams_by_key_shows_their_lengths_and_is_promoted(
    stored_models: dict, tmp_path: Path
) -> None:
    """A 50% canary of the text generator: completions, streamed or not, go to the version
    the key's hash chose; the candidate's completions show as lengths and finish reasons; it is
    promoted after 20 of them. A shadow of it is refused with a 409 naming ``mode``."""
    server, old, candidate = _server(tmp_path, stored_models, model=TEXT, area="text")
    with server:
        server.wait("/readyz", timeout=120)
        route = server.url + f"/v1/models/{TEXT}/rollout"
        shadow = httpx.post(route, json={"candidate": candidate, "mode": "shadow"}, headers=AUTH)
        assert shadow.status_code == 409 and "mode 'shadow'" in shadow.json()["error"], shadow.text
        spec = {
            "candidate": candidate,
            "mode": "canary",
            "percent": 50,
            "min_requests": 10,
            "promote_after": 20,
        }
        started = httpx.post(route, json=spec, headers=AUTH, timeout=60)
        assert started.status_code == 200, started.text
        answers: list[tuple[str, str, str, int]] = []
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
            while _rollout(server, TEXT)["state"] == "canary":
                key = f"writer-{len(answers)}"
                answers.append((key, *_completion(client, key, len(answers) % 3 != 0)))
                assert len(answers) < 200, "not promoted after 200 completions"
            after = [_completion(client, f"late-{n}", True) for n in range(5)]
        rollout = _rollout(server, TEXT)
    assert [a for a in answers if a[3] != 200] == [] and {a[2] for a in after} == {200}
    for key, version, finish, _ in answers:
        chosen = candidate if stable_share(TEXT, candidate, key) < 0.5 else old
        assert (version, finish) == (chosen, "length"), key
    assert {version for version, *_ in after} == {candidate}
    assert rollout["state"] == "promoted" and "20 candidate answers" in rollout["reason"]
    figures = rollout["figures"]["candidate"]
    assert figures["requests"] == 20 and figures["errors"] == 0 and figures["sequences"] == 20
    assert figures["finish_reasons"] == {"length": 20}
    assert figures["completion_tokens"]["8"] == 20
    served = rollout["figures"]["served"]
    assert served["requests"] == len(answers) - 20 and served["finish_reasons"] == {
        "length": served["requests"]
    }
    assert set(rollout["drift"].values()) <= {0.0}
