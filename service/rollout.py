"""Canary and shadow rollouts: a candidate version of a model served beside its served version.

A ``Rollout`` belongs to one ``ServedModel`` (``ServedModel.rollout``) in one worker. It loads
the candidate through the model's own machinery (``ServedModel.build_generation``: sha256,
contract, warm-up, rehearsal); until that succeeded the candidate gets no traffic. Then:

- **canary**: ``route`` sends a request to the candidate when a stable hash of its key
  (``DLSERVE_ROLLOUT_KEY_HEADER``, else ``x-request-id``, else a random one) falls under
  ``percent``: a client that retries with the same key sees the same version, on every worker.
  For a stepwise model the whole request (a stream or a completion) runs on that version.
- **shadow** (batched models only): after the served version has answered, a sampled share
  (``sample``) of requests is buffered with the served answer (``service.shadow``) and run
  again on the candidate, many requests joined into one call (``SHADOW_FLUSH_ROWS`` rows, at
  most ``DLSERVE_MAX_QUEUE_ROWS``, or ``SHADOW_FLUSH_MS`` after the first), whose answers are
  only compared row by row: the same class for a model with a ``ClassOutput``, else scores
  within ``agree_within``; at most ``DLSERVE_ROLLOUT_SHADOW_MAX_IN_FLIGHT`` shadowed requests
  buffered or in the call per worker, the others dropped and counted, as are calls the
  candidate's queue refuses. A stepwise model's shadow is refused (``refusal_of``): a second
  generation would share the cores and step loop of the client's stream and slow it.

Per version it keeps requests, errors, a latency histogram (seconds in ``predict``: queue and
model; for a stepwise request, from admission to its last output) and the model's output
distributions: the score output over the model's fixed score buckets, the class frequencies
(over the served version's labels), and for a stepwise model the completion lengths and
finish reasons (``service.rollout_stepwise``); in Prometheus too, the served version's answers
written ``SERVED_WRITES_EVERY`` at a time. Once the candidate has ``min_requests`` answers (and
the served version as many), each new answer checks the bounds: an error ratio above
``max_error_ratio``, a population stability index (PSI, proportions floored at 1e-4) between
any of the candidate's distributions and the served version's above ``max_psi`` (checked once
``PSI_EVERY`` more answers came, and before a promotion), or (shadow) row agreement below
``min_agreement`` rolls it back; ``promote_after`` candidate answers within bounds promote it
(the candidate becomes the served version). While a rollout is running or after it ended, the
model is held at the version it serves (``ServedModel.pinned``): the store's ``latest`` pointer
moves nothing; ``cancel`` gives the hold back to ``DLSERVE_PINNED_MODELS``.

Each transition is logged, counted (``dlserve_rollout_transitions_total``) and listed by
``describe`` (``/v1/models``' ``rollout``). ``service.rollout_fleet`` declares each start and
ending to the server's other workers (``generation``, ``claim``), which apply it. Which
version answered a request and which candidate ran as its shadow:
``service.routing.current_routing()``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from bisect import bisect_left
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.batching import Arrays, MicroBatcher
from service.config import Settings, SettingsError, variable
from service.errors import OverloadedError
from service.metrics import observe_scores
from service.rollout_stepwise import Ends, SequenceFigures, watched
from service.routing import current_routing, note_shadow
from service.served_model import Generation, ServedModel
from service.shadow import Flush, ShadowBatcher, compare

log = logging.getLogger(__name__)

Mode = Literal["canary", "shadow"]
State = Literal["loading", "canary", "shadow", "promoted", "rolled_back", "canceled", "failed"]
RUNNING = frozenset({"loading", "canary", "shadow"})
SHADOW_OUTCOMES = ("compared", "dropped", "error", "agreeing_rows", "disagreeing_rows", "calls")
PSI_FLOOR = 1e-4
PSI_EVERY = 10  # candidate answers between two PSI checks (~30 us each)
SHADOW_FLUSH_ROWS = 64  # shadowed rows joined into one candidate call
SHADOW_FLUSH_MS = 20.0  # or this long after a row entered an empty shadow buffer
SERVED_WRITES_EVERY = 64  # served answers between two writes of their Prometheus series
FEW_SCORES = 16
OTHER_CLASS = "(a class the served version does not have)"
LATENCY_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
KEPT_TRANSITIONS = 20

ROLLOUT_REQUESTS = Counter(
    "dlserve_rollout_requests_total",
    "Requests answered during a rollout, by model, version, role (served, canary: the "
    "candidate answered, shadow: the candidate ran beside) and outcome (ok, error).",
    ["model", "version", "role", "outcome"],
)
ROLLOUT_SECONDS = Histogram(
    "dlserve_rollout_request_seconds",
    "Seconds a request spent in its version's batcher and model during a rollout, by model, "
    "version and role.",
    ["model", "version", "role"],
    buckets=LATENCY_BUCKETS,
)
ROLLOUT_SHADOW = Counter(
    "dlserve_rollout_shadow_total",
    "Shadowed requests by model and outcome: compared, dropped (too many in flight, or the "
    "candidate's queue full), error; rows agreeing or disagreeing with the served answer; and "
    "calls (candidate calls the shadowed requests were joined into).",
    ["model", "outcome"],
)
ROLLOUT_TRANSITIONS = Counter(
    "dlserve_rollout_transitions_total",
    "Rollout transitions by model and the state entered: loading, canary, shadow, promoted, "
    "rolled_back, canceled, failed.",
    ["model", "state"],
)
ROLLOUT_PSI = Gauge(
    "dlserve_rollout_psi",
    "The largest population stability index of the candidate's output distributions (scores, "
    "classes, completion lengths, finish reasons) against the served version's, by model (the "
    "automatic rollback's statistic; per worker, the largest shown).",
    ["model"],
    multiprocess_mode="max",
)
ROLLOUT_ACTIVE = Gauge(
    "dlserve_rollout_active",
    "1 while a rollout of the candidate runs (loading, canary or shadow), by model, candidate "
    "and mode; 0 once it ended.",
    ["model", "candidate", "mode"],
    multiprocess_mode="max",
)


class RolloutSpec(BaseModel):
    """A rollout as declared (``DLSERVE_ROLLOUTS``) or posted (``POST .../rollout``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    candidate: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the stored version to roll out",
    )
    mode: Mode
    percent: float = Field(10.0, gt=0, le=100, description="canary: share of requests, in %")
    sample: float = Field(1.0, gt=0, le=1, description="shadow: share of requests also run")
    min_requests: int = Field(
        200, ge=10, le=1_000_000, description="candidate answers before any verdict"
    )
    max_error_ratio: float = Field(0.05, ge=0, le=1)
    max_psi: float = Field(0.25, gt=0, le=100)
    min_agreement: float | None = Field(None, ge=0, le=1, description="shadow: rows agreeing")
    agree_within: float = Field(0.05, ge=0, le=1, description="shadow: score difference")
    promote_after: int | None = Field(
        2000, ge=10, le=100_000_000, description="candidate answers; null: only by a call"
    )

    @field_validator("promote_after")
    @classmethod
    def _after_the_verdict(cls, value: int | None, info: Any) -> int | None:
        least = info.data.get("min_requests")
        if value is not None and least is not None and value < least:
            raise ValueError(f"must be at least min_requests ({least})")
        return value


Claim = Callable[["Rollout", State, str], bool]
"""May this worker end ``rollout`` in ``state`` for ``reason``? (``service.rollout_fleet``:
declared to every worker of the server; ``False``: another worker ended it first.)"""


class CandidateError(Exception):
    """The candidate could not be loaded (the reason); the rollout is ``failed``."""


def stable_share(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts`` (blake2b), the same in every process."""
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def psi(reference: np.ndarray, observed: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins: sum over bins of
    (q - p) ln(q / p), each proportion floored at ``PSI_FLOOR``."""
    p = np.maximum(reference / max(reference.sum(), 1), PSI_FLOOR)
    q = np.maximum(observed / max(observed.sum(), 1), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


class VersionFigures:
    """One version's figures during a rollout (updated on the event loop): requests, errors,
    latency, and the output distributions the model has: ``scores`` over the score buckets,
    ``classes`` over the served version's class labels (and a last bin for a label it does
    not have), ``sequences`` (stepwise: completion lengths and finish reasons)."""

    def __init__(
        self,
        score_bounds: np.ndarray | None,
        labels: list[str] | None = None,
        stepwise: bool = False,
    ) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
        self.score_bounds = score_bounds
        self._bounds = score_bounds.tolist() if score_bounds is not None else []
        self.scores = np.zeros(len(self._bounds) + 1, dtype=np.int64)
        self.labels = labels
        self.classes = np.zeros(len(labels) + 1 if labels is not None else 0, dtype=np.int64)
        self.sequences = SequenceFigures() if stepwise else None

    def answered(
        self, seconds: float, scores: np.ndarray | None, classes: np.ndarray | None = None
    ) -> None:
        """A batched answer: its scores and its rows' class bins (``None``: none)."""
        self._took(seconds)
        self._count_outputs(scores, classes)

    def answered_many(
        self, seconds: np.ndarray, scores: np.ndarray | None, classes: np.ndarray | None = None
    ) -> None:
        """``seconds.size`` answers at once (a shadow flush): their seconds, every score and
        every row's class bin."""
        self.requests += seconds.size
        self.latency += np.bincount(
            np.searchsorted(LATENCY_BUCKETS, seconds), minlength=len(self.latency)
        )
        self._count_outputs(scores, classes)

    def _count_outputs(self, scores: np.ndarray | None, classes: np.ndarray | None) -> None:
        if classes is not None:
            _add(self.classes, classes)
        if scores is None:
            return
        values = scores.ravel()
        if values.size > FEW_SCORES:
            self.scores += np.bincount(
                np.searchsorted(self.score_bounds, values), minlength=len(self.scores)
            )
            return
        for value in values.tolist():  # numpy's fixed cost is more than a few bisects
            self.scores[bisect_left(self._bounds, value)] += 1

    def completed(self, seconds: float, ends: Ends) -> None:
        """A stepwise request whose sequences all ended, each ``(finish reason, tokens)``."""
        self._took(seconds)
        if self.sequences is not None:
            self.sequences.ended(ends)

    def _took(self, seconds: float) -> None:
        self.requests += 1
        self.latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def failed(self, count: int = 1) -> None:
        self.requests += count
        self.errors += count

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def paired(self, reference: VersionFigures) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``reference``'s and these counts over the same bins, per output distribution."""
        pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.score_bounds is not None:
            pairs["scores"] = (reference.scores, self.scores)
        if self.labels is not None:
            pairs["classes"] = (reference.classes, self.classes)
        if self.sequences is not None and reference.sequences is not None:
            pairs.update(self.sequences.paired(reference.sequences))
        return pairs

    def describe(self) -> dict[str, Any]:
        bounds = [*LATENCY_BUCKETS, "+Inf"]
        described: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_ratio": round(self.error_ratio, 4),
            "latency_seconds": dict(zip(map(str, bounds), self.latency.tolist(), strict=True)),
        }
        if self.score_bounds is not None:
            scores = [*self._bounds, "+Inf"]
            described["scores"] = dict(zip(map(str, scores), self.scores.tolist(), strict=True))
        if self.labels is not None:
            counts = self.classes.tolist()
            described["classes"] = dict(zip(self.labels, counts, strict=False))
            if counts[-1]:
                described["classes"][OTHER_CLASS] = counts[-1]
        if self.sequences is not None:
            described.update(self.sequences.describe())
        return described


def _add(counts: np.ndarray, bins: np.ndarray) -> None:
    """Count each of ``bins`` (indices into ``counts``)."""
    if bins.size > FEW_SCORES:
        counts += np.bincount(bins.ravel(), minlength=len(counts))
        return
    for index in bins.ravel().tolist():  # numpy's fixed cost is more than a few increments
        counts[index] += 1


@dataclass
class ShadowFigures:
    """Shadowed requests: compared, dropped, failed; rows agreeing with the served answer
    (``by``: ``class``, the same class; ``score``, scores within ``agree_within``); and the
    candidate calls they were joined into."""

    compared: int = 0
    dropped: int = 0
    errors: int = 0
    rows: int = 0
    agreeing_rows: int = 0
    abs_difference: float = 0.0
    calls: int = 0
    by: Literal["class", "score"] = "score"

    @property
    def agreement(self) -> float | None:
        return self.agreeing_rows / self.rows if self.rows else None

    def describe(self, in_flight: int) -> dict[str, Any]:
        """The figures, and ``in_flight`` shadowed requests not compared yet."""
        agreement = self.agreement
        return {
            "compared": self.compared,
            "dropped": self.dropped,
            "errors": self.errors,
            "rows": self.rows,
            "agreement": None if agreement is None else round(agreement, 4),
            "agreement_by": self.by,
            "mean_abs_difference": (
                round(self.abs_difference / self.rows, 6)
                if self.rows and self.by == "score"
                else None
            ),
            "calls": self.calls,
            "in_flight": in_flight,
        }


class Rollout:
    """The rollout of ``spec.candidate`` beside ``served``'s version (see the module
    docstring). Built in state ``loading``; ``load()`` (blocking, off the event loop) brings
    the candidate in; the other methods run on the event loop. ``generation``: the server's
    declaration it runs under (``service.rollout_fleet``; 0: ``DLSERVE_ROLLOUTS``); ``claim``
    asks before each ending (promote, rollback, cancel) whether this worker may end it (none:
    it may)."""

    def __init__(
        self,
        served: ServedModel,
        spec: RolloutSpec,
        max_shadows: int,
        generation: int = 0,
        claim: Claim | None = None,
    ) -> None:
        ready = served.ready
        assert ready is not None, "a rollout needs a served version"
        self.served = served
        self.spec = spec
        self.baseline = ready.version
        self.state: State = "loading"
        self.reason: str | None = None
        self.candidate: Generation | None = None
        self.psi: float | None = None  # the largest of ``drift``
        self.drift: dict[str, float] = {}  # PSI per output distribution, at the last check
        self.generation = generation
        self.claim = claim
        self.transitions: deque[dict[str, Any]] = deque(maxlen=KEPT_TRANSITIONS)
        model = served.spec
        bounds = (
            np.asarray(model.score_buckets, dtype=np.float64)
            if model.score_output is not None
            else None
        )
        self._classes = model.class_output
        labels = list(self._classes.labels(ready)) if self._classes is not None else None
        self.figures = {
            role: VersionFigures(bounds, labels, model.stepwise) for role in ("served", "candidate")
        }
        # the candidate's class index -> the served version's (the last bin: a label it lacks)
        self._class_map: np.ndarray | None = None
        self.shadow = ShadowFigures(by="class" if self._classes is not None else "score")
        self._pin_before = served.pinned
        self._shadows = ShadowBatcher(
            self._run_shadow,
            self._shadow_flushed,
            capacity=max_shadows,
            flush_rows=min(SHADOW_FLUSH_ROWS, served.max_queue_rows),  # else refused whole
            flush_seconds=SHADOW_FLUSH_MS / 1000,
            join=served.spec.join,
        )
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        name = served.name
        self._shadow_series = {o: ROLLOUT_SHADOW.labels(name, o) for o in SHADOW_OUTCOMES}
        self._score = served.spec.score_output
        self._next_psi = 0  # candidate answers at the next PSI check
        self._unwritten: list[float] = []  # served answers' seconds, not in Prometheus yet
        self._unwritten_on: Generation | None = None
        self._share = spec.percent / 100
        self._enter("loading", f"candidate {spec.candidate} beside {self.baseline}")
        served.pinned = self.baseline  # polling and the load route keep the served version

    # -- lifecycle --------------------------------------------------------------------------

    def load(self) -> None:
        """Load the candidate beside the served version; ``CandidateError`` (state
        ``failed``) when it cannot serve."""
        try:
            generation = self.served.build_generation(self.spec.candidate)
        except Exception as exc:
            self._end("failed", f"candidate {self.spec.candidate}: {exc}")
            raise CandidateError(str(exc)) from exc
        if self.state != "loading":  # canceled meanwhile
            generation.runner.close()
            return
        self.candidate = generation
        labels = self.figures["served"].labels
        if self._classes is not None and labels is not None:
            index = {label: i for i, label in enumerate(labels)}
            self._class_map = np.array(
                [index.get(label, len(labels)) for label in self._classes.labels(generation.ready)],
                dtype=np.int64,
            )
        ROLLOUT_ACTIVE.labels(self.served.name, self.spec.candidate, self.spec.mode).set(1)
        share = (
            f"{self.spec.percent:g}% of requests"
            if self.spec.mode == "canary"
            else (f"{self.spec.sample:g} of requests shadowed")
        )
        self._enter(self.spec.mode, f"candidate {self.spec.candidate} ready: {share}")

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    def promote(self, reason: str) -> None:
        """Serve the candidate from now on (held there); the rollout ends ``promoted``
        (unless ``claim`` refuses: then nothing changes)."""
        candidate = self.candidate
        if candidate is None or self.state not in ("canary", "shadow"):
            raise RuntimeError(f"nothing to promote: the rollout is {self.state}")
        if not self._claimed("promoted", reason):
            return
        self.served.pinned = self.spec.candidate
        self._shadows.close()
        self.candidate = None
        self.served.swap_in(candidate)
        self._end("promoted", reason)

    def rollback(self, reason: str) -> None:
        """Stop sending anything to the candidate; the served version keeps serving, held
        (unless ``claim`` refuses: then nothing changes)."""
        if not self._claimed("rolled_back", reason):
            return
        self._drop_candidate()
        self._end("rolled_back", reason)

    def cancel(self, reason: str = "canceled by a call") -> None:
        """End the rollout without a verdict; the hold goes back to the settings' pin
        (unless ``claim`` refuses: then nothing changes)."""
        if not self._claimed("canceled", reason):
            return
        self._drop_candidate()
        self.served.pinned = self._pin_before
        self._end("canceled", reason)

    def _claimed(self, state: State, reason: str) -> bool:
        return self.claim is None or self.claim(self, state, reason)

    def _drop_candidate(self) -> None:
        self._shadows.close()
        candidate, self.candidate = self.candidate, None
        if candidate is not None:
            self.served.retire(candidate)

    def _enter(self, state: State, reason: str) -> None:
        previous = self.transitions[-1]["state"] if self.transitions else None
        self.state, self.reason = state, reason
        self.transitions.append(
            {"state": state, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ"), "reason": reason}
        )
        ROLLOUT_TRANSITIONS.labels(model=self.served.name, state=state).inc()
        log.info("model %s rollout: %s -> %s: %s", self.served.name, previous, state, reason)

    def _end(self, state: State, reason: str) -> None:
        self._write_served()
        ROLLOUT_ACTIVE.labels(self.served.name, self.spec.candidate, self.spec.mode).set(0)
        self._enter(state, reason)

    # -- requests ---------------------------------------------------------------------------

    def route(self, current: Generation) -> Generation:
        """The generation a new request runs on: the candidate for a canary's share of keys
        (a random share without a key), else ``current``."""
        candidate = self.candidate
        if candidate is None or self.state != "canary":
            return current
        routing = current_routing()
        key = routing.key if routing is not None else None
        if key is None:
            share = random.random()
        else:
            share = stable_share(self.served.name, self.spec.candidate, key)
        return candidate if share < self._share else current

    def answered(self, generation: Generation, inputs: Arrays, outputs: Arrays, s: float) -> None:
        """A request answered on ``generation`` after ``s`` seconds: count it, check the
        bounds, and (shadow) maybe run it on the candidate too."""
        if not self.running:
            return
        scores = outputs[self._score] if self._score is not None else None
        if generation is self.candidate:
            self._count(generation, "canary", "ok", s)
            self.figures["candidate"].answered(s, scores, self._class_bins(outputs, True))
            self._judge()
            return
        classes = self._class_bins(outputs, False)
        self._served_ok(generation, s)
        self.figures["served"].answered(s, scores, classes)
        if self.state == "shadow" and random.random() < self.spec.sample:
            if self._shadows.offer(inputs, classes if classes is not None else scores):
                note_shadow(self.served.name, self.spec.candidate)
            else:
                self._shadow_dropped(1)

    def _class_bins(self, outputs: Arrays, candidate: bool) -> np.ndarray | None:
        """Each row's class as a bin of the served version's labels (``None``: no classes)."""
        if self._classes is None:
            return None
        classes = self._classes.of(outputs)
        if candidate and self._class_map is not None:
            return self._class_map[classes]
        return classes

    def watch(
        self, generation: Generation, outputs: AsyncIterator[tuple[int, Any]]
    ) -> AsyncIterator[tuple[int, Any]]:
        """A stepwise request's outputs on ``generation``, passed through and counted once
        it completed (``service.rollout_stepwise.watched``)."""
        sequence_end = self.served.spec.sequence_end
        if not self.running or sequence_end is None:
            return outputs
        return watched(
            outputs,
            sequence_end,
            lambda ends, seconds: self.completed(generation, ends, seconds),
            lambda: self.failed(generation),
            time.perf_counter,
        )

    def completed(self, generation: Generation, ends: Ends, seconds: float) -> None:
        """A stepwise request on ``generation`` completed after ``seconds``, its sequences
        ending as ``ends``: count it and (candidate) check the bounds."""
        if not self.running:
            return
        candidate = generation is self.candidate
        self._count(generation, "canary" if candidate else "served", "ok", seconds)
        self.figures["candidate" if candidate else "served"].completed(seconds, ends)
        if candidate:
            self._judge()

    def failed(self, generation: Generation) -> None:
        """A request failed on ``generation`` (a 500): count it and check the bounds."""
        if not self.running:
            return
        role = "candidate" if generation is self.candidate else "served"
        self._count(generation, "canary" if role == "candidate" else "served", "error", 0.0)
        self.figures[role].failed()
        if role == "candidate":
            self._judge()

    def _count(
        self, generation: Generation, role: str, outcome: str, seconds: float, requests: int = 1
    ) -> None:
        series = self._series_of(generation, role, outcome)
        series[0].inc(requests)
        if outcome == "ok":
            series[1].observe(seconds)

    def _served_ok(self, generation: Generation, seconds: float) -> None:
        """A served answer, written to Prometheus with the next ``SERVED_WRITES_EVERY`` (two
        multiprocess-file writes a request are most of the served path's bookkeeping)."""
        if generation is not self._unwritten_on:
            self._write_served()
            self._unwritten_on = generation
        self._unwritten.append(seconds)
        if len(self._unwritten) >= SERVED_WRITES_EVERY:
            self._write_served()

    def _write_served(self) -> None:
        generation, seconds = self._unwritten_on, self._unwritten
        if generation is not None and seconds:
            self._unwritten = []
            self._count_seconds(generation, "served", np.asarray(seconds))

    def _count_seconds(self, generation: Generation, role: str, seconds: np.ndarray) -> None:
        """``seconds.size`` requests answered ``ok``, each after its seconds."""
        requests, histogram = self._series_of(generation, role, "ok")
        requests.inc(seconds.size)
        observe_scores(histogram, seconds)  # per bucket, not per request

    def _series_of(
        self, generation: Generation, role: str, outcome: str
    ) -> tuple[Counter, Histogram]:
        version = generation.ready.version
        series = self._series.get((version, role, outcome))
        if series is None:  # ``labels()`` costs ~1.7 us a call: looked up once per series
            name = self.served.name
            series = (
                ROLLOUT_REQUESTS.labels(name, version, role, outcome),
                ROLLOUT_SECONDS.labels(name, version, role),
            )
            self._series[(version, role, outcome)] = series
        return series

    def _shadow_dropped(self, requests: int) -> None:
        self.shadow.dropped += requests
        self._shadow_series["dropped"].inc(requests)

    async def _run_shadow(self, inputs: Arrays) -> Arrays:
        """One shadow flush's rows on the candidate, held meanwhile (``ShadowBatcher.run``)."""
        candidate = self.candidate
        if candidate is None:
            raise RuntimeError("the rollout ended")  # reported to a rollout that ended: ignored
        self.served.hold(candidate)
        try:
            assert isinstance(candidate.runner, MicroBatcher)
            return await candidate.runner.submit(inputs)
        finally:
            self.served.release(candidate)

    def _shadow_flushed(self, flush: Flush) -> None:
        """Count and compare one shadow flush's requests, then check the bounds."""
        candidate = self.candidate
        if not self.running or candidate is None:
            return
        shadow, series = self.shadow, self._shadow_series
        shadow.calls += 1
        series["calls"].inc()
        if isinstance(flush.error, OverloadedError):
            self._shadow_dropped(flush.requests)
            return
        if flush.error is not None:  # the candidate's failure is counted, never the client's
            log.debug("shadow run of %s failed", self.spec.candidate, exc_info=flush.error)
            shadow.errors += flush.requests
            self.figures["candidate"].failed(flush.requests)
            series["error"].inc(flush.requests)
            self._count(candidate, "shadow", "error", 0.0, flush.requests)
            self._judge()
            return
        assert flush.outputs is not None
        scores = flush.outputs[self._score] if self._score is not None else None
        classes = self._class_bins(flush.outputs, True)
        self._count_seconds(candidate, "shadow", flush.seconds)
        self.figures["candidate"].answered_many(flush.seconds, scores, classes)
        shadow.compared += flush.requests
        series["compared"].inc(flush.requests)
        answers = classes if classes is not None else scores
        if answers is not None and flush.served_answers is not None:
            comparison = compare(flush.served_answers, answers, self.spec.agree_within, shadow.by)
            shadow.rows += comparison.rows
            shadow.agreeing_rows += comparison.agreeing
            shadow.abs_difference += comparison.abs_difference
            series["agreeing_rows"].inc(comparison.agreeing)
            series["disagreeing_rows"].inc(comparison.rows - comparison.agreeing)
        self._judge()

    # -- verdicts ---------------------------------------------------------------------------

    def _judge(self) -> None:
        """Roll back on a bound broken over ``min_requests`` answers; promote after
        ``promote_after`` answers within bounds."""
        candidate, served = self.figures["candidate"], self.figures["served"]
        spec = self.spec
        if not self.running or candidate.requests < spec.min_requests:
            return
        if candidate.error_ratio > spec.max_error_ratio:
            self.rollback(
                f"error ratio {candidate.error_ratio:.3f} > {spec.max_error_ratio} over "
                f"{candidate.requests} requests"
            )
            return
        promoting = spec.promote_after is not None and candidate.requests >= spec.promote_after
        due = candidate.requests >= self._next_psi or promoting
        pairs = candidate.paired(served) if served.requests >= spec.min_requests and due else {}
        if pairs:
            self._next_psi = candidate.requests + PSI_EVERY
            self.drift = {name: psi(*pair) for name, pair in pairs.items()}
            worst = max(self.drift, key=self.drift.__getitem__)
            self.psi = self.drift[worst]
            ROLLOUT_PSI.labels(self.served.name).set(self.psi)
            if self.psi > spec.max_psi:
                self.rollback(
                    f"{worst} PSI {self.psi:.3f} > {spec.max_psi} over {candidate.requests} "
                    f"candidate and {served.requests} served answers"
                )
                return
        agreement = self.shadow.agreement
        floor = spec.min_agreement
        if floor is not None and agreement is not None and agreement < floor:
            self.rollback(
                f"shadow agreement {agreement:.3f} < {floor} over {self.shadow.rows} rows"
            )
            return
        if promoting:
            self.promote(
                f"{spec.promote_after} candidate answers within bounds "
                f"({candidate.requests} at the check)"
            )

    def describe(self) -> dict[str, Any]:
        """``/v1/models``' ``rollout``: state, share, bounds, figures so far, transitions."""
        spec = self.spec
        return {
            "candidate": spec.candidate,
            "baseline": self.baseline,
            "mode": spec.mode,
            "state": self.state,
            "reason": self.reason,
            "generation": self.generation,
            "share": spec.percent / 100 if spec.mode == "canary" else spec.sample,
            "bounds": spec.model_dump(exclude={"candidate", "mode", "percent", "sample"}),
            "psi": None if self.psi is None else round(self.psi, 4),
            "drift": {name: round(value, 4) for name, value in self.drift.items()},
            "figures": {role: figures.describe() for role, figures in self.figures.items()},
            "shadow": self.shadow.describe(self._shadows.pending)
            if spec.mode == "shadow"
            else None,
            "transitions": list(self.transitions),
        }


def start(
    served: ServedModel,
    spec: RolloutSpec,
    max_shadows: int,
    generation: int = 0,
    claim: Claim | None = None,
) -> Rollout:
    """Start ``spec`` on ``served`` and load its candidate (blocking): the rollout, in state
    ``canary``/``shadow``, or ``CandidateError`` (it is kept, ``failed``, for ``/v1/models``).
    ``ValueError`` when the model cannot take one (a shadow of a stepwise model, nothing
    served, the candidate is the served version, another rollout running). ``generation``
    and ``claim`` as ``Rollout`` takes them."""
    refusal = refusal_of(served, spec)
    if refusal is not None:
        raise ValueError(refusal)
    rollout = Rollout(served, spec, max_shadows, generation, claim)
    served.rollout = rollout
    rollout.load()
    return rollout


def refusal_of(served: ServedModel, spec: RolloutSpec) -> str | None:
    """Why ``served`` cannot take ``spec`` now, or ``None``."""
    if served.spec.stepwise and spec.mode == "shadow":
        return (
            f"mode 'shadow' is not available for the stepwise model {served.name!r}: a shadow "
            "generation would share the cores and step loop time of the client's stream; roll "
            "it out with mode 'canary'"
        )
    ready = served.ready
    if ready is None:
        return f"model {served.name!r} serves no version yet: {served.reason}"
    if ready.version == spec.candidate:
        return f"version {spec.candidate!r} is the served version"
    current = served.rollout
    if current is not None and current.running:
        return f"a rollout of {current.spec.candidate!r} is {current.state}: cancel it first"
    return None


def start_declared(settings: Settings, served: Mapping[str, ServedModel]) -> None:
    """Count every served model's transitions from 0 and start the rollouts of
    ``DLSERVE_ROLLOUTS`` (model -> spec); ``SettingsError`` naming
    the variable for an unknown model or a bad spec; a candidate that cannot serve is
    logged and shown ``failed`` (the served version keeps serving)."""
    for model in served:  # from 0, so that the first transition is an increase()
        for state in State.__args__:
            ROLLOUT_TRANSITIONS.labels(model=model, state=state)
    name = variable("rollouts")
    for model, raw in settings.rollouts.items():
        if model not in served:
            raise SettingsError(f"{name}: model {model!r} is not served here ({sorted(served)})")
        try:
            spec = RolloutSpec.model_validate(raw)
        except ValidationError as exc:
            raise SettingsError(f"{name}: {model}: {describe_errors(exc)}") from None
        try:
            start(served[model], spec, settings.rollout_shadow_max_in_flight)
        except (ValueError, CandidateError) as exc:
            log.error("model %s: the declared rollout did not start: %s", model, exc)


def describe_errors(exc: ValidationError) -> str:
    """One line per broken rule of a ``RolloutSpec``: the field and the rule."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
