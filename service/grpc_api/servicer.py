"""The six RPCs of ``inference.GRPCInferenceService`` on the worker's data plane, as
``service.open_inference`` serves the same protocol over HTTP: the same ``DataPlane`` calls
(``is_ready``, ``tensor_version``, ``infer_tensors``), the same checks
(``service.grpc_api.tensors`` calls ``service.tensors``' rules), the same micro-batcher, metrics
and typed errors, rendered once by ``service.grpc_api.status``.

Around every RPC but the probes (``ServerLive``, ``ServerReady``, open as HTTP's
``/v2/health/*``): the API key from the metadata ``authorization: Bearer KEY`` (the rules of
``service.auth``). Around ``ModelInfer``, the worker's admission (``Traffic``, shared with HTTP:
the call counts in ``in_flight`` and ``started``): ``UNAVAILABLE`` with ``retry-after`` while
``DLSERVE_MAX_CONCURRENT_REQUESTS`` requests are in flight or while the worker drains after
SIGTERM, paced by ``DLSERVE_REFUSAL_DELAY_MS`` as HTTP's refusals are. A refused input or an
unknown tensor model counts as ``dlserve_predictions_total{outcome="rejected"}`` under the
model, an unexpected failure as ``error`` (``INTERNAL``, logged), as HTTP counts its 4xx and
500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from service import auth, open_inference, registry, tensors
from service.area import ReadyModel
from service.errors import (
    InferenceError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    RequestInputError,
)
from service.grpc_api import grpc_predict_v2_pb2 as pb
from service.grpc_api import grpc_predict_v2_pb2_grpc as pb_grpc
from service.grpc_api import tensors as grpc_tensors
from service.grpc_api.status import MissingKeyError, abort
from service.inference import DataPlane
from service.metrics import PREDICTIONS

log = logging.getLogger("dlserve")
Message = TypeVar("Message")
TENSOR_MODELS = registry.tensor_model_names()


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's RPCs on ``plane``; ``digests``: the accepted API keys'
    (``auth.key_digests``, empty: no key needed); ``refusal_delay_s``: how late a refusal
    worth retrying is answered."""

    def __init__(self, plane: DataPlane, digests: tuple[bytes, ...], refusal_delay_s: float):
        self.plane = plane
        self.digests = digests
        self.refusal_delay_s = refusal_delay_s

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.is_ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return await self._guarded(context, self._server_metadata)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return await self._guarded(context, lambda: self._model_ready(request))

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return await self._guarded(context, lambda: self._model_metadata(request))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self._guarded(context, lambda: self._admitted(request))

    # -- the RPCs' work, each raising typed errors --------------------------------------------

    async def _server_metadata(self) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**open_inference.SERVER)

    async def _model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        """Ready when the model serves (that version, if given); false for an unknown model or
        version, as Triton answers."""
        try:
            ready = self.plane.tensor_version(request.name, request.version or None)
        except ModelNotFoundError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=ready is not None)

    async def _model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        name = request.name
        ready = self.plane.tensor_version(name, request.version or None)
        if ready is None:
            reason = self.plane.tensor_model(name).reason
            raise ModelNotReadyError(f"model {name!r} is not loaded: {reason}")
        return pb.ModelMetadataResponse(
            name=ready.name,
            versions=[ready.version],
            platform=open_inference.PLATFORM,
            inputs=[tensors.tensor_metadata(spec) for spec in ready.metadata["inputs"]],
            outputs=[tensors.tensor_metadata(spec) for spec in ready.metadata["outputs"]],
        )

    async def _admitted(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """``_infer`` within the worker's admission bound, counted as HTTP's requests are."""
        traffic = self.plane.traffic
        limit = self.plane.settings.max_concurrent_requests
        if traffic.draining:
            raise OverloadedError("this worker is shutting down (SIGTERM); retry")
        if traffic.in_flight >= limit:
            if request.model_name in self.plane.served:
                PREDICTIONS.labels(model=request.model_name, outcome="overloaded").inc()
            raise OverloadedError(
                f"overloaded: {limit} requests already in progress on this worker; retry "
                "(DLSERVE_MAX_CONCURRENT_REQUESTS)"
            )
        traffic.in_flight += 1
        traffic.started += 1
        try:
            return await self._infer(request)
        finally:
            traffic.started -= 1
            traffic.in_flight -= 1

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        def decode(ready: ReadyModel, max_rows: int) -> tensors.InferRequest:
            return grpc_tensors.parse_request(
                request, ready.metadata["inputs"], ready.model.output_names, max_rows
            )

        name = request.model_name
        try:
            ready, parsed, outputs = await self.plane.infer_tensors(
                name, request.model_version or None, decode
            )
            assert parsed is not None
            return grpc_tensors.encode_response(ready.name, ready.version, parsed, outputs)
        except (RequestInputError, ModelNotFoundError):
            if name in TENSOR_MODELS:
                PREDICTIONS.labels(model=name, outcome="rejected").inc()
            raise
        except InferenceError:
            raise
        except Exception:
            if name in TENSOR_MODELS:
                PREDICTIONS.labels(model=name, outcome="error").inc()
            raise

    # -- what every guarded RPC shares -----------------------------------------------------------

    async def _guarded(
        self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[Message]]
    ) -> Message:
        """``work()`` once the API key checks out, its typed errors as gRPC statuses; a
        refusal worth retrying answered ``refusal_delay_s`` late."""
        try:
            if self.digests and not auth.bearer_matches(_authorization(context), self.digests):
                raise MissingKeyError()
            return await work()
        except InferenceError as error:
            if error.retry_after_s is not None and self.refusal_delay_s > 0:
                await asyncio.sleep(self.refusal_delay_s)
            await abort(context, error)
        except Exception:
            log.exception("a gRPC call failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: abort raises")


def _authorization(context: grpc.aio.ServicerContext) -> bytes:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value.encode() if isinstance(value, str) else value
    return b""
