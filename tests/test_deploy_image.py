"""The Dockerfile, without a Docker engine: hadolint with every warning level failing, the
image's contract (user, port, health check, signals, entrypoint), that it installs the
generated serving requirements and nothing else, that those are what the service imports, and
the model-import step of the build run for real against a smoke-trained model."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy_dockerfile import DOCKERFILE, parse, stage

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
sys.path.insert(0, str(ROOT / "deploy"))
import requirements as serve_requirements  # noqa: E402  (deploy/requirements.py)

# apt packages the image may install, by stage kind: runtime bases ship them, build stages don't.
RUNTIME_APT = {
    "tini": "PID 1 that forwards SIGTERM and reaps zombies",
    "python3": "the CUDA image has none",
}
BUILD_APT = {"python3-venv": "ensurepip to create the virtual environment (GPU build stage only)"}
# Serving requirements no module imports: the server loads them when installed.
LOADED_NOT_IMPORTED = {
    "uvloop": "uvicorn's event loop under bentoml serve",
    "httptools": "uvicorn's HTTP parser under bentoml serve",
}


def hadolint(path: Path) -> list[dict]:
    result = subprocess.run(
        [HADOLINT, "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout or "[]")


def test_hadolint_finds_nothing_at_any_level() -> None:
    assert hadolint(DOCKERFILE) == []
    assert not (ROOT / ".hadolint.yaml").exists(), "no global ignores: say why beside the line"


def test_hadolint_is_effective(tmp_path: Path) -> None:
    """A copy with an unpinned, cache-keeping install is flagged: the linter really runs."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "RUN apt-get update && apt-get install -y curl\n")
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3008", "DL3009", "DL3015"} <= codes


def test_every_ignored_rule_says_why() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [(n, line) for n, line in enumerate(lines) if "hadolint ignore=" in line]
    assert ignores
    for number, line in ignores:
        start = number  # the comment block right above the ignore gives the reason
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1
        reason = " ".join(lines[start:number])
        for rule in line.split("=", 1)[1].split(","):
            assert rule.strip() + ":" in reason, (number + 1, rule)
        assert lines[number + 1].startswith(("FROM", "RUN")), "an ignore covers the next line"


def test_requirement_files_are_generated_from_pyproject() -> None:
    expected = serve_requirements.expected()
    assert set(expected) == {
        "deploy/requirements-serve.txt",
        "deploy/requirements-serve-gpu.txt",
        "deploy/requirements-ray.txt",
    }
    for path, text in expected.items():
        assert (ROOT / path).read_text() == text, (
            f"{path} is stale: python {path.rsplit('/', 1)[0]}/requirements.py"
        )
    check = subprocess.run(
        [sys.executable, "deploy/requirements.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_requirement_check_fails_on_a_hand_edit(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for path, text in serve_requirements.expected().items():
        (tmp_path / path).write_text(text)
    assert serve_requirements.expected(tmp_path) == serve_requirements.expected()
    (tmp_path / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml")
        .read_text()
        .replace('"numpy>=1.26",', '"numpy>=1.26",\n    "torch",')
    )
    changed = serve_requirements.expected(tmp_path)
    assert "torch" in changed["deploy/requirements-serve.txt"].splitlines()
    assert (
        changed["deploy/requirements-serve.txt"]
        != (ROOT / "deploy/requirements-serve.txt").read_text()
    )


def requirement_names(path: str) -> set[str]:
    lines = (ROOT / path).read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith(("#", "-"))]
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def test_cpu_and_gpu_files_differ_only_in_the_runtime_wheel() -> None:
    cpu = requirement_names("deploy/requirements-serve.txt")
    gpu = requirement_names("deploy/requirements-serve-gpu.txt")
    assert cpu - gpu == {"onnxruntime"} and gpu - cpu == {"onnxruntime-gpu"}
    train = {
        Requirement(r).name
        for r in serve_requirements.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["train"]
    }
    assert not (cpu | gpu) & train, "a training package in the serving requirements"


def apt_packages(arguments: str) -> set[str]:
    packages: set[str] = set()
    for command in re.split(r"&&|;|\|\|", arguments):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def test_image_installs_only_the_serving_requirements() -> None:
    _, stages = parse()
    by_name = {s.name: s for s in stages}
    # pip installs nothing but the generated files (no package named on the command line)
    pip_runs = [run for s in stages for run in s.all("RUN") if "pip install" in run]
    assert len(pip_runs) == 1
    install = pip_runs[0].split("pip install", 1)[1].split("&&", 1)[0]
    assert shlex.split(install) == [
        "--no-cache-dir",
        "--only-binary=:all:",
        "-r",
        "/tmp/deploy/${REQUIREMENTS}",
    ]
    assert by_name["venv-cpu"].env()["REQUIREMENTS"] == "requirements-serve.txt"
    assert by_name["venv-gpu"].env()["REQUIREMENTS"] == "requirements-serve-gpu.txt"
    copied = by_name["build"].all("COPY")[0].split()
    assert copied[:-1] == [
        "deploy/requirements-serve.txt",
        "deploy/requirements-serve-gpu.txt",
        "deploy/requirements-ray.txt",
    ]
    # apt: runtime bases ship only RUNTIME_APT, build stages add only BUILD_APT
    for s in stages:
        installed = set().union(*(apt_packages(run) for run in s.all("RUN")))
        allowed = RUNTIME_APT if s.name.startswith("base-") else BUILD_APT
        assert installed <= set(allowed), (s.name, installed)
    # the image: the venv, the model store, service/ and core/; nothing else from the context
    runtime = by_name["runtime"]
    # ${RUNTIME:-default} (buildah picks stages from --build-arg alone): the same default as ARG
    assert runtime.base == by_name["build"].base.replace("venv-", "base-", 1)
    assert runtime.base == "base-${RUNTIME:-" + parse()[0]["RUNTIME"] + "}"
    assert sorted(runtime.all("COPY")) == sorted(
        [
            "--from=build /opt/venv /opt/venv",
            "--from=models /var/lib/dlserve/bentoml/models /var/lib/dlserve/bentoml/models",
            "service/ service/",
            "core/ core/",
        ]
    )
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :].count("!training/") == 0 and "*" in ignored


def third_party_imports(folders: list[str]) -> set[str]:
    found: set[str] = set()
    local = {"service", "core"}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                found |= {name.split(".")[0] for name in names}
    return {name for name in found - local if name not in sys.stdlib_module_names}


def closure(names: set[str]) -> set[str]:
    """Distributions ``names`` need, with their own requirements (as installed here)."""
    seen: set[str] = set()
    todo = [canonicalize_name(name) for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if not installed(name):
            continue
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonicalize_name(requirement.name))
    return seen


def installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_serving_requirements_are_what_service_and_core_import() -> None:
    # the file of the runtime installed here (`make setup RUNTIME=gpu` installs the GPU wheel)
    gpu = installed("onnxruntime-gpu")
    serve = requirement_names(f"deploy/requirements-serve{'-gpu' if gpu else ''}.txt")
    ray = requirement_names("deploy/requirements-ray.txt")
    providers = metadata.packages_distributions()
    imported = third_party_imports(["service", "core"])
    needed = {canonicalize_name(providers[name][0]) for name in imported}
    # every serving requirement is imported, or loaded by the server (and said why)
    unused = serve - needed
    assert unused == set(LOADED_NOT_IMPORTED), unused
    # every import is satisfied by the serving requirements (or Ray's, for the Ray engine)
    available = closure(serve) | closure(ray)
    assert needed <= available, needed - available
    assert "torch" not in needed | available


def test_runtime_stage_contract() -> None:
    global_args, _ = parse()
    runtime = stage("runtime")
    uid = next(a.split("=")[1] for a in runtime.all("ARG") if a.startswith("UID="))
    assert int(uid) >= 10000
    assert runtime.all("USER") == ["${UID}:${UID}"]
    assert runtime.all("EXPOSE") == ["3000 8001"]  # HTTP, and gRPC (DLSERVE_GRPC_PORT's default)
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "CMD [" in healthcheck and "http://127.0.0.1:3000/livez" in healthcheck
    assert json.loads(runtime.all("ENTRYPOINT")[0]) == ["/usr/bin/tini", "--"]
    command = json.loads(runtime.all("CMD")[0])
    assert command[:3] == ["bentoml", "serve", "service.service:DLServe"]
    assert command[3:] == ["--host", "0.0.0.0", "--port", "3000"]
    assert global_args["RUNTIME"] == "gpu" and global_args["MODELS"] == "image"
    assert re.fullmatch(
        r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", global_args["CUDA_IMAGE"]
    )
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", global_args["PYTHON_IMAGE"])
    assert stage("base-cpu").env()["DLSERVE_PROVIDER"] == "cpu"
    assert stage("base-gpu").env()["DLSERVE_PROVIDER"] == "cuda"
    assert "onnxruntime-gpu==1.31.1" in (ROOT / "deploy/requirements-serve-gpu.txt").read_text(), (
        "the CUDA 13 / cuDNN 9 image was chosen for onnxruntime-gpu 1.31.1: check both together"
    )


IMPORT_SCRIPT = ROOT / "deploy" / "docker" / "import-models.sh"


def run_import(mode: str, folder: Path, home: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    return subprocess.run(
        ["sh", str(IMPORT_SCRIPT), mode, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_model_import_step_refuses_wrong_input(tmp_path: Path) -> None:
    empty = tmp_path / "exports"
    empty.mkdir()
    (empty / "README.md").write_text("not a model")
    missing = run_import("image", empty, tmp_path / "home-a")
    assert missing.returncode == 1 and "no .bentomodel" in missing.stderr
    volume = run_import("volume", empty, tmp_path / "home-b")
    assert volume.returncode == 0 and list((tmp_path / "home-b" / "models").iterdir()) == []
    assert run_import("baked", empty, tmp_path / "home-c").returncode == 2


def test_model_import_step_bakes_an_exported_model(tmp_path: Path, fraud_model: dict) -> None:
    """`bentoml models export` then the build's import step: the new store serves the same model."""
    exports = tmp_path / "exports"
    exports.mkdir()
    bentoml = [sys.executable, "-m", "bentoml"]
    subprocess.run(
        [
            *bentoml,
            "models",
            "export",
            f"fraud-scorer:{fraud_model['version']}",
            str(exports / "fraud-scorer.bentomodel"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    home = tmp_path / "image-store"
    result = run_import("image", exports, home)
    assert result.returncode == 0, result.stderr
    # the image serves as user 10001, not as the root that imported: everything readable
    for path in [home / "models", *(home / "models").rglob("*")]:
        wanted = 0o005 if path.is_dir() else 0o004
        assert path.stat().st_mode & wanted == wanted, (path, oct(path.stat().st_mode))
    code = (
        "import bentoml, hashlib, json, pathlib; m = bentoml.models.get('fraud-scorer:latest'); "
        "root = pathlib.Path(m.path); meta = json.loads((root / 'metadata.json').read_text()); "
        "digest = hashlib.sha256((root / meta['onnx_file']).read_bytes()).hexdigest(); "
        "print(json.dumps({'version': m.tag.version, 'sha256': meta['sha256'], 'actual': digest}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    stored = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert stored["sha256"] == stored["actual"] == fraud_model["sha256"]
    assert stored["version"] == fraud_model["version"] and stored["sha256"] == fraud_model["sha256"]


def test_the_service_imports_without_package_metadata() -> None:
    """The image copies service/ and core/ and never pip-installs dlserve: the server (V2's
    ``GET /v2`` version included) must not need the package's metadata."""
    code = (
        "import importlib.metadata as m\n"
        "real = m.Distribution.from_name.__func__\n"
        "def from_name(cls, name):\n"
        "    if name == 'dlserve':\n"
        "        raise m.PackageNotFoundError(name)\n"
        "    return real(cls, name)\n"
        "m.Distribution.from_name = classmethod(from_name)\n"
        "import service.service, service.open_inference as v2\n"
        "print(v2.SERVER['version'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from service.version import VERSION

    assert result.stdout.strip().splitlines()[-1] == VERSION == metadata.version("dlserve")


def test_the_gpu_requirements_resolve_to_the_gpu_wheel_only(tmp_path: Path) -> None:
    """The GPU image cannot be built here (no CUDA base image): its requirement file is resolved
    as pip would in that image (CPython 3.12, manylinux x86_64, wheels only), and it brings
    onnxruntime-gpu and never onnxruntime (the two break each other) nor torch."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in (17, 28, 31, 35, 39)]
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet"]
    command += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    command += [arg for platform in platforms for arg in ("--platform", platform)]
    command += ["--target", str(tmp_path / "t"), "--report", str(report)]
    command += ["-r", str(ROOT / "deploy/requirements-serve-gpu.txt")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = {
        canonicalize_name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]
    }
    assert "onnxruntime-gpu" in names and "bentoml" in names
    assert not names & {"onnxruntime", "torch"}
