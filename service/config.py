"""Service settings, read once from ``DLSERVE_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

PROVIDER_CHOICES = ("auto", "cpu", "cuda")
KNOWN_AREAS = ("fraud", "image", "sentiment")
MIN_BATCH_RETENTION_S = 3600


class SettingsError(ValueError):
    """A ``DLSERVE_*`` variable holds a value outside its allowed range."""


def _int_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    """What the operator can set; every field has a ``DLSERVE_<FIELD>`` variable.

    provider: ``auto`` (CUDA when the session really gets it, else CPU), ``cpu``, or ``cuda``
    (required: a model that cannot get CUDA is not ready, never silently on CPU).
    models: areas to load; ``/readyz`` waits for every one of them.
    intra_op_threads: ONNX Runtime threads per session (0: ONNX Runtime's default).
    max_body_bytes: larger request bodies get 413.
    max_batch_rows: most rows the micro-batcher joins into one inference call.
    max_wait_ms: how long the micro-batcher waits for more rows once a batch is open.
    max_queue_rows: rows waiting beyond this get 503 (overload), never an unbounded queue.
    workers: BentoML worker processes, each with its own sessions and batcher.
    batch_retention_s: an HTTP batch job's folder is deleted once its last write is older
    than this (at least an hour, so a running job, renewed by every chunk, is never old).
    """

    provider: str = "auto"
    models: tuple[str, ...] = KNOWN_AREAS
    intra_op_threads: int = 1
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_rows: int = 2048
    max_wait_ms: int = 0
    max_queue_rows: int = 200_000
    workers: int = 1
    batch_retention_s: int = 24 * 3600

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment; raise SettingsError naming the variable on a bad value."""
        provider = os.environ.get("DLSERVE_PROVIDER", cls.provider).strip().lower()
        if provider not in PROVIDER_CHOICES:
            raise SettingsError(f"DLSERVE_PROVIDER={provider!r} must be one of {PROVIDER_CHOICES}")
        raw_models = os.environ.get("DLSERVE_MODELS", ",".join(KNOWN_AREAS))
        models = tuple(name.strip() for name in raw_models.split(",") if name.strip())
        unknown = sorted(set(models) - set(KNOWN_AREAS))
        if unknown:
            raise SettingsError(
                f"DLSERVE_MODELS names unknown areas {unknown}; known: {KNOWN_AREAS}"
            )
        return cls(
            provider=provider,
            models=models,
            intra_op_threads=_int_env("DLSERVE_INTRA_OP_THREADS", cls.intra_op_threads, 0),
            max_body_bytes=_int_env("DLSERVE_MAX_BODY_BYTES", cls.max_body_bytes, 1024),
            max_batch_rows=_int_env("DLSERVE_MAX_BATCH_ROWS", cls.max_batch_rows, 1),
            max_wait_ms=_int_env("DLSERVE_MAX_WAIT_MS", cls.max_wait_ms, 0),
            max_queue_rows=_int_env("DLSERVE_MAX_QUEUE_ROWS", cls.max_queue_rows, 1),
            workers=_int_env("DLSERVE_WORKERS", cls.workers, 1),
            batch_retention_s=_int_env(
                "DLSERVE_BATCH_RETENTION_S", cls.batch_retention_s, MIN_BATCH_RETENTION_S
            ),
        )
