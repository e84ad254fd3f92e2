"""The dashboard, the alert rules and the adapter rule against a real Prometheus scraping a
real dlserve: Prometheus (Debian's, from `make setup`) runs on 127.0.0.1 with its own data
folder and scrapes two `bentoml serve` processes over the smoke-trained models, labelled like
the ServiceMonitor's targets: the session's ``server`` (every model) as pod dlserve-a, and a
fraud-only one with a 10-row queue bound as pod dlserve-b (so shedding and a pod with fewer
models really happen). After traffic and two scrapes, every dashboard query and alert
expression is evaluated through the HTTP API: each must parse and return data. Alert
expressions are evaluated without their final threshold comparison (`> 0.05` etc.), since an
alert's condition is normally empty; where the incident was made to happen, the whole
condition is evaluated too. No expression may name a metric that /metrics does not expose
(besides `up`, written by Prometheus for each target, and the recording rules' own series).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.images import b64, encode, load_test_images
from harness.local_server import LocalServer, free_port
from harness.payloads import transactions
from service.areas.fraud import SCORE_BUCKETS
from tests import model_versions as mv
from tests.deploy_dockerfile import stage
from tests.deploy_k8s import K8S, render

pytestmark = pytest.mark.http
ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dlserve.json"
NAMESPACE = "test"
# Grafana's variables as the dashboard's user would pick them
GRAFANA_VARIABLES = {"$namespace": NAMESPACE, "$model": ".+", "$__rate_interval": "1m"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip
FRAUD = "fraud-scorer"
FROM_PROMETHEUS = {"up"}  # written by Prometheus for every target, not by the target


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (functions, keywords, labels and strings left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word not in PROMQL_WORDS:
            names.add(word)
    return names


def test_metric_names_finds_metrics_only() -> None:
    expr = (
        'sum by (namespace, le) (rate(dlserve_score_bucket{job="dlserve", le=~"0.5|1"}[1h]))'
        " / on (model) group_left max by (model) (dlserve:score_cdf:reference) > 0.1 or up == 0"
    )
    assert metric_names(expr) == {"dlserve_score_bucket", "dlserve:score_cdf:reference", "up"}


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def variable_queries() -> list[str]:
    """The selectors inside the template variables' label_values(...) queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    selectors = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            selector = match.group(1)
            for name, value in GRAFANA_VARIABLES.items():
                selector = selector.replace(name, value)
            selectors.append(f"count by ({match.group(2)}) ({selector})")
    return selectors


def without_threshold(expr: str) -> str:
    """An alert condition less its final comparison with a number."""
    return re.sub(r"\s*(>|<|>=|<=|==|!=)\s*[0-9.e+-]+\s*$", "", expr.strip())


class Prometheus:
    def __init__(self, folder: Path, targets: dict[str, str], rule_files: list[Path]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": "dlserve",
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {"targets": [address], "labels": {"namespace": NAMESPACE, "pod": pod}}
                        for pod, address in targets.items()
                    ],
                }
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (folder / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.folder = folder
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (folder / "prometheus.log").read_text()
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("Prometheus did not get ready")

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def wait_for_scrapes(self, count: int = 2, timeout: float = 20) -> None:
        """Until every target was scraped ``count`` times after now."""
        start = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            times = [float(r["value"][1]) for r in self.query("timestamp(up)")]
            if times and min(times) >= start + count - 1:
                return
            time.sleep(0.3)
        raise TimeoutError(f"no {count} scrapes of every target within {timeout}s")

    def wait_for(self, expr: str, timeout: float = 20) -> None:
        """Until ``expr`` returns data."""
        deadline = time.monotonic() + timeout
        while not self.query(expr):
            assert time.monotonic() < deadline, f"no data for {expr} within {timeout}s"
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def fraud_only_server(
    stored_models: dict[str, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    """A second pod: fraud only, a queue bound of 10 rows (larger requests are shed), and a
    shadow rollout of a second fraud version past its 10-answer window (the rollout series)."""
    home = tmp_path_factory.mktemp("rollout-home")
    store = mv.copy_store(mv.store_of(Path(os.environ["BENTOML_HOME"])), mv.store_of(home), [FRAUD])
    candidate = mv.new_version(store, FRAUD)
    rollout = {"candidate": candidate, "mode": "shadow", "min_requests": 10, "promote_after": None}
    env = {
        "BENTOML_HOME": str(home),
        "DLSERVE_MODELS": "fraud",
        "DLSERVE_MAX_QUEUE_ROWS": "10",
        "DLSERVE_PINNED_MODELS": f"{FRAUD}:{stored_models[FRAUD]['version']}",
        "DLSERVE_ROLLOUTS": json.dumps({FRAUD: rollout}),
    }
    with LocalServer(env) as running:
        running.wait("/readyz")
        with httpx.Client(base_url=running.url, timeout=60) as client:
            for seed in range(12):
                body = {"transactions": transactions(5, seed=seed)}
                assert client.post("/v1/fraud/score", json=body).status_code == 200
        yield running


@pytest.fixture(scope="module")
def score_reference(stored_models: dict[str, dict]) -> Iterator[Path]:
    """The fraud scorer's reference distribution, made as docs/DEPLOY.md says (batch job on
    data of the training distribution, then score_reference.py)."""
    folder = Path(tempfile.mkdtemp(prefix="dlserve-reference-"))
    pd.DataFrame(transactions(2000, seed=5)).to_parquet(folder / "reference.parquet")
    batch = [sys.executable, "-m", "service.batch", "--model", "fraud", "--quiet"]
    io = ["--input", str(folder / "reference.parquet"), "--output", str(folder / "scores.parquet")]
    subprocess.run([*batch, *io], cwd=ROOT, check=True, capture_output=True, timeout=120)
    rules = folder / "score-reference.yaml"
    script = [sys.executable, str(PROMETHEUS_DIR / "score_reference.py")]
    arguments = ["--model", "fraud-scorer", "--scores", str(folder / "scores.parquet")]
    subprocess.run(
        [*script, *arguments, "--column", "fraud_probability", "--output", str(rules)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield rules
    shutil.rmtree(folder, ignore_errors=True)


def send_traffic(full: LocalServer, fraud_only: LocalServer) -> None:
    with httpx.Client(timeout=60) as client:
        for _ in range(3):
            for server in (full, fraud_only):
                body = {"transactions": transactions(5)}
                assert client.post(server.url + "/v1/fraud/score", json=body).status_code == 200
        assert (
            client.post(full.url + "/v1/fraud/score", json={"transactions": []}).status_code == 400
        )
        shed = client.post(
            fraud_only.url + "/v1/fraud/score", json={"transactions": transactions(20)}
        )
        assert shed.status_code == 503
        pixels, _ = load_test_images(3)
        images = {"images": [b64(encode(p)) for p in pixels]}
        assert client.post(full.url + "/v1/images/classify_batch", json=images).status_code == 200
        upload = {"image": ("shoe.png", encode(pixels[0]), "image/png")}
        assert client.post(full.url + "/v1/images/classify", files=upload).status_code == 200
        for model in ("rnn", "transformer"):
            body = {"texts": ["A warm, funny film.", "Dull."], "model": model}
            assert client.post(full.url + "/v1/sentiment", json=body).status_code == 200
        for _ in range(2):
            body = {"prompt": "ROMEO:\n", "max_tokens": 8}
            assert client.post(full.url + "/v1/completions", json=body).status_code == 200
        body = {"label": "Bag", "n": 2}
        assert client.post(full.url + "/v1/images/generate", json=body).status_code == 200


@pytest.fixture(scope="module")
def prometheus(
    server: LocalServer, fraud_only_server: LocalServer, score_reference: Path
) -> Iterator[Prometheus]:
    folder = Path(tempfile.mkdtemp(prefix="dlserve-prometheus-"))
    targets = {
        "dlserve-a": server.url.removeprefix("http://"),
        "dlserve-b": fraud_only_server.url.removeprefix("http://"),
    }
    running = Prometheus(folder, targets, [PROMETHEUS_DIR / "alerts.yaml", score_reference])
    try:
        # traffic, its counts scraped, traffic again, its counts scraped: every counter has
        # two samples that differ, so rate() has data (each round sheds one request on b)
        shed = 'dlserve_predictions_total{pod="dlserve-b", outcome="overloaded"} == '
        for round_number in (1, 2):
            send_traffic(server, fraud_only_server)
            running.wait_for(shed + str(round_number))
            running.wait_for_scrapes(2)
        yield running
    finally:
        running.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def exposed(
    server: LocalServer, fraud_only_server: LocalServer, prometheus: Prometheus
) -> set[str]:
    """Every sample name on the two servers' /metrics, after the traffic."""
    names = set()
    for running in (server, fraud_only_server):
        text = httpx.get(running.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            names |= {sample.name for sample in family.samples}
    return names


def recorded_names(score_reference: Path) -> set[str]:
    files = [PROMETHEUS_DIR / "alerts.yaml", score_reference]
    groups = [g for path in files for g in yaml.safe_load(path.read_text())["groups"]]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def promtool(*arguments: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    assert path, "promtool missing: `make setup` installs Debian's prometheus"
    return subprocess.run([path, *arguments], capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts_test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yaml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alert_rules()}, "an alert without a unit test"


def test_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    alerts = (PROMETHEUS_DIR / "alerts.yaml").read_text()
    assert alerts.count("> 0.01") == 1
    (tmp_path / "alerts.yaml").write_text(alerts.replace("> 0.01", "> 0.5"))
    shutil.copy(PROMETHEUS_DIR / "alerts_test.yaml", tmp_path)
    tested = promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert tested.returncode != 0 and "DLServeOverloaded" in tested.stdout + tested.stderr


def test_the_metrics_this_relies_on_are_exposed(exposed: set[str]) -> None:
    for name in (
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
        "bentoml_service_request_in_progress",
        "dlserve_predictions_total",
        "dlserve_model_info",
        "dlserve_score_bucket",
    ):
        assert name in exposed


def test_every_dashboard_query_returns_data(
    prometheus: Prometheus, exposed: set[str], score_reference: Path
) -> None:
    known = exposed | FROM_PROMETHEUS | recorded_names(score_reference)
    queries = dashboard_queries()
    assert len(queries) >= 12
    for title, expr in queries:
        assert metric_names(expr) <= known, (title, metric_names(expr) - known)
        assert prometheus.query(expr), f"{title}: no data for {expr}"
    for selector in variable_queries():
        assert metric_names(selector) <= known
        assert prometheus.query(selector), selector


def test_every_alert_expression_returns_data(
    prometheus: Prometheus, exposed: set[str], score_reference: Path
) -> None:
    known = exposed | FROM_PROMETHEUS | recorded_names(score_reference)
    rules = alert_rules()
    assert len(rules) >= 6
    for rule in rules:
        expr = rule["expr"]
        assert metric_names(expr) <= known, (rule["alert"], metric_names(expr) - known)
        prometheus.query(expr)  # the whole condition parses and evaluates (data or not)
        inner = without_threshold(expr)
        assert prometheus.query(inner), f"{rule['alert']}: no data for {inner}"


def test_incidents_that_happened_show_in_the_conditions(prometheus: Prometheus) -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    # dlserve-b shed a 20-row request: more than 1% of its fraud requests were overloaded
    shed = prometheus.query(by_name["DLServeOverloaded"])
    assert {r["metric"]["model"] for r in shed} == {"fraud-scorer"}
    # dlserve-b serves 1 model, dlserve-a 4: b is the pod without every model
    not_ready = prometheus.query(by_name["DLServePodNotReady"])
    assert [(r["metric"]["pod"], r["value"][1]) for r in not_ready] == [("dlserve-b", "1")]
    # the image and sentiment models have no reference distribution here, fraud has one, and
    # the generators report no scores
    missing = {
        r["metric"]["model"] for r in prometheus.query(by_name["DLServeScoreReferenceMissing"])
    }
    assert missing == {"image-classifier", "sentiment-rnn", "sentiment-transformer"}
    assert prometheus.query(by_name["DLServeTargetDown"]) == []


def test_rules_evaluate_without_errors_in_prometheus(prometheus: Prometheus) -> None:
    time.sleep(2)  # two rule evaluations (1 s interval) over the scraped data
    body = httpx.get(prometheus.url + "/api/v1/rules", timeout=10).json()
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    fraud_buckets = len(SCORE_BUCKETS) + 1  # + Inf
    assert len(rules) == len(alert_rules()) + fraud_buckets  # + the reference's bucket rules
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_adapter_rule_serves_in_flight_requests_per_pod(prometheus: Prometheus) -> None:
    (rule,) = yaml.safe_load((PROMETHEUS_DIR / "adapter-rules.yaml").read_text())["rules"]
    series = re.fullmatch(r"(\w+)\{.*\}", rule["seriesQuery"]).group(1)
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"dlserve-a|dlserve-b"')
        .replace("<<.GroupBy>>", "pod")
    )
    pods = {r["metric"]["pod"] for r in prometheus.query(query)}
    assert pods == {"dlserve-a", "dlserve-b"}
    assert set(prometheus.query(rule["seriesQuery"])[0]["metric"]) >= {"namespace", "pod"}


def test_server_writes_only_where_the_deployment_mounts_emptydirs(server: LocalServer) -> None:
    """What `bentoml serve` created in BENTOML_HOME while serving (models were there before):
    each entry is a writable emptyDir of the Deployment or moved out by an image variable."""
    home = server.home
    entries = {path.name for path in home.iterdir()}
    deployment = next(o for o in render(K8S / "cpu") if o["kind"] == "Deployment")
    mounts = {
        m["mountPath"]
        for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    image_home = stage("runtime").env()["BENTOML_HOME"]
    writable = {Path(m).name for m in mounts if m.startswith(image_home + "/")}
    # BentoML's task result store (SQLite, with its -wal and -shm files once a task ran):
    # BENTOML_RESULT_STORE in the image puts it in the batch jobs' emptyDir
    moved = {name for name in entries if name.startswith("task_result.db")}
    read_only = {"models", "bentos", "envs"}  # created (empty but models) in the image
    assert entries <= writable | moved | read_only, entries - writable - moved - read_only
    assert {"prometheus_multiproc_dir", "task_result.db"} <= entries
