"""The gRPC server of one worker: started in the worker's event loop once its data plane is
loaded, stopped when the worker shuts down.

Every worker of ``bentoml serve`` binds ``DLSERVE_GRPC_PORT`` with ``SO_REUSEPORT``, so the
kernel spreads gRPC connections over the workers as it spreads HTTP's; each serves with its
own data plane (models, batchers, admission). Messages larger than ``DLSERVE_MAX_BODY_BYTES``
are refused by gRPC itself (``RESOURCE_EXHAUSTED``). On SIGTERM the data plane's traffic drains
(``service.shutdown``): ``ServerReady`` answers false and new ``ModelInfer`` calls
``UNAVAILABLE`` at once, while calls in flight finish; ``stop`` (the worker's shutdown) then
waits up to the grace period for the last ones (``grpc.aio.Server.stop``).
"""

from __future__ import annotations

import grpc

from service import auth
from service.config import Settings
from service.grpc_api import grpc_predict_v2_pb2_grpc as pb_grpc
from service.grpc_api.servicer import InferenceServicer
from service.inference import DataPlane


async def start(plane: DataPlane, settings: Settings, keys: tuple[str, ...]) -> grpc.aio.Server:
    """A started server of ``plane`` on ``settings.grpc_port`` (all interfaces), needing one
    of ``keys`` (none: no key). ``RuntimeError`` when the port cannot be bound."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", settings.max_body_bytes),
        ]
    )
    servicer = InferenceServicer(plane, auth.key_digests(keys), settings.refusal_delay_ms / 1000)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"[::]:{settings.grpc_port}")
    await server.start()
    return server
