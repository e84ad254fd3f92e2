"""Loading versions while serving, over HTTP (issue 15) and fault isolation at start (issue 14,
row 1): each server serves a private copy of the smoke models, so registering versions there
leaves the session's store alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.http_checks import metric_value
from harness.local_server import REPOSITORY, LocalServer
from harness.payloads import transactions
from tests import model_versions as mv

pytestmark = pytest.mark.http
FRAUD = "fraud-scorer"
ROUTE = "/v1/fraud/score"
POLL_S = 0.5
BODY = {"transactions": transactions(2)}


def _store(home: Path, names: list[str]) -> Path:
    """A BentoML home at ``home`` with the latest smoke version of each of ``names``."""
    shared = mv.store_of(Path(os.environ["BENTOML_HOME"]))
    mv.copy_store(shared, mv.store_of(home), names)
    return home


def _entry(server: LocalServer, name: str) -> dict:
    models = httpx.get(server.url + "/v1/models", timeout=10).json()["models"]
    return next(entry for entry in models if entry["name"] == name)


def _until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` every 0.1 s; the seconds it took to hold (fails after ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _entry_where(server: LocalServer, holds: Callable[[dict], bool], what: str) -> dict:
    """The first fraud entry of ``/v1/models`` for which ``holds`` (polled up to 30 s)."""
    seen: list[dict] = []
    _until(lambda: holds(seen.append(_entry(server, FRAUD)) or seen[-1]), 30, what)
    return seen[-1]


@dataclass
class Answer:
    sent: float
    done: float
    status: int
    version: str | None


class Load:
    """A bounded client: ``connections`` threads, each posting ``ROUTE`` back to back."""

    def __init__(self, url: str, connections: int = 16) -> None:
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url,)) for _ in range(connections)
        ]

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.post(ROUTE, json=BODY)
                    status = response.status_code
                    version = response.json()["model"]["version"] if status == 200 else None
                except httpx.HTTPError:
                    status, version = 0, None
                self.answers.append(Answer(sent, time.monotonic(), status, version))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_a_broken_model_at_start_is_isolated_and_served_once_a_good_version_lands(
    stored_models: dict, tmp_path: Path
) -> None:
    """Issue 14 row 1: a truncated metadata.json used to crash-loop the worker."""
    home = _store(tmp_path / "home", [FRAUD, "image-classifier"])
    version = stored_models[FRAUD]["version"]
    pristine = shutil.copytree(mv.store_of(home) / FRAUD / version, tmp_path / "pristine")
    mv.truncate_metadata(mv.store_of(home) / FRAUD / version)
    env = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": "fraud,image",
        "DLSERVE_MODEL_POLL_S": str(POLL_S),
    }
    with LocalServer(env) as server:
        server.wait("/livez", timeout=60)
        assert httpx.get(server.url + "/readyz").status_code == 503
        entry = _entry(server, FRAUD)
        assert entry["status"] == "unavailable"
        assert "metadata.json is unreadable" in entry["reason"]
        refused = httpx.post(server.url + ROUTE, json=BODY, timeout=10)
        assert refused.status_code == 503 and "metadata.json is unreadable" in refused.text
        assert _entry(server, "image-classifier")["status"] == "ready"
        assert metric_value(server, "dlserve_model_loads_total", model=FRAUD, outcome="failed") >= 1
        landed = mv.new_version(mv.store_of(home), FRAUD, source=pristine)
        _until(
            lambda: httpx.post(server.url + ROUTE, json=BODY, timeout=10).status_code == 200,
            30,
            "the fraud route answers once a good version is registered",
        )
        assert _entry(server, FRAUD)["version"] == landed
        assert httpx.get(server.url + "/readyz").status_code == 200


def test_a_new_version_is_served_under_load_without_a_failed_request(
    stored_models: dict, tmp_path: Path
) -> None:
    """Two workers, each polling; 16 connections posting all along."""
    home = _store(tmp_path / "home", [FRAUD])
    store = mv.store_of(home)
    old = stored_models[FRAUD]["version"]
    env = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_MODEL_POLL_S": str(POLL_S),
        "DLSERVE_WORKERS": "2",
    }
    with LocalServer(env) as server, Load(server.wait("/readyz", timeout=120).url) as load:
        time.sleep(2)
        workers = _entry(server, FRAUD)["workers"]
        assert len(workers) == 2 and set(workers.values()) == {old}, workers
        registered = time.monotonic()
        new = mv.new_version(store, FRAUD)
        _until(
            lambda: set(_entry(server, FRAUD)["workers"].values()) == {new},
            30,
            "every worker serves the new version",
        )
        load_s = _entry(server, FRAUD)["last_load"]["seconds"]
        time.sleep(2)
        damages = {
            "bad sha": (mv.change_onnx_only, "sha256 of model.onnx"),
            "unreadable graph": (mv.change_onnx_keeping_sha, "ONNX Runtime refused"),
            "failing warm-up": (mv.break_warm_up, "warm-up inference failed"),
        }
        for damage, (alter, reason) in damages.items():
            broken = mv.new_version(store, FRAUD, alter, source=store / FRAUD / new)
            # from a worker that tried it (the other one may not have yet)
            entry = _entry_where(
                server,
                lambda e, v=broken: (e["last_load"] or {}).get("version") == v,
                f"the {damage} version was tried",
            )
            assert entry["status"] == "ready" and entry["version"] == new, damage
            assert entry["last_load"]["outcome"] == "failed"
            assert reason in entry["last_load"]["reason"], entry["last_load"]
            time.sleep(1)
    answers = sorted(load.answers, key=lambda a: a.sent)
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    first_new = min(a.done for a in answers if a.version == new)
    deadline = registered + POLL_S + load_s + 1.0  # the poll, the load, one request's time
    late_old = [a for a in answers if a.sent > deadline and a.version != new]
    assert not late_old, f"{len(late_old)} requests sent after the swap answered by {old}"
    assert all(a.version in (old, new) for a in answers)
    during = [a for a in answers if registered <= a.done <= first_new]
    print(
        f"\nswap: load {load_s:.3f} s, first answer of {new} {first_new - registered:.2f} s "
        f"after registration; {len(during)} requests answered meanwhile, "
        f"{len(answers)} in all, 0 failed"
    )


def test_from_an_empty_store_the_service_answers_at_once_and_each_model_as_it_lands(
    tmp_path: Path,
) -> None:
    """``make serve``'s background training, with the smoke presets."""
    home = tmp_path / "home"
    mv.store_of(home).mkdir(parents=True)
    env = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": "fraud,sentiment",
        "DLSERVE_MODEL_POLL_S": str(POLL_S),
    }
    started = time.monotonic()
    with LocalServer(env) as server:
        trainer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "training.ensure",
                "fraud",
                "sentiment",
                "--preset",
                "smoke",
                "--quiet",
            ],
            cwd=REPOSITORY,
            env={**os.environ, "BENTOML_HOME": str(home), "DLSERVE_REPORTS": str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            server.wait("/livez", timeout=60)
            live_s = time.monotonic() - started
            states = {e["name"]: e["status"] for e in _list(server)}
            assert set(states) == {FRAUD, "sentiment-rnn", "sentiment-transformer"}
            assert set(states.values()) <= {"training", "unavailable"}
            _until(
                lambda: (
                    _entry(server, "sentiment-rnn")["status"] == "training"
                    or _entry(server, FRAUD)["status"] == "ready"
                ),
                120,
                "a model shows as training",
            )
            fraud_s = _until(
                lambda: httpx.post(server.url + ROUTE, json=BODY, timeout=10).status_code == 200,
                240,
                "the fraud route answers once its model lands",
            )
            first_prediction_s = time.monotonic() - started
            assert _entry(server, FRAUD)["status"] == "ready"
            assert httpx.get(server.url + "/readyz").status_code == 503  # sentiment still trains
            _until(
                lambda: (
                    httpx.post(
                        server.url + "/v1/sentiment", json={"texts": ["a fine film"]}, timeout=10
                    ).status_code
                    == 200
                ),
                300,
                "the sentiment route answers once its models land",
            )
            assert trainer.wait(timeout=120) == 0
            try:
                _until(lambda: httpx.get(server.url + "/readyz").status_code == 200, 30, "ready")
            except AssertionError as exc:  # say which model is not
                raise AssertionError(f"{exc}: {_list(server)}") from None
        finally:
            trainer.kill()
            log = trainer.communicate()[0]
        assert "[1/2] models of 'fraud'" in log and "[2/2] models of 'sentiment'" in log, log
        print(
            f"\nempty store: /livez after {live_s:.1f} s, first fraud prediction after "
            f"{first_prediction_s:.1f} s ({fraud_s:.1f} s of waiting for its training)"
        )


def _list(server: LocalServer) -> list[dict]:
    return httpx.get(server.url + "/v1/models", timeout=10).json()["models"]
