"""The serving seam: what an area declares, once, in ``service/areas/<area>.py``.

An ``Area`` names the stored models it serves (``ModelSpec``), the HTTP routes that answer for
them (``Endpoint``) and how batch jobs score them (``BatchAdapter``). The service, the settings'
known areas, ``/v1/models``, the metrics' route map and the batch job all read these
declarations through ``service.registry``; nothing else names an area.

A model runs in one of two ways, chosen by its spec:

- **batched** (``program=None``): each request becomes arrays, concurrent requests are joined
  into one ONNX Runtime call per micro-batch (``service.batching``), and the route answers once;
- **stepwise** (``program`` set): each request is a sequence advanced one step at a time; all
  active sequences advance together in one call per step (``service.stepping``) and the route
  streams each step's output as it is produced (server-sent events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
from starlette.responses import JSONResponse

from core.model_store import LoadedModel, ModelUnavailableError, load_model
from service.batching import Arrays, Join, concatenate
from service.metrics import LINEAR_SCORE_BUCKETS
from service.model_contract import ModelMetadata, validate_metadata

if TYPE_CHECKING:
    from service.config import Settings
    from service.stepping import StepProgram

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class ReadyModel:
    """A verified, warmed-up model and what its area built from it at load (``companion``: a
    tokenizer, a decoder, ...; ``None`` when the area needs nothing). ``contract``: its
    metadata validated by the spec's contract (``service.model_contract``), what routes read."""

    model: LoadedModel
    companion: Any = None
    contract: Any = None

    @property
    def metadata(self) -> dict[str, Any]:
        return self.model.metadata

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version


@dataclass(frozen=True)
class TensorInputs:
    """A tensor model: clients may send its graph inputs as they are, over the Open Inference
    Protocol (``/v2``, ``service.open_inference``), with the bounds its named routes keep.

    ``max_rows``: most rows (axis 0) in one request, as the named route's limit.
    ``check(inputs, ready)``: refuses values that the datatype and shape allow but the graph
    or the named route does not (ranges, category or token ids), raising
    ``RequestInputError`` at ``[input name]``; ``None`` when every value is valid (pixels).
    """

    max_rows: int
    check: Callable[[Arrays, ReadyModel], None] | None = None


@dataclass(frozen=True)
class Budget:
    """A bound on the work one request and one inference call may cost a batched model.

    A call's cost is its rows times the widest joined request's ``width(inputs)`` (per-row
    cost: e.g. a token sequence's padded length, as ``concatenate_padded`` joins them); a
    request's is its rows times its own width. ``unit`` names the cost and its two settings,
    ``max_request_<unit>`` and ``max_batch_<unit>`` (see ``Settings.budget``). A request over
    its limit is refused with a 400 at ``loc`` (the field that carries the cost), whose
    message says how the cost is ``counted``.
    """

    unit: str
    width: Callable[[Arrays], int]
    loc: tuple[str, ...]
    counted: str


@dataclass(frozen=True)
class ClassOutput:
    """A batched model that answers one class per row (rollouts count and compare them).

    ``of(outputs)``: each row's class index into ``labels(ready)`` (int, one per row of the
    graph's outputs), the class the model's routes answer; ``labels(ready)``: the class names
    of a version, by index.
    """

    of: Callable[[Arrays], np.ndarray]
    labels: Callable[[ReadyModel], Sequence[str]]


@dataclass(frozen=True)
class SequenceEnd:
    """How a stepwise model's output says that its sequence ended (rollouts' figures).

    ``of(output)``: for one output of the ``StepProgram``, ``(finish reason, generated
    tokens)`` when it is its sequence's last, else ``None``.
    """

    of: Callable[[Any], tuple[str, int] | None]


@dataclass(frozen=True)
class ModelSpec:
    """One stored model an area serves.

    ``name``: its model-store name (the latest version is served). ``contract``: the pydantic
    schema of every metadata key the area reads while answering, with the checks that the
    stored model fits its routes (``service.model_contract``); a version that breaks it is
    refused at load. ``prepare(model)``: builds the ``companion`` the routes use (may raise
    ``ModelUnavailableError``). ``rehearse(ready)``: one sample request through the area's
    own request path (its encoding, the graph, its answer, rendered as a response would be),
    run at load before the version serves; any exception refuses the version.
    ``score_output``: the output whose values feed the ``dlserve_score`` histogram (a drift
    signal), ``None`` for none; ``score_buckets``: that histogram's upper bounds, fitted to where
    the model's scores fall (+Inf is added). ``join``: how the micro-batcher stacks concurrent
    requests.
    ``program(ready)``: for a stepwise model, the ``StepProgram`` that advances its sequences.
    ``tensors``: set for a tensor model (a batched one whose graph inputs a client can send),
    which the Open Inference Protocol's ``/v2`` routes then serve.
    ``budget``: a batched model's bound on the cost of a request and of an inference call
    (``None``: rows only, ``DLSERVE_MAX_BATCH_ROWS``). ``inline_rows``: a request of at most
    that many rows, alone in its worker, runs on the event loop without the hop to the
    inference thread (``MicroBatcher``; for a model whose small calls cost less than it).
    ``class_output``: for a batched model whose answer is a class per row, how to read it
    (rollouts' class frequencies and shadow agreement); ``sequence_end``: for a stepwise
    model, how its outputs end a sequence (rollouts' completion lengths and finish reasons).
    """

    name: str
    contract: type[ModelMetadata] = ModelMetadata
    prepare: Callable[[LoadedModel], Any] | None = None
    rehearse: Callable[[ReadyModel], object] | None = None
    score_output: str | None = None
    score_buckets: tuple[float, ...] = LINEAR_SCORE_BUCKETS
    join: Join = concatenate
    program: Callable[[ReadyModel], StepProgram] | None = None
    tensors: TensorInputs | None = None
    budget: Budget | None = None
    inline_rows: int = 0
    class_output: ClassOutput | None = None
    sequence_end: SequenceEnd | None = None

    def __post_init__(self) -> None:
        if self.tensors is not None and self.program is not None:
            raise ValueError(f"model {self.name!r}: a stepwise model takes no client tensors")
        if self.class_output is not None and self.program is not None:
            raise ValueError(f"model {self.name!r}: a stepwise model has no class output")
        if self.sequence_end is not None and self.program is None:
            raise ValueError(f"model {self.name!r}: only a stepwise model ends sequences")

    @property
    def tag(self) -> str:
        return f"{self.name}:latest"

    @property
    def stepwise(self) -> bool:
        return self.program is not None

    def load(self, provider: str, intra_op_threads: int, version: str = "latest") -> ReadyModel:
        """Load, verify and warm up ``version``, validate its metadata against the contract,
        prepare its companion and rehearse a request; ``ModelUnavailableError`` with the
        reason."""
        tag = f"{self.name}:{version}"
        model = load_model(tag, provider, intra_op_threads)
        contract = validate_metadata(self.contract, model.metadata, tag)
        companion = self.prepare(model) if self.prepare is not None else None
        ready = ReadyModel(model, companion, contract)
        if self.rehearse is not None:
            try:
                self.rehearse(ready)
            except ModelUnavailableError:
                raise
            except Exception as exc:
                raise ModelUnavailableError(
                    f"model {tag!r}: a sample request failed on its routes "
                    f"({type(exc).__name__}: {exc}); it is not served"
                ) from exc
        return ready


class ServedModels(Protocol):
    """What a route handler may ask of the service (its first argument: the worker's data
    plane, ``service.inference.DataPlane``); ``settings``: the service's settings (request
    budgets, ...)."""

    settings: Settings

    def ready(self, name: str) -> ReadyModel | None:
        """The ready model ``name``, or ``None`` when it is disabled or unavailable. Within one
        request, ``predict``/``stream`` then run on this same version, even if a new one is
        swapped in meanwhile (its metadata and companion stay valid for the request)."""

    async def predict(self, name: str, inputs: Arrays) -> tuple[ReadyModel, Arrays]:
        """Batched inference; ``ModelNotFoundError`` (404, disabled), ``ModelNotReadyError``
        or ``OverloadedError`` (503) from ``service.errors``."""

    async def stream(
        self, name: str, requests: Sequence[Any]
    ) -> tuple[ReadyModel, AsyncIterator[tuple[int, Any]]]:
        """Admit a stepwise request's sequences (one per item of ``requests``), all or none;
        their outputs as produced, as ``(index in requests, output)``. Errors as ``predict``,
        but a full queue is ``QueueFullError`` (429); leaving the iteration early frees the
        request's places at the next step."""


@dataclass(frozen=True)
class Endpoint:
    """One HTTP route.

    ``handler`` is an ``async def`` whose first parameter receives the ``ServedModels`` and
    whose other parameters are the request's fields, typed with pydantic limits (they become
    the route's schema, its 400s and its OpenAPI entry, as for any ``@bentoml.api``); a
    parameter named ``ctx`` gets the ``bentoml.Context``. It returns a response, or an async
    iterator of JSON-ready events to stream as server-sent events. It may raise ``ErrorAnswer``
    (a ready-made answer) or any ``InferenceError`` (``RequestInputError``, ...). ``models``:
    the model-store names the route answers with (each lists the route in ``/v1/models``);
    ``counted_as(models, body)``: for a route answering with several models, the ``model``
    label of a request the route's code did not count (a 4xx, a 500), from the data plane and
    the request's JSON object (``None`` when the body is not
    one); default: the route's first model. ``errors(status, body)``: for a route that
    speaks another protocol, turns dlserve's error body (``{"error", "detail"}``) into that
    protocol's, for every error the route answers (BentoML's validation errors included);
    ``error_schema``: the JSON schema of the bodies it makes (the route's OpenAPI errors).
    ``query``: OpenAPI parameter objects of the query parameters the handler reads itself from
    ``ctx`` (BentoML documents the body only).
    """

    route: str
    handler: Callable[..., Any]
    models: tuple[str, ...]
    counted_as: Callable[[ServedModels, dict[str, Any] | None], str] | None = None
    errors: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
    error_schema: dict[str, Any] | None = None
    query: tuple[dict[str, Any], ...] = ()

    @property
    def api_name(self) -> str:
        """The route as a Python identifier (BentoML's method name)."""
        return self.route.strip("/").replace("/", "_").replace("-", "_")

    @property
    def metric_model(self) -> str:
        """The ``model`` label of an answer decided before the body is read (admission)."""
        return self.models[0]


def rehearse_batched(
    ready: ReadyModel, inputs: Arrays, answer: Callable[[ReadyModel, Arrays], Any]
) -> None:
    """A batched route's rehearsal: ``inputs`` (made by the route's own encoding) through the
    graph, the route's ``answer`` built from the outputs and rendered as its response is
    (strict JSON: a NaN or infinity fails)."""
    JSONResponse(answer(ready, ready.model.run(inputs)))


def run_graph(ready: ReadyModel, inputs: Arrays) -> Arrays:
    """A batch chunk's inference: one ONNX Runtime call (the default ``BatchAdapter.infer``),
    keeping the CPU arena for the next chunk (``LoadedModel.run``)."""
    return ready.model.run(inputs, release_arena=False)


@dataclass(frozen=True)
class BatchAdapter:
    """How a batch job scores one model from table chunks (``python -m service.batch``).

    ``validate(table, ready) -> (columns, reasons)``: numpy input columns for every row and, per
    row, ``None`` or why the row is rejected (the route's limits). ``encode(columns, ready)``: the
    valid rows' columns -> ``(graph inputs, fields)``, where ``fields`` are output fields known
    before inference (e.g. a text's ``truncated`` flag); the route uses the same encoding.
    ``infer(ready, inputs)``: the chunk's outputs (default: one ONNX Runtime call).
    ``to_columns(outputs, ready)``: outputs -> the output fields, one array each.
    ``input_columns``: the columns to read; ``categorical_columns``: those holding a few
    distinct strings, read dictionary-encoded from Parquet. ``batch_size``: rows per chunk
    when the job does not say, sized to the model's memory per row. ``csv_output``: whether
    the output fields fit a CSV file (``False`` for a vector column; such a job writes Parquet).
    ``tokens(inputs)``: for a model whose cost grows with tokens, what a chunk's valid rows ask
    for (their inputs as ``encode`` made them); HTTP jobs stop past ``DLSERVE_BATCH_MAX_TOKENS``.
    """

    model: str
    input_columns: tuple[str, ...]
    validate: Callable[[pa.Table, ReadyModel], tuple[Columns, np.ndarray]]
    encode: Callable[[Mapping[str, np.ndarray], ReadyModel], tuple[Arrays, Columns]]
    to_columns: Callable[[Arrays, ReadyModel], Columns]
    infer: Callable[[ReadyModel, Arrays], Arrays] = run_graph
    categorical_columns: tuple[str, ...] = ()
    batch_size: int = 8192
    csv_output: bool = True
    tokens: Callable[[Arrays], int] | None = None


@dataclass(frozen=True)
class Area:
    """An application area's serving contract: ``name`` enables it (``DLSERVE_MODELS``).

    ``batch``: one adapter per model that batch jobs can score; the first one is what
    ``--model <area>`` means.
    """

    name: str
    models: tuple[ModelSpec, ...]
    endpoints: tuple[Endpoint, ...]
    batch: tuple[BatchAdapter, ...] = ()
    description: str = ""
    spec_by_name: dict[str, ModelSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec_by_name", {spec.name: spec for spec in self.models})
        for endpoint in self.endpoints:
            unknown = set(endpoint.models) - set(self.spec_by_name)
            if unknown:
                raise ValueError(f"area {self.name!r}: {endpoint.route} names {sorted(unknown)}")
        for adapter in self.batch:
            if adapter.model not in self.spec_by_name:
                raise ValueError(f"area {self.name!r}: batch adapter for {adapter.model!r}")
