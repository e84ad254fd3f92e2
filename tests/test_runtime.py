"""Provider choice, on CPU: the CUDA paths are simulated with stand-ins for ONNX Runtime."""

from pathlib import Path

import onnxruntime as ort
import pytest

from core import runtime


class FakeSession:
    """Stands in for InferenceSession: records what was asked, reports what it 'got'."""

    def __init__(self, path: str, sess_options: object, providers: list[str]) -> None:
        self.requested = providers
        self.options = sess_options

    def get_providers(self) -> list[str]:
        return [runtime.CPU]  # a GPU wheel on a machine without a GPU falls back like this


@pytest.fixture
def gpu_wheel_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [runtime.CUDA, runtime.CPU])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)


def test_cpu_setting_never_asks_for_cuda(gpu_wheel_without_gpu: None) -> None:
    assert runtime.requested_providers("cpu") == [runtime.CPU]


def test_auto_asks_for_cuda_when_listed_but_reports_what_the_session_got(
    gpu_wheel_without_gpu: None,
) -> None:
    session, provider = runtime.create_session(Path("m.onnx"), "auto", intra_op_threads=2)
    assert session.requested == [runtime.CUDA, runtime.CPU]
    assert provider == "cpu"
    assert session.options.intra_op_num_threads == 2


def test_required_cuda_that_falls_back_is_refused(gpu_wheel_without_gpu: None) -> None:
    with pytest.raises(runtime.ProviderUnavailableError, match="refusing to run on CPU"):
        runtime.create_session(Path("m.onnx"), "cuda")


def test_session_that_got_cuda_reports_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    class CudaSession(FakeSession):
        def get_providers(self) -> list[str]:
            return [runtime.CUDA, runtime.CPU]

    monkeypatch.setattr(ort, "get_available_providers", lambda: [runtime.CUDA, runtime.CPU])
    monkeypatch.setattr(ort, "InferenceSession", CudaSession)
    assert runtime.create_session(Path("m.onnx"), "cuda")[1] == "cuda"


def test_cpu_only_wheel_gives_cpu_for_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [runtime.CPU])
    assert runtime.requested_providers("auto") == [runtime.CPU]


def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        runtime.requested_providers("tpu")
