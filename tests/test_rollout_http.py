"""Canary and shadow rollouts over HTTP (issue 23): each server serves a private copy of the
smoke fraud model, pinned to it, and a candidate version registered beside it; clients post
all along and no request may fail. Tests wait on ``/v1/models``' rollout state, never on time."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.http_checks import metric_value
from harness.local_server import LocalServer
from harness.payloads import transactions
from service.payload_log.replay import read_records
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


def _server(tmp_path: Path, stored_models: dict, alter: mv.Alter | None = None, **settings: str):
    """A keyed server serving the stored fraud version, pinned, with ``settings`` (more
    environment); and a candidate registered beside it (``alter``ed). Returns (server, old
    version, candidate)."""
    home = _store(tmp_path / "home", [FRAUD])
    old = stored_models[FRAUD]["version"]
    candidate = mv.new_version(mv.store_of(home), FRAUD, alter)
    env = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_PINNED_MODELS": f"{FRAUD}:{old}",
        "DLSERVE_API_KEYS": API_KEY,
        **settings,
    }
    return LocalServer(env), old, candidate


def _rollout(server: LocalServer) -> dict:
    return _entry_keyed(server)["rollout"]


def _entry_keyed(server: LocalServer) -> dict:
    models = httpx.get(server.url + "/v1/models", headers=AUTH, timeout=10).json()["models"]
    return next(entry for entry in models if entry["name"] == FRAUD)


class Clients:
    """``connections`` threads posting the fraud route, each request with the next key of
    ``keys`` (none: no key header), until the keys run out or ``stop()``; every answer's
    (key, status, version) in ``answers``."""

    def __init__(self, url: str, keys: Iterator[str | None], connections: int = 16) -> None:
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
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
            while not self._stop.is_set():
                more, key = self._next()
                if not more:
                    return
                sent = time.monotonic()
                try:
                    response = client.post(ROUTE, json=BODY, headers={KEY: key} if key else {})
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

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        if error is not None:  # a failed check: stop posting (the keys may never run out)
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


def _answers_once(server: LocalServer, clients: Clients, state: str, more: int) -> float:
    """Wait until the rollout is in ``state``, then for ``more`` answers more, and stop
    ``clients``; the moment ``state`` was seen (requests sent after it were sent in it)."""
    _until(lambda: _rollout(server)["state"] == state, 120, state)
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
