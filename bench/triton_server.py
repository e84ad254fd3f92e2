"""Start NVIDIA Triton (the ``tritonserver`` of PyPI ``nvidia-pytriton``) over ONNX files, each
served by Triton's python backend calling ONNX Runtime with dynamic batching.

A lower bound on Triton (its onnxruntime backend is not in that wheel), with the same ONNX
bytes and the same ONNX Runtime thread settings as dlserve. Set-up needs found by trying: the
python backend stub must import numpy < 2 (the bench environment's ``bin`` goes first on
``PATH``) and find its interpreter's ``libpython`` (``LD_LIBRARY_PATH``); the stub for that
Python version is copied beside the backend, where Triton looks for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import onnxruntime as ort

# The bench environment made by `make bench-triton` (see the Makefile).
TRITON_VENV = Path(os.environ.get("DLSERVE_TRITON_VENV", ".venv-triton")).absolute()
TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(uint8)": "TYPE_UINT8",
}
MAX_BATCH = 4096

MODEL_PY = '''
"""ONNX Runtime on one thread; the requests Triton's dynamic batcher joined run as one call."""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        arrays = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.inputs
        }
        sizes = [len(a) for a in arrays[self.inputs[0]]]
        joined = {name: np.concatenate(parts) for name, parts in arrays.items()}
        results = self.session.run(self.outputs, joined)
        responses, start = [], 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size]))
                for name, value in zip(self.outputs, results)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
'''


def triton_home() -> Path:
    """The ``tritonserver`` folder inside the bench environment's ``pytriton`` package."""
    found = list(TRITON_VENV.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not found:
        raise FileNotFoundError(f"no nvidia-pytriton in {TRITON_VENV} (make bench-triton)")
    return found[0]


def available() -> bool:
    """Whether the bench environment holds Triton."""
    try:
        return (triton_home() / "bin" / "tritonserver").exists()
    except FileNotFoundError:
        return False


def _tensors(values: list) -> str:
    """Triton tensor declarations without the batch axis; a graph tensor of shape ``[batch]``
    is declared ``[1]`` reshaped to ``[]``, as Triton asks."""
    declared = []
    for value in values:
        dims = ", ".join(str(d) for d in value.shape[1:])
        shape = f"dims: [ {dims} ]" if dims else "dims: [ 1 ] reshape: { shape: [ ] }"
        declared.append(f'{{ name: "{value.name}" data_type: {TYPES[value.type]} {shape} }}')
    return ", ".join(declared)


def config(name: str, onnx_file: Path, instances: int) -> str:
    """``config.pbtxt``: the graph's inputs and outputs (batch axis first), dynamic batching."""
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return textwrap.dedent(
        f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: {MAX_BATCH}
        input [ {_tensors(session.get_inputs())} ]
        output [ {_tensors(session.get_outputs())} ]
        dynamic_batching {{ }}
        instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
        """
    )


def model_repository(models: dict[str, Path], instances: int, root: Path) -> Path:
    """A Triton model repository under ``root``: one python-backend model per ONNX file."""
    _install_stub()
    for name, onnx_file in models.items():
        folder = root / name
        (folder / "1").mkdir(parents=True)
        shutil.copyfile(onnx_file, folder / "1" / "model.onnx")
        (folder / "1" / "model.py").write_text(MODEL_PY)
        (folder / "config.pbtxt").write_text(config(name, onnx_file, instances))
    return root


def _install_stub() -> None:
    """Put the python backend stub built for the bench environment's Python where Triton looks
    for it (the wheel ships one per Python version beside the backend)."""
    home = triton_home()
    version = home.parents[2].name.removeprefix("python")  # lib/python3.X/site-packages/...
    target = home / "backends" / "python" / "triton_python_backend_stub"
    if not target.exists():
        shutil.copy2(home / "python_backend_stubs" / version / target.name, target)


def _environment() -> dict[str, str]:
    libdir = subprocess.run(
        [
            str(TRITON_VENV / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = dict(os.environ)
    env["PATH"] = f"{TRITON_VENV / 'bin'}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = f"{libdir}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


class TritonServer:
    """``tritonserver`` on 127.0.0.1:``port`` over ``models``, ``instances`` each: HTTP, and
    gRPC on ``grpc_port`` when one is given (``grpc_address``)."""

    def __init__(
        self, models: dict[str, Path], instances: int, port: int, grpc_port: int | None = None
    ) -> None:
        self.instances = instances
        self.scratch = Path(tempfile.mkdtemp(prefix="dlserve-triton-"))
        repository = model_repository(models, instances, self.scratch / "models")
        self.url = f"http://127.0.0.1:{port}"
        self.grpc_address = None if grpc_port is None else f"127.0.0.1:{grpc_port}"
        grpc = (
            ["--allow-grpc=false"]
            if grpc_port is None
            else ["--allow-grpc=true", "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}"]
        )
        self._log = (self.scratch / "triton.log").open("w")
        home = triton_home()
        self.process = subprocess.Popen(
            [
                str(home / "bin" / "tritonserver"),
                f"--model-repository={repository}",
                f"--backend-directory={home / 'backends'}",
                "--http-address=127.0.0.1",
                f"--http-port={port}",
                *grpc,
                "--allow-metrics=false",
                "--log-verbose=0",
            ],
            env=_environment(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 120) -> TritonServer:
        """Block until every model is ready; raise with Triton's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Triton did not get ready:\n{self.logs()}")

    def logs(self) -> str:
        return (self.scratch / "triton.log").read_text(errors="replace")[-12000:]

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self._log.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
