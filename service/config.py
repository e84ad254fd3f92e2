"""Service settings: ``DLSERVE_*`` environment variables, typed and range-checked at start.

``Settings.from_env()`` reads them once; a bad value raises ``SettingsError`` naming the
variable and the rule, which stops the start. docs/OPERATIONS.md's settings table is
``python -m service.config``'s output (a test keeps them equal).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.precision_names import FP32, PRECISIONS
from service.cpus import available_cpus

ENV_PREFIX = "DLSERVE_"
NameList = Annotated[tuple[str, ...], NoDecode]
SecretList = Annotated[tuple[SecretStr, ...], NoDecode]
MIN_API_KEY_CHARS = 16
FIELD_NAME = re.compile(r"[A-Za-z0-9_-]+")


def split_names(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def plugin_modules() -> tuple[str, ...]:
    """``DLSERVE_AREA_MODULES`` as the environment holds it, for the area registry, which is
    read before the settings are (the only place the variable is read outside ``Settings``)."""
    return split_names(os.environ.get(f"{ENV_PREFIX}AREA_MODULES", ""))


class SettingsError(ValueError):
    """A ``DLSERVE_*`` variable holds a value outside its allowed range."""


class Settings(BaseSettings):
    """What the operator can set; every field ``x`` is the variable ``DLSERVE_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="`auto`: CUDA when the session really gets it, else CPU. `cpu`. `cuda`: "
        "required; a model that cannot get CUDA is **not ready** (never silently on CPU)",
    )
    models: NameList | None = Field(
        None,
        json_schema_extra={"shown_default": "all areas"},
        description="comma list of areas to serve (default: every declared area); "
        "`/readyz` waits for all of them, the routes of the others answer 404",
    )
    area_modules: NameList = Field(
        (),
        description="comma list of extra modules declaring `AREA = Area(...)` (plug-in areas, "
        "served beside `service/areas/`)",
    )
    workers: int = Field(
        default_factory=available_cpus,
        ge=1,
        json_schema_extra={"shown_default": "available CPUs"},
        description="BentoML worker processes, each with its own sessions and batcher; default: "
        "the CPUs this process may use (affinity mask, capped by the cgroup CPU quota); one "
        "copy of every model per worker. Sizing: see Workers, threads and batching",
    )
    intra_op_threads: int = Field(
        1, ge=0, description="ONNX Runtime threads per session (0 = ONNX Runtime's default)"
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="larger request bodies get 413"
    )
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="the Open Inference Protocol over gRPC (`inference.GRPCInferenceService`) "
        "on this port, from every worker (shared with `SO_REUSEPORT`); 0: no gRPC. A message "
        "larger than `DLSERVE_MAX_BODY_BYTES` gets `RESOURCE_EXHAUSTED`",
    )
    max_batch_rows: int = Field(2048, ge=1, description="most rows joined into one inference call")
    max_wait_ms: int = Field(
        0,
        ge=0,
        description="extra wait for more rows once a batch is open, ended by a full batch "
        "(0: none; batches form while the previous call runs)",
    )
    max_queue_rows: int = Field(
        200_000, ge=1, description="rows waiting beyond this get 503 with `Retry-After: 1`"
    )
    max_request_tokens: int = Field(
        8192,
        ge=1,
        description="token-sequence models (`/v1/sentiment`, `/v1/embeddings`): most tokens in "
        "one request, counted as texts x the longest text's tokens (after truncation to the "
        "model's maximum); a request over it gets 400 naming `texts` (`input`) and the limit",
    )
    max_batch_tokens: int = Field(
        8192,
        ge=1,
        description="token-sequence models: most tokens (rows x padded length) joined into "
        "one inference call; at least `DLSERVE_MAX_REQUEST_TOKENS`",
    )
    max_request_pixels: int = Field(
        50_000_000,
        ge=1,
        description="images: most pixels (width x height, read from each file's header before "
        "decoding) over all images of one request; beyond, 400 naming the field and the limit",
    )
    max_completion_tokens: int = Field(
        16384,
        ge=1,
        description="`/v1/completions`: most tokens one request may ask for, counted over its "
        "sequences (prompts x `best_of`, else `n`) as each prompt's tokens plus `max_tokens`; "
        "a request over it gets 400 naming `best_of`, `n`, `prompt` or `max_tokens` and the "
        "limit",
    )
    max_active_sequences: int = Field(
        16, ge=1, description="stepwise models: requests advancing together at each step"
    )
    max_waiting_sequences: int = Field(
        64,
        ge=0,
        description="stepwise models: sequences waiting for a place (a completion asks for "
        "prompts x `best_of`, else `n`, admitted whole); beyond this, 429 with `Retry-After: "
        "1`, and a request asking for more than this ever fits gets 400; their routes are "
        "bounded by this and `DLSERVE_MAX_ACTIVE_SEQUENCES`, not by "
        "`DLSERVE_MAX_CONCURRENT_REQUESTS`",
    )
    stream_interval_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="stepwise models: a stream sends at most one event per this many ms (its "
        "first at once); what is produced meanwhile travels joined in the next event, so a busy "
        "server sends fewer, larger events (0: each as soon as the event loop can)",
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="requests one worker handles at once, counted once their body has "
        "arrived (probes, `/v2/health/*`, `/metrics`, the API documents and the stepwise routes "
        "aside); the next get 503 with `Retry-After: 1`, without queueing",
    )
    request_read_timeout_s: int = Field(
        30,
        ge=1,
        description="a new connection's first request head, and every request's body (from "
        "its head), must arrive within this many seconds: else the connection is closed, or "
        "the request answered 408; a request is counted by `DLSERVE_MAX_CONCURRENT_REQUESTS` "
        "only once its body has arrived",
    )
    refusal_delay_ms: int = Field(
        250,
        ge=0,
        le=5000,
        description="a refusal (503 or 429 with `Retry-After`: admission bound, full queue, "
        "full step scheduler) is answered this late, so clients retrying at once cannot make "
        "refusals a worker's main work (0: at once; probes never wait)",
    )
    shutdown_delay_s: int = Field(
        2,
        ge=0,
        description="after SIGTERM, seconds a worker keeps accepting requests while `/readyz` "
        "answers 503 (so load balancers stop sending); then it accepts no new connection",
    )
    shutdown_grace_s: int = Field(
        60,
        ge=1,
        description="after SIGTERM, the most seconds a worker waits for its requests in "
        "flight (the delay included) before it cuts them and exits",
    )
    api_keys: SecretList = Field(
        (),
        description="comma list of API keys (at least 16 characters each) accepted as "
        "`Authorization: Bearer KEY`; several for rotation; set but holding no key (blank, "
        "commas only): refused at start; unset here and in `DLSERVE_API_KEYS_FILE`: no access "
        "control",
    )
    api_keys_file: Path | None = Field(
        None,
        json_schema_extra={"shown_default": "(none)"},
        description="file of more API keys, one per line (e.g. a mounted Kubernetes "
        "Secret), read at start",
    )
    protect_metrics: bool = Field(
        False,
        json_schema_extra={"shown_default": "`false`"},
        description="`true`: `/metrics` needs an API key too (probes never do)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="level of dlserve's own log lines (BentoML's keep theirs)"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`text` for people, `json` (one object per line) for log collectors"
    )
    batch_dir: Path = Field(
        Path(tempfile.gettempdir()),
        json_schema_extra={"shown_default": "the temp folder"},
        description="where HTTP batch jobs keep their files (`dlserve-jobs/` under it; "
        "default: the system temp folder)",
    )
    batch_retention_s: int = Field(
        24 * 3600,
        ge=3600,
        description="an HTTP batch job's files are deleted once its last write is older "
        "than this; see Batch jobs",
    )

    batch_max_rows: int = Field(
        1_000_000,
        ge=1,
        description="an HTTP batch job stops with 413 once its file passes this many rows",
    )
    batch_max_output_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="an HTTP batch job stops with 413 once its scores and rejects pass this size",
    )
    batch_max_tokens: int = Field(
        500_000,
        ge=1,
        description="an HTTP batch job of a token model (text) stops with 413 once its rows ask "
        "for more tokens than this (prompt tokens plus `max_tokens`, over every row)",
    )
    batch_max_jobs: int = Field(
        2,
        ge=1,
        description="HTTP batch jobs running at once per worker (they share the worker's "
        "models); the next ones wait, see `DLSERVE_BATCH_MAX_QUEUED`",
    )
    batch_max_queued: int = Field(
        64,
        ge=0,
        description="HTTP batch jobs waiting per worker (each keeps its upload on disk); "
        "beyond, `/submit` answers 429",
    )
    payload_log_dir: Path | None = Field(
        None,
        description="absolute folder of the payload logs (Parquet parts, one subfolder per "
        "worker); unset: no payload log; see Payload logs",
    )
    payload_log_rate: NameList = Field(
        (),
        description="comma list of `model=share` (0 to 1): the share of that model's requests "
        "recorded, chosen by a hash of the request id (a model not listed: none)",
    )
    payload_log_redact: NameList = Field(
        (),
        description="comma list of field names whose values a record never holds (JSON object "
        "keys at any depth, V2 input and output names); with any set, a body that is not JSON "
        "is not recorded",
    )
    payload_log_queue: int = Field(
        1024, ge=1, description="records waiting for the writer per worker; beyond, dropped"
    )
    payload_log_queue_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="bytes of bodies and answers waiting for the writer per worker; beyond, "
        "dropped",
    )
    payload_log_max_record_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="a request whose body or answer is larger is not recorded (dropped)",
    )
    payload_log_part_records: int = Field(
        1000, ge=1, description="records per Parquet part at most (a part is written then)"
    )
    payload_log_flush_s: float = Field(
        5.0, gt=0, description="a part is written at the latest this long after its first record"
    )
    payload_log_max_bytes: int = Field(
        1024**3,
        ge=1024,
        description="the payload log folder's parts, all workers together: the oldest are "
        "deleted beyond this size",
    )
    payload_log_max_age_s: int = Field(
        7 * 24 * 3600, ge=60, description="parts older than this are deleted"
    )
    model_poll_s: float = Field(
        10.0,
        ge=0,
        description="each worker looks for a new latest version of its models this often, "
        "loads it beside the served one and swaps (0: never; `POST /v1/models/{name}/load` "
        "still loads at once); see Rolling a new version",
    )
    pinned_models: NameList = Field(
        (),
        description="comma list of `name:version`: serve exactly that stored version and never "
        "swap it (a rollback: pin the previous version)",
    )
    rollouts: dict[str, dict[str, Any]] = Field(
        {},
        json_schema_extra={"shown_default": "(none)"},
        description="JSON object, model -> rollout (`candidate`, `mode` `canary` or `shadow`, "
        "`percent`, `sample`, bounds) started at start-up, as `POST /v1/models/{name}/rollout` "
        "takes it; see Rolling out a candidate",
    )
    rollout_key_header: str = Field(
        "x-rollout-key",
        pattern=r"^[a-z0-9-]{1,64}$",
        description="lower-case header whose value assigns a request to a canary (else "
        "`x-request-id`, else at random): the same key, the same version",
    )
    rollout_shadow_max_in_flight: int = Field(
        256,
        ge=1,
        le=10_000,
        description="shadowed requests buffered for, or in, a candidate call at once per worker "
        "(their rows are held meanwhile); beyond, a request's shadow is dropped and counted "
        '(`dlserve_rollout_shadow_total{outcome="dropped"}`)',
    )
    precision: NameList = Field(
        (),
        json_schema_extra={"shown_default": f"`{FP32}`"},
        description=f"comma list of a precision ({', '.join(PRECISIONS)}) for every model and/or "
        "`name=precision` for one: a model serves the newest version of that precision whose "
        "gate passed, made from its latest FP32 version (none: not ready, saying why); a pin "
        "wins; see Precision",
    )
    access_log: bool = Field(
        False,
        description="BentoML's access log: one log line per request (its cost: BENCHMARKS.md)",
    )
    tracing: bool = Field(
        False,
        description="BentoML's OpenTelemetry span per request (export and sampling: BentoML's "
        "`tracing` configuration); off: no route is traced (its cost: BENCHMARKS.md)",
    )
    request_metrics: bool = Field(
        True,
        description="off: the areas' routes leave BentoML's access log and its last-request "
        "timestamp; BentoML 1.4 counts them in `bentoml_service_request_*` either way (its "
        "skip list covers the timestamp only), which the alerts and the autoscaler read",
    )
    lean_path: bool = Field(
        True,
        description="the V2 `infer` routes and the fraud, image and completions routes are "
        "answered in front of BentoML's per-request layers, with the same checks, answers and "
        "metrics (ARCHITECTURE.md, The lean HTTP path); off, or with the access log or tracing on, "
        "BentoML answers them",
    )
    lean_areas: NameList = Field(
        ("fraud", "image", "text"),
        description="comma list of the areas whose named routes take the lean path (with "
        "`DLSERVE_LEAN_PATH`; the V2 `infer` routes always do)",
    )

    @field_validator("provider", "log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "models",
        "area_modules",
        "pinned_models",
        "lean_areas",
        "payload_log_rate",
        "payload_log_redact",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return split_names(value) if isinstance(value, str) else value

    @field_validator("precision", mode="before")
    @classmethod
    def _precisions(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        items = split_names(value.lower())
        for item in items:
            precision = item.rpartition("=")[2].strip()
            if precision not in PRECISIONS:
                raise ValueError(
                    f"{item!r}: unknown precision {precision!r}; known: {', '.join(PRECISIONS)}"
                )
        if sum("=" not in item for item in items) > 1:
            raise ValueError("names more than one precision for every model")
        return items

    @field_validator("api_keys", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        keys = split_names(value)
        if not keys:  # set but blank (an empty secret templated in): not "no access control"
            raise ValueError("holds no key; unset it to run without access control")
        if any(len(key) < MIN_API_KEY_CHARS for key in keys):
            raise ValueError(f"every key must have at least {MIN_API_KEY_CHARS} characters")
        return keys

    @field_validator("payload_log_rate")
    @classmethod
    def _shares(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pair in value:
            name, _, share = pair.partition("=")
            try:
                valid = bool(name) and 0 <= float(share) <= 1
            except ValueError:
                valid = False
            if not valid:
                raise ValueError(f"{pair!r} is not model=share with a share from 0 to 1")
        return value

    @field_validator("payload_log_redact")
    @classmethod
    def _field_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not FIELD_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a field name (letters, digits, _ and -)")
        return value

    @field_validator("batch_dir", "api_keys_file", "payload_log_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @model_validator(mode="after")
    def _batch_holds_a_request(self) -> Settings:
        if self.max_batch_tokens < self.max_request_tokens:
            raise ValueError(
                f"DLSERVE_MAX_BATCH_TOKENS ({self.max_batch_tokens}) must be at least "
                f"DLSERVE_MAX_REQUEST_TOKENS ({self.max_request_tokens})"
            )
        return self

    def budget(self, unit: str) -> tuple[int, int]:
        """``(per request, per inference call)`` limits of a model's cost unit: the settings
        ``max_request_<unit>`` and ``max_batch_<unit>`` (``tokens``: ``DLSERVE_MAX_REQUEST_TOKENS``,
        ``DLSERVE_MAX_BATCH_TOKENS``)."""
        return getattr(self, f"max_request_{unit}"), getattr(self, f"max_batch_{unit}")

    def payload_log_share(self, name: str) -> float:
        """The share of model ``name``'s requests the payload log records (0 when off)."""
        if self.payload_log_dir is None:
            return 0.0
        shares = dict(pair.partition("=")[::2] for pair in self.payload_log_rate)
        return float(shares.get(name, 0))

    def pinned_version(self, name: str) -> str | None:
        """The version ``DLSERVE_PINNED_MODELS`` pins model ``name`` to, if any."""
        pins = dict(pin.partition(":")[::2] for pin in self.pinned_models)
        return pins.get(name)

    def precision_for(self, name: str) -> str:
        """The precision ``DLSERVE_PRECISION`` chooses for model ``name`` (default FP32)."""
        chosen = {
            key.strip(): precision.strip()
            for key, _, precision in (item.rpartition("=") for item in self.precision)
        }
        return chosen.get(name, chosen.get("", FP32))

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment; ``SettingsError`` naming the variable on a bad value."""
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None

    def public(self) -> dict[str, Any]:
        """Every setting as ``DLSERVE_X`` -> value, for the start-up log."""
        return {f"{ENV_PREFIX}{name.upper()}": value for name, value in self}


def variable(field: str) -> str:
    """The environment variable of the setting ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def settings_table() -> str:
    """The markdown table of every setting (docs/OPERATIONS.md holds it; a test compares)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        default = extra.get("shown_default")
        if default is None:
            value = field.default
            default = ",".join(value) if isinstance(value, tuple) else str(value)
            default = default.lower() if isinstance(value, bool) else default
            default = f"`{default}`" if default else "(none)"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"


def _explain(exc: ValidationError) -> str:
    """One line per broken rule: the variable, the value given and the rule."""
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        where = f"{ENV_PREFIX}{field.upper()}={error.get('input')!r}: " if field else ""
        lines.append(f"{where}{error['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


if __name__ == "__main__":
    print(settings_table(), end="")
