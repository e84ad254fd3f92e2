"""Rollouts on every worker (issue 23): a server with two workers, a rollout posted to
whichever worker answers, then ended by a call or by one worker's verdict; both workers
apply each transition (``service/rollout_fleet.py``), and no client request fails. Which
worker answered: ``/v1/models``' ``worker.pid``, asked on a new connection each time until
both have answered; the tests wait on those answers, never on time."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from harness.http_checks import metric_value
from harness.local_server import LocalServer
from tests import model_versions as mv
from tests.test_model_reload_http import _until
from tests.test_rollout_http import AUTH, FRAUD, Clients, _entry_keyed, _forever, _server

pytestmark = pytest.mark.http
WORKERS = 2


def _each_worker(server: LocalServer, holds: Callable[[dict], bool], what: str) -> dict[int, dict]:
    """Worker pid -> its fraud ``rollout``, once every worker has answered ``/v1/models`` (a
    new connection per call) with one for which ``holds``; 120 s at most."""
    seen: dict[int, dict] = {}

    def every_worker_holds() -> bool:
        entry = _entry_keyed(server)
        rollout = entry["rollout"]
        if rollout is not None and holds(rollout):
            seen[entry["worker"]["pid"]] = rollout
        return len(seen) == WORKERS

    _until(every_worker_holds, 120, f"both workers: {what}")
    return seen


def _start(server: LocalServer, spec: dict) -> dict:
    started = httpx.post(
        server.url + f"/v1/models/{FRAUD}/rollout", json=spec, headers=AUTH, timeout=60
    )
    assert started.status_code == 200, started.text
    return started.json()


def _both_ready(server: LocalServer) -> None:
    server.wait("/readyz", timeout=180)
    _until(lambda: len(_entry_keyed(server)["workers"]) == WORKERS, 60, "both workers ready")


def test_a_posted_canary_runs_on_both_workers_and_a_rollback_call_stops_it_on_both(
    stored_models: dict, tmp_path: Path
) -> None:
    """A 10% canary posted to one worker: both show it, both route their share of 4,000 keys
    (each request on a new connection) to the candidate; a rollback call to one worker: both
    stop sending anything to the candidate."""
    server, old, candidate = _server(tmp_path, stored_models, DLSERVE_WORKERS=str(WORKERS))
    with server:
        _both_ready(server)
        spec = {"candidate": candidate, "mode": "canary", "percent": 10, "promote_after": None}
        posted = _start(server, spec)
        assert posted["state"] == "canary" and posted["generation"] == 1, posted
        running = _each_worker(server, lambda r: r["state"] == "canary", "the canary")
        assert {r["generation"] for r in running.values()} == {1}
        keys = [f"client-{n}" for n in range(4000)]
        with Clients(server.url, iter(keys), fresh=True) as split:
            pass
        assert not split.failed(), split.failed()[:5]
        versions = {key: version for key, _, version in split.answers}
        share = Counter(versions.values())[candidate] / len(keys)
        assert 0.08 <= share <= 0.12, f"the 10% canary got {share:.1%} of {len(keys)} keys"
        figures = _each_worker(
            server, lambda r: r["figures"]["served"]["requests"] > 0, "requests answered"
        )
        per_worker = {pid: r["figures"]["candidate"]["requests"] for pid, r in figures.items()}
        assert all(count > 0 for count in per_worker.values()), per_worker
        assert sum(per_worker.values()) == Counter(versions.values())[candidate], per_worker
        served = {pid: r["figures"]["served"]["requests"] for pid, r in figures.items()}

        with Clients(server.url, _forever("after")) as during:
            asked = time.monotonic()
            called = httpx.post(
                server.url + f"/v1/models/{FRAUD}/rollout/rollback", headers=AUTH, timeout=10
            )
            assert called.status_code == 200, called.text
            assert called.json()["state"] == "rolled_back"
            ended = _each_worker(server, lambda r: r["state"] == "rolled_back", "rolled back")
            both_ended = time.monotonic()
            count = len(during.answers)
            _until(lambda: len(during.answers) > count + 200, 60, "answers after the rollback")
            during.stop()
        assert not during.failed(), during.failed()[:5]
        assert during.versions_sent_after(both_ended) == {old}
        reasons = sorted(r["reason"] for r in ended.values())
        caller = next(pid for pid, r in ended.items() if r["reason"] == "rolled back by a call")
        assert reasons == [
            "rolled back by a call",
            f"rolled back by a call (declared by worker {caller})",
        ], reasons
        assert {r["generation"] for r in ended.values()} == {1}
        assert _entry_keyed(server)["version"] == old
        print(
            f"\ncanary on {WORKERS} workers: {share:.1%} of {len(keys)} keys; candidate/served "
            f"answers per worker {per_worker}/{served}; rolled back on both "
            f"{both_ended - asked:.2f} s after the call (polled every 0.1 s); "
            f"{len(split.answers) + len(during.answers)} requests, 0 failed"
        )


def test_one_workers_automatic_rollback_stops_the_candidate_on_both(
    stored_models: dict, tmp_path: Path
) -> None:
    """A graph answering 1 - p as a 50% canary: the first worker whose PSI check fails rolls
    it back on both; the other takes its verdict from the declaration."""
    inverted = mv.invert_output("fraud_probability")
    server, old, candidate = _server(
        tmp_path, stored_models, inverted, DLSERVE_WORKERS=str(WORKERS)
    )
    with server:
        _both_ready(server)
        spec = {
            "candidate": candidate,
            "mode": "canary",
            "percent": 50,
            "min_requests": 100,
            "promote_after": None,
        }
        _start(server, spec)
        _each_worker(server, lambda r: r["state"] == "canary", "the canary")
        with Clients(server.url, _forever("bad"), fresh=True) as clients:
            ended = _each_worker(server, lambda r: r["state"] == "rolled_back", "rolled back")
            both_ended = time.monotonic()
            count = len(clients.answers)
            _until(lambda: len(clients.answers) > count + 200, 60, "answers after the rollback")
            clients.stop()
        assert not clients.failed(), clients.failed()[:5]
        assert clients.versions_sent_after(both_ended) == {old}
        judged = [pid for pid, r in ended.items() if "declared by" not in r["reason"]]
        assert len(judged) == 1, [r["reason"] for r in ended.values()]
        follower = next(r for pid, r in ended.items() if pid != judged[0])
        assert "PSI" in ended[judged[0]]["reason"]
        assert follower["reason"].endswith(f"(declared by worker {judged[0]})"), follower
        assert "PSI" in follower["reason"]
        rolled_back = metric_value(
            server, "dlserve_rollout_transitions_total", model=FRAUD, state="rolled_back"
        )
        assert rolled_back == WORKERS  # once per worker, summed over the workers
        print(
            f"\nautomatic rollback: {ended[judged[0]]['figures']['candidate']['requests']} "
            f"candidate answers on the judging worker, "
            f"{follower['figures']['candidate']['requests']} on the other; "
            f"{len(clients.answers)} requests, 0 failed"
        )
