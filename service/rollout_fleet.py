"""Rollouts on every worker of a server: each transition declared once, applied by all.

A rollout (``service.rollout``) lives in one worker's memory. So that a posted rollout, a call
that ends it and an automatic verdict reach every worker, the workers of one ``bentoml serve``
share a folder, ``$PROMETHEUS_MULTIPROC_DIR/dlserve-rollouts`` (``bentoml serve`` makes that
folder empty at each start and gives it to every worker: the multiprocess metrics' folder). It
holds, per model, the latest **declaration** ``<model>.json``: a generation number (1, 2, ...;
0 is ``DLSERVE_ROLLOUTS``' start, never written), the state (``running``, ``promoted``,
``rolled_back``, ``canceled``), the spec, the reason and the declaring worker's pid. It is
written under an exclusive ``flock`` of ``<model>.lock`` (read, check, write), to a temporary
file renamed over the old one (a reader sees the old or the new declaration, whole).

- **Claim** (the worker that takes the call, or whose verdict fires): a start is declared
  when the latest declaration is not ``running`` and this worker has applied it; an ending
  (``Rollout.claim``, asked by ``promote``/``rollback``/``cancel``) when the latest
  declaration is still the one the rollout runs under. The first claim wins; a refused one
  changes nothing here, and this worker applies the winner's declaration at its next poll.
- **Apply** (every worker, ``Fleet.watch``: every ``POLL_S`` seconds a read of each model's
  file, a few hundred bytes): a declaration newer than the last one this worker applied is
  applied once: ``running`` starts the rollout (loading the candidate off the event loop;
  one running under an older generation is canceled first), an ending ends the local rollout
  of that candidate the same way (a promotion on a worker without the candidate, e.g. one
  where it failed to load, pins the candidate and loads it as the served version). A worker
  jumps to the latest declaration: one that was not running in between sees only that.

Without ``PROMETHEUS_MULTIPROC_DIR`` (one process: in-process tests) every claim is accepted
and nothing is written. Claims and polls run on the event loop: a claim is a lock, a read and
a rename of a few hundred bytes.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

from service.rollout import CandidateError, Rollout, RolloutSpec, State, start
from service.served_model import ServedModel

log = logging.getLogger(__name__)

FOLDER = "dlserve-rollouts"
POLL_S = 0.5
Declared = Literal["running", "promoted", "rolled_back", "canceled"]
ENDINGS: frozenset[str] = frozenset({"promoted", "rolled_back", "canceled"})


@dataclass(frozen=True)
class Declaration:
    """One model's latest rollout transition, as every worker of the server reads it."""

    generation: int
    state: Declared
    spec: dict[str, Any]
    reason: str
    worker: int

    @property
    def candidate(self) -> str:
        return self.spec["candidate"]


class Refused(Exception):
    """A claim the latest declaration forbids (the reason)."""


Check = Callable[[Declaration | None], None]
"""Raises ``Refused`` when the latest declaration (``None``: none yet) forbids a claim."""


class DeclarationFile:
    """One model's declaration file and its lock, in ``folder`` (made when missing)."""

    def __init__(self, folder: Path, model: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{model}.json"
        self._lock = folder / f"{model}.lock"

    def read(self) -> Declaration | None:
        """The latest declaration; ``None`` before the first."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return Declaration(**raw)

    def declare(self, check: Check, state: Declared, spec: dict[str, Any], reason: str) -> int:
        """Under the lock: ``check(latest)`` (raises ``Refused``), then write the next
        generation, which it returns."""
        with open(self._lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
            latest = self.read()
            check(latest)
            declared = Declaration(
                (latest.generation if latest else 0) + 1, state, spec, reason, os.getpid()
            )
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(asdict(declared)))
            os.replace(temporary, self.path)
            return declared.generation


class Fleet:
    """This worker's side of the server's rollouts (see the module docstring) for ``served``;
    ``folder`` ``None``: this process alone."""

    def __init__(
        self, served: Mapping[str, ServedModel], folder: Path | None, max_shadows: int
    ) -> None:
        self.served = served
        self.max_shadows = max_shadows
        self.files = {name: DeclarationFile(folder, name) for name in served} if folder else {}
        self.applied = dict.fromkeys(served, 0)  # the generation this worker applied last
        for model in served.values():  # DLSERVE_ROLLOUTS' rollouts, generation 0
            if model.rollout is not None:
                model.rollout.claim = self.claim

    @classmethod
    def of_server(cls, served: Mapping[str, ServedModel], max_shadows: int) -> Fleet:
        """The fleet of the server this worker belongs to (its multiprocess metrics' folder)."""
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        return cls(served, Path(shared) / FOLDER if shared else None, max_shadows)

    # -- claims (the worker that took the call, or whose verdict fired) ----------------------

    def declare_start(self, served: ServedModel, spec: RolloutSpec) -> int:
        """Declare ``spec``'s start on every worker: its generation; ``Refused`` while the
        server runs another rollout of the model, or this worker has not applied the latest
        declaration yet."""
        name = served.name
        applied = self.applied[name]

        def check(latest: Declaration | None) -> None:
            if latest is None:
                return
            if latest.state == "running":
                raise Refused(
                    f"a rollout of {latest.candidate!r} runs on the server's workers "
                    f"(generation {latest.generation}): end it first"
                )
            if latest.generation != applied:
                raise Refused(
                    f"this worker has not applied generation {latest.generation} yet: retry"
                )

        generation = self._declare(name, check, "running", spec.model_dump(), "started by a call")
        self.applied[name] = generation
        return generation

    def claim(self, rollout: Rollout, state: State, reason: str) -> bool:
        """``Rollout.claim``: declare this ending on every worker, unless another worker
        declared something since the rollout's generation (then ``False``, and no later
        verdict of this rollout asks again)."""
        assert state in ENDINGS, state
        ending = cast(Declared, state)
        ended = self.end(rollout.served.name, rollout.generation, rollout.spec, ending, reason)
        if not ended:
            rollout.claim = _refuse
        return ended

    def end(
        self, name: str, generation: int, spec: RolloutSpec, state: Declared, reason: str
    ) -> bool:
        """Declare the rollout of ``generation`` ended in ``state`` on every worker; ``False``
        when another declaration came since (the rollout was ended or replaced)."""

        def check(latest: Declaration | None) -> None:
            if (latest.generation if latest else 0) != generation:
                raise Refused(f"generation {latest.generation if latest else 0} was declared")

        try:
            self.applied[name] = self._declare(name, check, state, spec.model_dump(), reason)
        except Refused as refused:
            log.info("model %s rollout: %s not declared: %s", name, state, refused)
            return False
        return True

    def _declare(
        self, name: str, check: Check, state: Declared, spec: dict[str, Any], reason: str
    ) -> int:
        file = self.files.get(name)
        if file is None:  # this process alone
            return self.applied[name] + 1
        return file.declare(check, state, spec, reason)

    # -- applying (every worker) ------------------------------------------------------------

    async def watch(self) -> None:
        """Apply each new declaration, every ``POLL_S`` seconds, until canceled (at once
        without a shared folder)."""
        while self.files:
            await self.poll()
            await asyncio.sleep(POLL_S)

    async def poll(self) -> None:
        """Apply the latest declaration of each model when newer than the last one this
        worker applied (never raises: a failure is logged)."""
        for name, file in self.files.items():
            try:
                declared = file.read()
                if declared is not None and declared.generation > self.applied[name]:
                    await self._apply(self.served[name], declared)
            except Exception:
                log.exception("model %s: applying the rollout declaration failed", name)

    async def _apply(self, served: ServedModel, declared: Declaration) -> None:
        """Apply ``declared`` here, unless it must wait for a later poll (a promotion of a
        candidate this worker's own call is still loading, a start while no version is served
        yet)."""
        name, local = served.name, served.rollout
        same = local is not None and local.spec.candidate == declared.candidate
        if declared.state != "running":
            if same and local is not None and local.running:
                if local.state == "loading" and declared.state == "promoted":
                    return
                self._end(local, declared)
            elif declared.state == "promoted" and served.pinned != declared.candidate:
                served.pinned = declared.candidate  # serve it as the other workers do
                await asyncio.to_thread(served.refresh, True)
            self.applied[name] = declared.generation
            return
        if served.ready is None:
            return
        self.applied[name] = declared.generation
        if local is not None and local.running:
            local.claim = None
            local.cancel(f"replaced by generation {declared.generation}")
        spec = RolloutSpec.model_validate(declared.spec)
        try:
            await asyncio.to_thread(
                start, served, spec, self.max_shadows, declared.generation, self.claim
            )
        except (ValueError, CandidateError) as exc:
            log.error(
                "model %s: generation %d's rollout did not start here: %s",
                name,
                declared.generation,
                exc,
            )

    @staticmethod
    def _end(rollout: Rollout, declared: Declaration) -> None:
        rollout.claim = None  # declared already: applied as it is
        reason = f"{declared.reason} (declared by worker {declared.worker})"
        if declared.state == "promoted":
            rollout.promote(reason)
        elif declared.state == "rolled_back":
            rollout.rollback(reason)
        else:
            rollout.cancel(reason)


def _refuse(rollout: Rollout, state: State, reason: str) -> bool:
    """The claim of a rollout another worker ended: refused until that ending is applied."""
    return False
