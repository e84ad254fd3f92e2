"""The one ONNX Runtime session factory: provider choice, read-back, threads."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderUnavailableError(RuntimeError):
    """The configured provider is required but the session did not get it."""


def requested_providers(setting: str) -> list[str]:
    """Providers to ask ONNX Runtime for, in priority order, for a ``DLSERVE_PROVIDER`` value."""
    if setting == "cpu":
        return [CPU]
    if setting in ("auto", "cuda"):
        return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]
    raise ValueError(f"unknown provider setting {setting!r}")


def provider_in_use(session: ort.InferenceSession) -> str:
    """Short name (``cuda`` or ``cpu``) of the provider the session actually runs on.

    The GPU wheel lists CUDA as available even without a GPU and then falls back to CPU, so
    only the session's own provider list tells the truth.
    """
    return "cuda" if CUDA in session.get_providers() else "cpu"


def create_session(
    onnx_path: Path, provider_setting: str, intra_op_threads: int = 0
) -> tuple[ort.InferenceSession, str]:
    """Open ``onnx_path`` and return ``(session, provider)``.

    Raises ProviderUnavailableError when ``provider_setting`` is ``cuda`` and the session
    did not get CUDA.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=requested_providers(provider_setting)
    )
    provider = provider_in_use(session)
    if provider_setting == "cuda" and provider != "cuda":
        raise ProviderUnavailableError(
            f"DLSERVE_PROVIDER=cuda but ONNX Runtime gave {session.get_providers()} "
            f"(available: {ort.get_available_providers()}); refusing to run on CPU"
        )
    log.info(
        "opened %s on %s (session providers %s)", onnx_path.name, provider, session.get_providers()
    )
    return session, provider
