"""`make setup RUNTIME=...` switches ONNX Runtime wheels cleanly: the Makefile's install recipe
runs for real against a stand-in pip that keeps the set of installed wheels in a file (the
two wheels write the same ``onnxruntime/`` package, so both installed breaks both)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_PIP = f"""#!{sys.executable}
# Stand-in pip: the installed wheels live in a JSON file; every call is logged.
import json, pathlib, re, sys
state = pathlib.Path(__file__).with_name("wheels.json")
log = pathlib.Path(__file__).with_name("calls.log")
wheels = set(json.loads(state.read_text()))
args = [a for a in sys.argv[1:] if a not in ("--quiet", "-q", "-y")]
with log.open("a") as out:
    out.write(" ".join(args) + "\\n")
command, rest = args[0], args[1:]
if command == "show":
    sys.exit(0 if rest[0] in wheels else 1)
if command == "uninstall":
    wheels -= set(rest)
if command == "install" and "-e" in rest:
    extras = re.search(r"\\[(.*)\\]", rest[rest.index("-e") + 1]).group(1).split(",")
    wheels |= {{"cpu": {{"onnxruntime"}}, "gpu": {{"onnxruntime-gpu"}}}}.get(extras[-1], set())
state.write_text(json.dumps(sorted(wheels)))
"""


def make_setup(venv: Path, runtime: str, wheels: list[str]) -> tuple[list[str], list[str]]:
    """Run the Makefile's install recipe for ``runtime`` over ``wheels``; (wheels, pip calls)."""
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    pip = venv / "bin" / "pip"
    pip.write_text(FAKE_PIP)
    pip.chmod(0o755)
    (venv / "bin" / "wheels.json").write_text(json.dumps(wheels))
    (venv / "bin" / "calls.log").write_text("")
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            f"VENV={venv}",
            "PYTHON=true",
            f"RUNTIME={runtime}",
            str(venv / f".installed-{runtime}"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (venv / f".installed-{runtime}").exists()
    calls = (venv / "bin" / "calls.log").read_text().splitlines()
    return json.loads((venv / "bin" / "wheels.json").read_text()), calls


@pytest.mark.parametrize(
    ("runtime", "before", "after"),
    [
        ("gpu", ["onnxruntime"], ["onnxruntime-gpu"]),  # CPU set-up, then RUNTIME=gpu
        ("cpu", ["onnxruntime-gpu"], ["onnxruntime"]),  # and back
        ("gpu", ["onnxruntime", "onnxruntime-gpu"], ["onnxruntime-gpu"]),  # already broken
        ("cpu", [], ["onnxruntime"]),  # fresh venv
    ],
)
def test_switching_runtime_leaves_one_wheel(
    tmp_path: Path, runtime: str, before: list[str], after: list[str]
) -> None:
    wheels, calls = make_setup(tmp_path / "venv", runtime, before)
    assert wheels == after
    if len(before) == 2 or (before and before != after):
        # both removed first: the wanted wheel, if present, had its files overwritten
        uninstall = calls.index("uninstall onnxruntime onnxruntime-gpu")
        install = next(i for i, c in enumerate(calls) if c.startswith("install -e"))
        assert uninstall < install
    else:
        assert not [c for c in calls if c.startswith("uninstall")]


def test_same_runtime_again_uninstalls_nothing(tmp_path: Path) -> None:
    wheels, calls = make_setup(tmp_path / "venv", "cpu", ["onnxruntime"])
    assert wheels == ["onnxruntime"]
    assert not [c for c in calls if c.startswith("uninstall")]


def test_unknown_runtime_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "-n", f"VENV={tmp_path}", "RUNTIME=rocm", "setup"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "must be cpu or gpu" in result.stderr


@pytest.mark.parametrize(("variables", "host"), [([], "127.0.0.1"), (["HOST=0.0.0.0"], "0.0.0.0")])
def test_make_serve_binds_loopback_unless_told(variables: list[str], host: str) -> None:
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve", *variables],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    serve = next(line for line in printed.splitlines() if "bentoml serve" in line)
    assert f"--host {host} " in serve
