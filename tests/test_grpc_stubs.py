"""The committed gRPC stubs are what the pinned ``grpcio-tools`` generates from the vendored
``.proto`` (service/grpc_api/__init__.py says how and why they are committed)."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO = "service/grpc_api/grpc_predict_v2.proto"
STUBS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def test_regenerating_the_stubs_from_the_proto_gives_the_committed_files(tmp_path: Path) -> None:
    (tmp_path / PROTO).parent.mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)  # the same relative path: the same imports
    arguments = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    arguments += [f"--grpc_python_out={tmp_path}", str(tmp_path / PROTO)]
    assert protoc.main(arguments) == 0
    for stub in STUBS:
        generated = (tmp_path / PROTO).with_name(stub).read_text()
        committed = (ROOT / PROTO).with_name(stub).read_text()
        assert generated == committed, f"{stub} is stale: regenerate it (see service/grpc_api)"


def test_the_proto_is_the_protocols_own_with_its_licence() -> None:
    text = (ROOT / PROTO).read_text()
    assert text.startswith("// Copyright 2020 kubeflow.org.\n//\n// Licensed under the Apache")
    assert "package inference;" in text and "service GRPCInferenceService" in text
    rpcs = [line.split()[1].split("(")[0] for line in text.splitlines() if "  rpc " in line]
    assert rpcs == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    ]
