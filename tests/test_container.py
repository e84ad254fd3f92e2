"""The CPU image, built and run for real with podman and buildah (deploy/docker/podman-here.sh,
what a developer runs too): a base image made from Debian packages, both ``MODELS=image`` (the
smoke models, exported through the registry's list) and ``MODELS=volume``; the image run as the
pod runs it (read-only root, no capabilities, no new privileges, user 10001, memory and CPU
limits, writable paths as volumes) answers every route, passes its HEALTHCHECK and drains on
``podman stop``; ``podman kube play`` runs the cpu overlay's ConfigMap and Deployment.

Needs podman, buildah, mmdebstrap and runc (``make setup`` installs them; tests/needs.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness.local_server import REPOSITORY, free_port, status
from harness.payloads import transactions
from tests.deploy_k8s import K8S, render
from tests.every_route import check_every_route
from tests.needs import require_tools
from tests.raw_http import read_response, request_head, wait_in_progress

pytestmark = pytest.mark.http
TOOLS = ("podman", "buildah", "mmdebstrap", "runc")
PODMAN_HERE = REPOSITORY / "deploy" / "docker" / "podman-here.sh"
# Names of this run only: two suites on one machine (CI beside a developer) share podman.
RUN = f"dlserve-ci-{os.getpid()}"
IMAGE = f"localhost/{RUN}"
UID = "10001"
WRITABLE = (
    "/var/lib/dlserve/bentoml/tmp",
    "/var/lib/dlserve/bentoml/prometheus_multiproc_dir",
    "/var/lib/dlserve/batch",
)
# What the build context holds (the .dockerignore's allow-list), models aside.
CONTEXT = (
    "Dockerfile",
    ".dockerignore",
    "service",
    "core",
    "deploy/requirements-serve.txt",
    "deploy/requirements-serve-gpu.txt",
    "deploy/requirements-ray.txt",
    "deploy/docker/import-models.sh",
)


def setup_module() -> None:
    require_tools(*TOOLS)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """``podman ARGS`` with this sandbox's settings (podman-here.sh)."""
    result = subprocess.run(
        [str(PODMAN_HERE), "podman", *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, (args, result.stderr[-3000:])
    return result


def timed(label: str, command: list[str], timeout: float) -> None:
    """Run ``command``; print its wall time (the closing figures of tests/ come from here)."""
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
    print(f"{label}: {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="module")
def images(
    stored_models: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Both CPU images built from a copy of the build context: ``image`` holds the smoke
    models, exported through the registry's list; ``volume`` holds none."""
    context = tmp_path_factory.mktemp("context")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", *CONTEXT],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPOSITORY / name, context / name)
    export = [str(REPOSITORY / "deploy/docker/export-models.sh"), str(context / "deploy/models")]
    subprocess.run(
        export,
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
        timeout=300,
        capture_output=True,
    )
    assert {p.stem for p in (context / "deploy/models").glob("*.bentomodel")} == set(stored_models)
    timed("base image", [str(PODMAN_HERE), "base"], timeout=600)
    built = {}
    for models in ("volume", "image"):
        built[models] = f"{IMAGE}:cpu-{models}"
        command = [str(PODMAN_HERE), "build", "cpu", models, built[models], str(context)]
        timed(f"build MODELS={models}", command, timeout=900)
    size = podman("image", "inspect", built["image"], "--format", "{{.Size}}").stdout
    print(f"image size (MODELS=image): {int(size) / 1e6:.0f} MB")
    yield built
    podman("rmi", *built.values(), check=False)
    podman("image", "prune", "-f", check=False)  # the layers only these images used


def test_buildah_resolves_the_default_runtime_stages() -> None:
    """With RUNTIME left at its default (gpu), podman build gets as far as the CUDA base image
    (unreachable here): it resolved the stages venv-gpu and base-gpu, which it used to look up
    as images."""
    build = subprocess.run(
        [
            str(PODMAN_HERE),
            "podman",
            "build",
            "--pull=never",
            "--build-arg",
            "MODELS=volume",
            str(REPOSITORY),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode != 0 and "nvidia/cuda" in build.stderr, build.stderr[-2000:]
    assert "base-gpu" not in build.stderr and "venv-gpu" not in build.stderr, build.stderr[-2000:]


@dataclass
class Container:
    """A running container whose port 3000 is published on 127.0.0.1."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, probe: str, timeout: float = 180) -> float:
        """Seconds until ``probe`` answers 200; fail with the container's log otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if status(self.url + probe) == 200:
                return time.monotonic() - started
            state = podman("inspect", self.name, "--format", "{{.State.Running}}", check=False)
            assert state.stdout.strip() != "false", self.logs()
            time.sleep(0.3)
        raise AssertionError(f"{probe} not 200 within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return podman("logs", self.name, check=False).stderr[-4000:]

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


def run_hardened(name: str, image: str, *extra: str) -> Container:
    """``image`` run as the pod runs it: every flag below mirrors deploy/k8s/base's pod."""
    port = free_port()
    volumes = [arg for path in WRITABLE for arg in ("-v", path)]
    podman("rm", "-f", "-t", "0", name, check=False)
    podman(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:3000",
        "--read-only",
        *volumes,
        "--tmpfs",
        "/tmp:mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        f"{UID}:{UID}",
        "--memory",
        "3g",
        "--cpus",
        "2",
        "-e",
        "DLSERVE_WORKERS=2",
        *extra,
        image,
    )
    return Container(name, port)


@pytest.fixture(scope="module")
def container(images: dict[str, str]) -> Iterator[Container]:
    running = run_hardened(RUN, images["image"])
    try:
        print(f"/livez after {running.wait('/livez'):.1f} s")
        print(f"/readyz after {running.wait('/readyz'):.1f} s")
        yield running
    finally:
        running.remove()


def test_the_image_answers_every_route(container: Container) -> None:
    check_every_route(container.url)
    print("memory per process (MB):", worker_memory(container))


def worker_memory(container: Container) -> dict[str, float]:
    """Resident memory of each bentoml process in the container, in MB, by command line."""
    code = (
        "import pathlib, json; out = {}\n"
        "for p in pathlib.Path('/proc').glob('[0-9]*'):\n"
        "    try: cmd = (p / 'cmdline').read_bytes().replace(b'\\0', b' ').decode()[:80]; "
        "rss = [l for l in (p / 'status').read_text().splitlines() if l.startswith('VmRSS')]\n"
        "    except OSError: continue\n"
        "    if rss and 'bentoml' in cmd: out[p.name + ' ' + cmd] = int(rss[0].split()[1]) / 1024\n"
        "print(json.dumps(out))"
    )
    return json.loads(podman("exec", container.name, "python3", "-c", code).stdout)


def test_the_image_runs_unprivileged_and_read_only(container: Container) -> None:
    identity = podman("exec", container.name, "id", "-u").stdout.strip()
    assert identity == UID
    write = podman("exec", container.name, "touch", "/opt/dlserve/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    store = podman("exec", container.name, "ls", "/var/lib/dlserve/bentoml/models").stdout.split()
    assert set(store) >= {"fraud-scorer", "text-generator"}


def test_the_healthcheck_command_passes(container: Container) -> None:
    assert podman("healthcheck", "run", container.name, check=False).returncode == 0
    config = json.loads(podman("image", "inspect", IMAGE + ":cpu-image").stdout)[0]
    assert "/livez" in " ".join(config["Healthcheck"]["Test"])  # kept: --format docker


def test_podman_stop_drains_the_request_in_flight(container: Container) -> None:
    """tini forwards SIGTERM; the request whose body is half-sent still gets its answer."""
    body = json.dumps({"transactions": transactions(20)}).encode()
    route = "/v1/fraud/score"
    with socket.create_connection(("127.0.0.1", container.port), timeout=30) as sock:
        sock.sendall(request_head(route, len(body)) + body[: len(body) // 2])
        wait_in_progress(container, route, 1)  # type: ignore[arg-type]  (has .url)
        stopping = threading.Thread(
            target=podman, args=("stop", "-t", "90", container.name), kwargs={"timeout": 120}
        )
        stopping.start()
        deadline = time.monotonic() + 30
        while status(container.url + "/readyz") != 503:  # SIGTERM arrived: draining
            assert time.monotonic() < deadline, container.logs()
            time.sleep(0.1)
        sock.sendall(body[len(body) // 2 :])
        answer_status, answer = read_response(sock)
    assert answer_status == 200 and len(answer["results"]) == 20
    stopping.join(timeout=120)
    state = podman("inspect", container.name, "--format", "{{.State.ExitCode}} {{.State.Running}}")
    assert state.stdout.split() == ["0", "false"], container.logs()


def test_a_volume_store_prepared_as_documented_is_served(
    images: dict[str, str], tmp_path: Path
) -> None:
    """MODELS=volume: a store written by bentoml (0700 folders) made readable as DEPLOY says."""
    store = tmp_path / "models"
    shutil.copytree(Path(os.environ["BENTOML_HOME"]) / "models", store, symlinks=True)
    subprocess.run(["chmod", "-R", "a+rX", str(store)], check=True)  # docs/DEPLOY.md
    running = run_hardened(
        f"{RUN}-volume", images["volume"], "-v", f"{store}:/var/lib/dlserve/bentoml/models:ro"
    )
    try:
        running.wait("/readyz")
        models = json.loads(urllib.request.urlopen(running.url + "/v1/models").read())["models"]
        assert {m["name"] for m in models} >= {"fraud-scorer", "image-classifier"}
    finally:
        running.remove()


def test_podman_kube_play_runs_the_cpu_deployment(images: dict[str, str], tmp_path: Path) -> None:
    """The cpu overlay's ConfigMap and Deployment as a real pod: ready, with the securityContext,
    resources, environment and volumes applied. (Service, HPA, PDB, NetworkPolicy and probes on
    a named port are not run by podman: docs/DEPLOY.md.)"""
    objects = {
        o["kind"]: o for o in render(K8S / "cpu") if o["kind"] in ("ConfigMap", "Deployment")
    }
    deployment = objects["Deployment"]
    deployment["spec"]["replicas"] = 1
    deployment["metadata"]["name"] = RUN  # the pod is named after it: RUN-pod
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    server["image"] = images["image"]
    port = free_port()
    server["ports"][0]["hostPort"] = port  # podman binds every replica's port otherwise
    server["ports"][0]["hostIP"] = "127.0.0.1"
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(yaml.safe_dump_all([objects["ConfigMap"], deployment]))
    podman("kube", "down", str(pod_file), check=False)
    podman("kube", "play", str(pod_file), timeout=180)
    try:
        names = podman("ps", "--format", "{{.Names}}").stdout.split()
        (name,) = [n for n in names if n.startswith(f"{RUN}-pod") and n.endswith("-dlserve")]
        pod = Container(name, port)
        print(f"kube play: /readyz after {pod.wait('/readyz'):.1f} s")
        (info,) = json.loads(podman("inspect", pod.name).stdout)
        host = info["HostConfig"]
        assert info["Config"]["User"].split(":")[0] == UID
        assert host["ReadonlyRootfs"] is True
        assert not info["EffectiveCaps"]  # capabilities: drop ALL
        assert "no-new-privileges" in " ".join(host["SecurityOpt"])
        limits = server["resources"]["limits"]
        assert host["Memory"] == 3 * 2**30 == int(limits["memory"].removesuffix("Gi")) * 2**30
        assert host["CpuQuota"] / host["CpuPeriod"] == float(limits["cpu"])
        env = dict(item.split("=", 1) for item in info["Config"]["Env"])
        for key, value in objects["ConfigMap"]["data"].items():
            assert env[key] == value, key
        mounts = {m["Destination"] for m in info["Mounts"]}
        assert mounts >= {*WRITABLE, "/tmp"}
    finally:
        podman("kube", "down", str(pod_file), check=False)
