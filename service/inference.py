"""The data plane: one object per worker that every protocol calls to run a model.

``DataPlane`` owns the worker's served models (each with its versions, its micro-batcher or step
scheduler and its metrics: ``service.served_model``) and the worker's traffic state (requests in
flight, draining, full step queues: ``service.admission.Traffic``). Its methods cover what every
front door needs: readiness, a model's served version, tensor inference (the Open Inference
Protocol), named-route inference (``predict``) and stepwise generation (``stream``). It needs no
BentoML request context, and it answers failures with typed errors (``service.errors``:
``RequestInputError`` naming the input, ``ModelNotFoundError``, ``ModelNotReadyError``,
``OverloadedError`` / ``QueueFullError`` with a retry hint, ``ClientGoneError``) that each
protocol renders at its edge in its own shape.

The protocols' apps are mounted before any worker starts, so they take the worker's plane
through ``CurrentPlane``, which the service sets once the worker has loaded its models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from service import registry, rollout
from service.area import ReadyModel
from service.batching import Arrays
from service.config import Settings
from service.errors import ModelNotFoundError
from service.rollout_fleet import Fleet
from service.routing import note_answered
from service.served_model import ServedModel, request_scope
from service.traffic import Traffic


class TensorRequest(Protocol):
    """A decoded tensor request: at least the graph's inputs."""

    inputs: Arrays


Decoded = TypeVar("Decoded", bound=TensorRequest)


class DataPlane:
    """This worker's inference core (see the module docstring); ``settings``: the service's
    settings, which route handlers read for their request budgets."""

    def __init__(
        self,
        settings: Settings,
        served: dict[str, ServedModel],
        traffic: Traffic,
        fleet: Fleet | None = None,
    ):
        self.settings = settings
        self.served = served
        self.traffic = traffic
        shadows = settings.rollout_shadow_max_in_flight
        # the rollouts of this worker's server (service/rollout_fleet.py); none: this one alone
        self.fleet = fleet if fleet is not None else Fleet(served, None, shadows)

    @classmethod
    def load(
        cls, settings: Settings, traffic: Traffic, alone: Callable[[], bool] | None = None
    ) -> DataPlane:
        """Load every enabled model (``settings.models``; a model that fails to load is
        reported by its ``ServedModel``, never raised) and start ``DLSERVE_ROLLOUTS``;
        ``alone`` as ``ServedModel`` takes it."""
        served = {
            spec.name: ServedModel(spec, settings, alone=alone, on_queue_full=traffic.queue_filled)
            for spec in registry.model_specs(settings.models)
        }
        rollout.start_declared(settings, served)  # DLSERVE_ROLLOUTS
        fleet = Fleet.of_server(served, settings.rollout_shadow_max_in_flight)
        return cls(settings, served, traffic, fleet)

    def is_ready(self) -> bool:
        """Every enabled model is ready and the worker is not draining (after SIGTERM)."""
        ready = all(served.ready is not None for served in self.served.values())
        return ready and not self.traffic.draining

    def model(self, name: str) -> ServedModel:
        """The enabled model ``name``; ``ModelNotFoundError`` otherwise."""
        served = self.served.get(name)
        if served is None:
            raise ModelNotFoundError(f"model {name!r} is not enabled (DLSERVE_MODELS)")
        return served

    def ready(self, name: str) -> ReadyModel | None:
        """The ready model ``name`` (``None`` when disabled or unavailable); within a request
        scope, ``predict``/``stream`` then run on this same version."""
        served = self.served.get(name)
        return served.ready_for_request() if served is not None else None

    async def predict(self, name: str, inputs: Arrays) -> tuple[ReadyModel, Arrays]:
        """Batched inference on the request's version: its outputs. ``ModelNotFoundError``,
        ``ModelNotReadyError`` (503, before ``inputs`` is read), ``OverloadedError``."""
        ready, outputs = await self.model(name).predict(inputs)
        note_answered(ready.name, ready.version)  # the request's record of who answered
        return ready, outputs

    async def stream(
        self, name: str, requests: Sequence[Any]
    ) -> tuple[ReadyModel, AsyncIterator[tuple[int, Any]]]:
        """Admit a stepwise request's sequences (one per item of ``requests``), all or none:
        its version and the outputs as ``(index in requests, output)``; leaving the iteration
        early frees its places. ``ModelNotFoundError``, ``ModelNotReadyError``,
        ``QueueFullError`` (429)."""
        ready, outputs = self.model(name).stream(requests)
        note_answered(ready.name, ready.version)
        return ready, outputs

    def tensor_model(self, name: str) -> ServedModel:
        """The enabled tensor model ``name`` (``ModelSpec.tensors``); ``ModelNotFoundError``
        naming the tensor models served here otherwise."""
        served = self.served.get(name)
        if served is None and name in registry.tensor_model_names():
            raise ModelNotFoundError(f"model {name!r} is not enabled (DLSERVE_MODELS)")
        if served is None or served.spec.tensors is None:
            known = [m.name for m in self.served.values() if m.spec.tensors is not None]
            raise ModelNotFoundError(
                f"unknown model {name!r}; the tensor models served here are {known}"
            )
        return served

    def tensor_version(self, name: str, version: str | None) -> ReadyModel | None:
        """Tensor model ``name``'s served version (``None`` while none is loaded);
        ``ModelNotFoundError`` when ``version`` is given and is not the served one."""
        served = self.tensor_model(name)
        return _at_version(served, served.ready, version)

    async def infer_tensors(
        self, name: str, version: str | None, decode: Callable[[ReadyModel, int], Decoded]
    ) -> tuple[ReadyModel, Decoded | None, Arrays]:
        """Tensor inference on model ``name``: ``decode(ready, max_rows)`` checks the request
        against the version it will run on (``RequestInputError``), the model's own input
        check follows, then ``predict``. Returns the version, the decoded request and the
        outputs; ``ModelNotReadyError`` before anything is decoded when no version is ready."""
        served = self.tensor_model(name)
        tensor_inputs = served.spec.tensors
        assert tensor_inputs is not None
        with request_scope():  # the version decoded against is the one predict runs
            ready = _at_version(served, served.ready_for_request(), version)
            decoded = None
            if ready is not None:
                decoded = decode(ready, tensor_inputs.max_rows)
                if tensor_inputs.check is not None:
                    tensor_inputs.check(decoded.inputs, ready)
            ready, outputs = await served.predict(decoded.inputs if decoded else {})
        note_answered(ready.name, ready.version)
        return ready, decoded, outputs


def _at_version(
    served: ServedModel, ready: ReadyModel | None, version: str | None
) -> ReadyModel | None:
    if ready is not None and version is not None and version != ready.version:
        raise ModelNotFoundError(
            f"model {served.name!r} has no version {version!r}; it serves {ready.version!r}"
        )
    return ready


class CurrentPlane:
    """This worker's ``DataPlane``, set once at start-up (``set``); calling it returns it."""

    def __init__(self) -> None:
        self._plane: DataPlane | None = None

    def set(self, plane: DataPlane) -> None:
        self._plane = plane

    def __call__(self) -> DataPlane:
        if self._plane is None:
            raise RuntimeError("this worker has not loaded its models yet")
        return self._plane
