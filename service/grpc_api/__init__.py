"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

``grpc_predict_v2.proto`` is the protocol's own definition, vendored unchanged from KServe
(``docs/predict-api/v2/grpc_predict_v2.proto`` at commit
``aaac4e294dae2c7b1aa1886447793f3aa1c30912``, Apache-2.0, its licence header kept).
``grpc_predict_v2_pb2.py``, ``_pb2.pyi`` and ``_pb2_grpc.py`` are generated from it and
committed, so that serving needs only ``grpcio`` and ``protobuf`` (no code generator in the
image or the Bento); ``tests/test_grpc_stubs.py`` regenerates them with the pinned
``grpcio-tools`` and fails when they differ. Regenerate from the repository root with::

    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \\
        service/grpc_api/grpc_predict_v2.proto

The stubs register the ``inference.*`` messages in protobuf's default descriptor pool, where
Triton's client (``tritonclient.grpc``) registers its own under the same names: one process
cannot import both. The service imports this package only when it starts the gRPC server
(``DLSERVE_GRPC_PORT`` set), never at import.

Modules: ``server`` (start-up and shutdown in each worker), ``servicer`` (the six RPCs on the
worker's data plane), ``tensors`` (messages <-> checked arrays), ``status`` (the data plane's
typed errors as gRPC status codes).
"""
