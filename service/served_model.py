"""One enabled model inside the service: the version it serves, and new versions loaded beside it.

A ``ServedModel`` serves one ``Generation`` at a time: a loaded version with the micro-batcher
(batched model) or step scheduler (stepwise model) that runs it. ``refresh()`` (at start, from
the worker's ``ModelWatcher`` and from ``POST /v1/models/{name}/load``) loads the wanted version
(the store's latest at the precision ``DLSERVE_PRECISION`` chooses, or the version
``DLSERVE_PINNED_MODELS`` names) beside the served one:
metadata, sha256, session, warm-up, the area's contract, companion and rehearsal; then swaps it
in with one assignment. A request keeps the generation it started on until it finishes; a
retired generation's batcher or scheduler, and with it its session, is released when its last
request leaves.

Any failure to load a version, of any kind, is this model's alone: the served version (if any)
keeps serving, and the reason goes to the log, ``/v1/models``' ``last_load`` and
``dlserve_model_loads_total{outcome="failed"}``; that includes a store whose ``latest`` pointer
names a missing folder or is unreadable, and a version whose ``model.yaml`` is empty or garbage.
A version serves only once it has proved it can answer: its metadata fits the area's contract
and a sample request went through the area's request path (``ModelSpec.load``). Polling retries
a failed version after a growing delay (the poll interval, doubled after each failure, at most
``MAX_RETRY_S``): a version caught half-written (a first registration, files copied into a
mounted store) loads once complete; the load route retries at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter, Histogram
from pydantic import BaseModel

from core.model_store import ModelUnavailableError, missing_model_error
from core.precision import precision_of, version_for_precision
from core.training_status import training_state
from service.area import ModelSpec, ReadyModel
from service.batching import Arrays, MicroBatcher
from service.config import Settings, variable
from service.errors import ModelNotReadyError, OverloadedError, RequestInputError
from service.metrics import (
    BATCH_ROWS,
    INFERENCE_SECONDS,
    MODEL_INFO,
    MODEL_LOAD_SECONDS,
    MODEL_LOADS,
    MODEL_PRECISION,
    PREDICTIONS,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
    WORKER_MODEL_VERSION,
    observe_scores,
    score_histogram,
)
from service.stepping import StepScheduler

if TYPE_CHECKING:
    from service.rollout import Rollout

log = logging.getLogger(__name__)

State = Literal["training", "loading", "ready", "unavailable"]
MAX_RETRY_S = 300.0
UNKNOWN_VERSION = "latest"  # a failed attempt's version when the store's pointer is unreadable


class ModelReference(BaseModel):
    """Which model answered: every route's ``model`` field (see ``ServedModel.reference``)."""

    name: str
    version: str


def reference(ready: ReadyModel) -> dict[str, str]:
    """``{"name", "version"}`` of the model that answered, as every response's ``model``."""
    return {"name": ready.name, "version": ready.version}


class Generation:
    """One loaded version and what runs it (``MicroBatcher`` or ``StepScheduler``).

    ``active`` counts the requests holding it; ``retired`` once another version replaced it;
    ``closed`` once its runner (and so its session) was released. ``ServedModel`` changes
    these under its lock.
    """

    def __init__(self, ready: ReadyModel, runner: MicroBatcher | StepScheduler[Any]) -> None:
        self.ready = ready
        self.runner = runner
        self.active = 0
        self.retired = False
        self.closed = False


@dataclass(frozen=True)
class LoadAttempt:
    """The outcome of one attempt to load a version (``/v1/models``'s ``last_load``)."""

    version: str
    outcome: Literal["ok", "failed"]
    reason: str | None
    seconds: float
    at: float

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "outcome": self.outcome,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
        }


# Per request: the generations ``ready_for_request`` handed out, so that the request's
# ``predict``/``stream`` run on the version whose metadata and companion it already used.
_HELD: ContextVar[dict[str, tuple[ServedModel, Generation]] | None] = ContextVar(
    "dlserve_held_generations", default=None
)


@contextmanager
def request_scope() -> Iterator[None]:
    """Around one request's handler: the version ``ready_for_request`` returns is the one the
    request's ``predict``/``stream`` use, even when a swap happens in between; released at the
    end (a stream holds its own until it finishes)."""
    held: dict[str, tuple[ServedModel, Generation]] = {}
    token = _HELD.set(held)
    try:
        yield
    finally:
        _HELD.reset(token)
        for served, generation in held.values():
            served.release(generation)


def _precision_gauge(metadata: dict[str, Any]) -> Any:
    """The ``dlserve_model_precision`` series of a stored version."""
    return MODEL_PRECISION.labels(
        model=metadata["name"], version=metadata["version"], precision=precision_of(metadata)
    )


class ServedModel:
    """Serves ``spec``'s model; never raises on a load, records why one failed.

    The constructor loads the wanted version at once (``refresh``); later versions come from
    further ``refresh`` calls. ``alone()``: whether a request is the only one in the worker,
    the condition for the spec's ``inline_rows`` (``None``: no inline calls).
    ``on_queue_full(name, full)``: told whenever a stepwise model's waiting queue fills or
    frees (the admission gate refuses newcomers with 429 while it is full).
    """

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        in_training: Callable[[str], str | None] = training_state,
        alone: Callable[[], bool] | None = None,
        on_queue_full: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.spec = spec
        self.pinned = settings.pinned_version(spec.name)
        self.precision = settings.precision_for(spec.name)  # a pin wins over it
        self.error: str | None = None  # why no version is served; None while one is
        self.last_load: LoadAttempt | None = None
        self._settings = settings
        self._in_training = in_training
        self._alone = alone
        self._on_queue_full = on_queue_full
        self._current: Generation | None = None
        self.rollout: Rollout | None = None  # a canary or shadow version (service.rollout)
        self._loading: str | None = None
        self._failures = 0  # consecutive failed loads of ``last_load.version``
        self._retry_at = 0.0  # monotonic time before which polling does not retry it
        self._lock = threading.Lock()  # the current generation and every generation's counts
        self._load_lock = threading.Lock()  # one load at a time
        self.refresh()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def max_queue_rows(self) -> int:
        """Rows a version's micro-batcher holds waiting before it refuses more
        (``DLSERVE_MAX_QUEUE_ROWS``): a larger call is refused whole."""
        return self._settings.max_queue_rows

    @property
    def ready(self) -> ReadyModel | None:
        """The version serving new requests, or ``None``."""
        current = self._current
        return current.ready if current is not None else None

    @property
    def state(self) -> State:
        if self._current is not None:
            return "ready"
        if self._loading is not None:
            return "loading"
        return "training" if self._in_training(self.name) else "unavailable"

    @property
    def reason(self) -> str | None:
        """Why the model does not answer (``None`` when it does)."""
        state = self.state
        if state == "ready":
            return None
        if state == "loading":
            return f"version {self._loading} is loading"
        if state == "training":
            phase = self._in_training(self.name)
            return f"not in the store yet: {phase} (python -m training.ensure)"
        return self.error

    # -- loading and swapping ---------------------------------------------------------------

    def refresh(self, force: bool = False) -> LoadAttempt | None:
        """Load the wanted version when it is not the one served, then swap it in.

        Returns the attempt, or ``None`` when there was nothing to load (already served, not
        in the store, or a version that failed before and whose retry delay has not passed,
        unless ``force``). Never raises.
        """
        with self._load_lock:
            pointer_error: ModelUnavailableError | None = None
            try:
                version = self.pinned or version_for_precision(self.name, self.precision)
            except ModelUnavailableError as exc:  # an unreadable or empty ``latest`` pointer
                version, pointer_error = UNKNOWN_VERSION, exc
            if version is None:
                if self._current is None:
                    self.error = str(missing_model_error(self.spec.tag))
                return None
            if self._current is not None and self._current.ready.version == version:
                return None
            last = self.last_load
            failed_before = last is not None and last.version == version
            if failed_before and not force and time.monotonic() < self._retry_at:
                return None
            self._failures = self._failures if failed_before else 0
            if pointer_error is not None:
                return self._failed(version, str(pointer_error), 0.0, pointer_error)
            return self._load(version)

    def _load(self, version: str) -> LoadAttempt:
        self._loading = version
        tag = f"{self.name}:{version}"
        started = time.perf_counter()
        try:
            generation = self.build_generation(version)
        except Exception as exc:
            reason = (
                str(exc)
                if isinstance(exc, ModelUnavailableError)
                else f"model {tag!r} failed to load: {type(exc).__name__}: {exc}"
            )
            return self._failed(version, reason, time.perf_counter() - started, exc)
        finally:
            self._loading = None
        seconds = time.perf_counter() - started
        self._swap(generation)
        MODEL_LOADS.labels(model=self.name, outcome="ok").inc()
        MODEL_LOAD_SECONDS.labels(model=self.name).observe(seconds)
        self.last_load = LoadAttempt(version, "ok", None, seconds, time.time())
        return self.last_load

    def build_generation(self, version: str) -> Generation:
        """Load ``version`` beside the served one (verified, warmed up, contract-checked,
        prepared, rehearsed) with its runner, serving nothing yet; raises on any failure."""
        ready = self.spec.load(self._settings.provider, self._settings.intra_op_threads, version)
        if ready.version != version:
            raise ModelUnavailableError(
                f"model {self.name}:{version!r}: its metadata names version {ready.version!r}"
            )
        return Generation(ready, self._runner(ready))

    def _failed(self, version: str, reason: str, seconds: float, exc: Exception) -> LoadAttempt:
        MODEL_LOADS.labels(model=self.name, outcome="failed").inc()
        MODEL_LOAD_SECONDS.labels(model=self.name).observe(seconds)
        served = self.ready
        if served is None:
            self.error = reason
            log.error("model %s is NOT available: %s", self.name, reason)
        else:
            log.error(
                "model %s: version %s NOT served, %s keeps serving: %s",
                self.name,
                version,
                served.version,
                reason,
            )
        if not isinstance(exc, ModelUnavailableError):  # unforeseen: keep the traceback
            log.debug("load of %s:%s failed", self.name, version, exc_info=exc)
        self._failures += 1
        delay = max(self._settings.model_poll_s, 1.0) * 2 ** (self._failures - 1)
        self._retry_at = time.monotonic() + min(delay, MAX_RETRY_S)
        self.last_load = LoadAttempt(version, "failed", reason, seconds, time.time())
        return self.last_load

    def _runner(self, ready: ReadyModel) -> MicroBatcher | StepScheduler[Any]:
        settings = self._settings
        if self.spec.program is not None:
            return StepScheduler(
                self.spec.program(ready),
                max_active=settings.max_active_sequences,
                max_waiting=settings.max_waiting_sequences,
                on_change=self._record_sequences,
                on_step=self._record_step,
                interval_s=settings.stream_interval_ms / 1000,
            )
        budget = self.spec.budget
        return MicroBatcher(
            ready.model.run,
            max_batch_rows=settings.max_batch_rows,
            max_wait_ms=settings.max_wait_ms,
            max_queue_rows=settings.max_queue_rows,
            on_batch=self._record_batch,
            join=self.spec.join,
            width=budget.width if budget is not None else None,
            max_batch_cost=settings.budget(budget.unit)[1] if budget is not None else None,
            inline_rows=self.spec.inline_rows if self._alone is not None else 0,
            alone=self._alone,
        )

    def swap_in(self, new: Generation) -> None:
        """Serve ``new`` (from ``build_generation``) from now on (a promoted candidate)."""
        self._swap(new)

    def retire(self, generation: Generation) -> None:
        """``generation`` (not the current one) takes no new request; closed after its last."""
        with self._lock:
            close = self._retire(generation)
        if close:
            generation.runner.close()

    def hold(self, generation: Generation) -> None:
        """Count one more user of ``generation`` (a shadow run) until ``release``."""
        with self._lock:
            generation.active += 1

    def _swap(self, new: Generation) -> None:
        """Serve ``new`` from now on; the old generation closes after its last request."""
        with self._lock:
            old, self._current = self._current, new
            self.error = None
            close_old = old is not None and self._retire(old)
        model = new.ready.model
        MODEL_INFO.labels(model=model.name, version=model.version, provider=model.provider).set(1)
        WORKER_MODEL_VERSION.labels(model=model.name, version=model.version).set(1)
        _precision_gauge(model.metadata).set(1)
        if old is None:
            log.info("model %s: serving %s on %s", self.name, model.version, model.provider)
            return
        previous = old.ready.model
        if (previous.version, previous.provider) != (model.version, model.provider):
            MODEL_INFO.labels(
                model=previous.name, version=previous.version, provider=previous.provider
            ).set(0)
        if previous.version != model.version:
            WORKER_MODEL_VERSION.labels(model=previous.name, version=previous.version).set(0)
            _precision_gauge(previous.metadata).set(0)
        log.info(
            "model %s: swapped %s -> %s (%d requests finish on %s)",
            self.name,
            previous.version,
            model.version,
            old.active,
            previous.version,
        )
        if close_old:
            old.runner.close()

    def _retire(self, generation: Generation) -> bool:
        """Mark ``generation`` retired (under the lock); whether to close it now."""
        generation.retired = True
        if generation.active == 0 and not generation.closed:
            generation.closed = True
            return True
        return False

    # -- requests ---------------------------------------------------------------------------

    def acquire(self) -> Generation:
        """The generation a request runs on (the one it already holds, else the current),
        counted until ``release``; ``ModelNotReadyError`` when none is loaded."""
        held = _HELD.get()
        if held is not None and self.name in held:
            generation: Generation | None = held[self.name][1]
        else:
            generation = self._current
            rollout = self.rollout
            if rollout is not None and generation is not None:
                generation = rollout.route(generation)
        if generation is None:
            PREDICTIONS.labels(model=self.name, outcome="unavailable").inc()
            raise ModelNotReadyError(f"model {self.name!r} is not loaded: {self.reason}")
        with self._lock:
            generation.active += 1
        return generation

    def release(self, generation: Generation) -> None:
        """A request is done with ``generation``; closes it when retired and unused."""
        with self._lock:
            generation.active -= 1
            close = generation.retired and self._retire(generation)
        if close:
            generation.runner.close()

    def ready_for_request(self) -> ReadyModel | None:
        """Inside ``request_scope``: the version this request runs on (held until the scope
        ends); elsewhere the current one. ``None`` when none is loaded."""
        held = _HELD.get()
        if held is None:
            return self.ready
        if self.name not in held:
            try:
                held[self.name] = (self, self.acquire())
            except ModelNotReadyError:
                return None
        return held[self.name][1].ready

    def describe(self, routes: list[dict[str, Any]]) -> dict[str, Any]:
        """This model's entry in ``GET /v1/models``: the served version (or the state and why
        nothing is served), the last load attempt, this worker, and its ``routes``; ``route``
        and ``request_schema`` repeat the first one's."""
        first = {"route": routes[0]["route"], "request_schema": routes[0]["request_schema"]}
        listed = {
            **first,
            "routes": routes,
            "kind": "stepwise" if self.spec.stepwise else "batched",
            "pinned": self.pinned,
            "precision_chosen": self.precision,
            "last_load": self.last_load.describe() if self.last_load else None,
            "rollout": self.rollout.describe() if self.rollout is not None else None,
        }
        ready = self.ready
        worker = {"pid": os.getpid(), "version": ready.version if ready else None}
        if ready is None:
            return {
                "name": self.name,
                "status": self.state,
                "reason": self.reason,
                **listed,
                "worker": worker,
            }
        return {**ready.model.describe(), **listed, "worker": worker}

    def _check_budget(self, inputs: Arrays) -> None:
        """``RequestInputError`` (400 at the budget's field) for a request costing more than
        the spec's per-request budget."""
        budget = self.spec.budget
        if budget is None:
            return
        limit = self._settings.budget(budget.unit)[0]
        rows = len(next(iter(inputs.values())))
        cost = rows * budget.width(inputs)
        if cost > limit:
            raise RequestInputError(
                list(budget.loc),
                f"the request costs {cost} {budget.unit} ({budget.counted}); at most "
                f"{limit} {budget.unit} per request ({variable('max_request_' + budget.unit)})",
                f"too_many_{budget.unit}",
            )

    async def predict(self, inputs: Arrays) -> tuple[ReadyModel, Arrays]:
        """Run ``inputs`` through the micro-batcher of the request's version; that version and
        the outputs. Counts the outcome per request (a failure where it becomes a 500);
        ``RequestInputError`` when the request is over the model's budget (a 400)."""
        generation = self.acquire()
        started = time.perf_counter()
        try:
            self._check_budget(inputs)
            assert isinstance(generation.runner, MicroBatcher)
            outputs = await generation.runner.submit(inputs)
        except (OverloadedError, RequestInputError) as exc:
            if isinstance(exc, OverloadedError):
                PREDICTIONS.labels(model=self.name, outcome="overloaded").inc()
            raise
        except Exception:  # becomes a 500, counted as an error by RejectedRequestCounter
            if self.rollout is not None:
                self.rollout.failed(generation)
            raise
        finally:
            self.release(generation)
        self._ok.inc()
        if self.rollout is not None:
            self.rollout.answered(generation, inputs, outputs, time.perf_counter() - started)
        return generation.ready, outputs

    def stream(self, requests: Sequence[Any]) -> tuple[ReadyModel, AsyncIterator[Any]]:
        """Admit a stepwise request's sequences, all or none (``OverloadedError`` when full):
        the request's version and ``(index, output)`` pairs as produced; the version is held
        until the outputs end."""
        generation = self.acquire()
        try:
            assert isinstance(generation.runner, StepScheduler)
            outputs = generation.runner.admit(requests)
        except OverloadedError:
            self.release(generation)
            PREDICTIONS.labels(model=self.name, outcome="overloaded").inc()
            raise
        except Exception:
            self.release(generation)
            raise
        rollout = self.rollout
        if rollout is not None:  # a canary's figures: the request's time, ends or failure
            outputs = rollout.watch(generation, outputs)
        return generation.ready, self._counted(outputs, generation)

    async def _counted(
        self, outputs: AsyncIterator[Any], generation: Generation
    ) -> AsyncIterator[Any]:
        try:
            async for output in outputs:
                yield output
        except Exception:
            PREDICTIONS.labels(model=self.name, outcome="error").inc()
            raise
        finally:
            await outputs.aclose()  # type: ignore[attr-defined]
            self.release(generation)
        PREDICTIONS.labels(model=self.name, outcome="ok").inc()

    # The series a batched model updates on every request or call, looked up once:
    # ``labels()`` costs ~1.7 µs a call, its answer is the same object each time.
    @cached_property
    def _ok(self) -> Counter:
        return PREDICTIONS.labels(model=self.name, outcome="ok")

    @cached_property
    def _inference_seconds(self) -> Histogram:
        return INFERENCE_SECONDS.labels(model=self.name)

    @cached_property
    def _batch_rows(self) -> Histogram:
        return BATCH_ROWS.labels(model=self.name)

    def _record_batch(self, rows: int, seconds: float, outputs: Arrays) -> None:
        self._inference_seconds.observe(seconds)
        self._batch_rows.observe(rows)
        if self.spec.score_output is not None:
            scores = score_histogram(self.name, self.spec.score_buckets)
            observe_scores(scores, outputs[self.spec.score_output])

    def _record_step(self, sequences: int, seconds: float) -> None:
        INFERENCE_SECONDS.labels(model=self.name).observe(seconds)
        BATCH_ROWS.labels(model=self.name).observe(sequences)

    def _record_sequences(self, active: int, waiting: int) -> None:
        REQUESTS_RUNNING.labels(model=self.name).set(active)
        REQUESTS_WAITING.labels(model=self.name).set(waiting)
        if self._on_queue_full is not None:
            self._on_queue_full(self.name, waiting >= self._settings.max_waiting_sequences)
