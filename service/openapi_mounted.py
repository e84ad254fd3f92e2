"""The OpenAPI entries of the routes dlserve mounts beside BentoML's (which BentoML's document
leaves out): ``GET /v1/models``, ``POST /v1/models/{name}/load``, the rollout routes
(``service.rollout_routes``: their body is ``RolloutSpec``'s own JSON Schema), a batch job's
downloads and the Open Inference Protocol's ``/v2`` routes.

Each schema states only what the route checks (so an answer to data the schema calls invalid
is a 4xx, and schema fuzzing reaches every route): a ``/v2`` error is ``{"error": message}``,
an inference request is a JSON object whose ``inputs`` are the model's tensors, readiness is
200 or 503 with the same ``{"ready"}`` body.
"""

from __future__ import annotations

from typing import Any

from service.rollout import RolloutSpec
from service.rollout_routes import ACTIONS

REF = "#/components/schemas/"
PROTOCOL_ERROR: dict[str, Any] = {
    "type": "object",
    "title": "ProtocolError",
    "description": "Every error of the Open Inference Protocol's routes.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": {"type": "string"}},
}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
OBJECT = {"type": "object"}
TENSOR_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": STRING,
        "datatype": STRING,
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
REQUEST_TENSOR = {
    **TENSOR_METADATA,
    "properties": {
        **TENSOR_METADATA["properties"],
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "parameters": OBJECT,
        "data": {"type": "array"},
    },
}
INFER_REQUEST = {
    "type": "object",
    "title": "InferenceRequest",
    "required": ["inputs"],
    "properties": {
        "id": STRING,
        "parameters": OBJECT,
        "inputs": {"type": "array", "minItems": 1, "items": REQUEST_TENSOR},
        "outputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": STRING, "parameters": OBJECT},
            },
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "title": "InferenceResponse",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": STRING,
        "model_version": STRING,
        "id": STRING,
        "outputs": {
            "type": "array",
            "items": {
                **TENSOR_METADATA,
                "properties": {
                    **TENSOR_METADATA["properties"],
                    "data": {"type": "array"},
                    "parameters": OBJECT,
                },
            },
        },
    },
}
MODEL_LIST = {
    "type": "object",
    "title": "ModelList",
    "required": ["models", "object", "data"],
    "properties": {
        "models": {"type": "array", "items": {"$ref": REF + "ModelEntry"}},
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": STRING,
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": STRING,
                },
            },
        },
    },
}
MODEL_ENTRY = {
    "type": "object",
    "title": "ModelEntry",
    "description": "A model's state, served version, last load attempt and routes.",
    "required": ["name", "status", "routes"],
    "properties": {
        "name": STRING,
        "status": {"enum": ["training", "loading", "ready", "unavailable"]},
        "version": STRING,
        "reason": {"type": ["string", "null"]},
        "last_load": {"type": ["object", "null"]},
        "rollout": {"anyOf": [{"$ref": REF + "Rollout"}, {"type": "null"}]},
        "routes": {"type": "array", "items": OBJECT},
    },
}
NUMBER_OR_NULL = {"type": ["number", "null"]}
ROLLOUT = {
    "type": "object",
    "title": "Rollout",
    "description": "A model's rollout on the worker that answered: its state, the declaration "
    "it runs under (`generation`, the same on every worker), bounds, this worker's figures and "
    "its last transitions.",
    "required": ["candidate", "baseline", "mode", "state", "reason", "generation", "transitions"],
    "properties": {
        "candidate": STRING,
        "baseline": STRING,
        "mode": {"enum": ["canary", "shadow"]},
        "state": {
            "enum": ["loading", "canary", "shadow", "promoted", "rolled_back", "canceled", "failed"]
        },
        "reason": {"type": ["string", "null"]},
        "generation": {"type": "integer", "minimum": 0},
        "share": {"type": "number"},
        "bounds": OBJECT,
        "psi": NUMBER_OR_NULL,
        "figures": OBJECT,
        "shadow": {"type": ["object", "null"]},
        "transitions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["state", "at", "reason"],
                "properties": {"state": STRING, "at": STRING, "reason": STRING},
            },
        },
    },
}
SCHEMAS = {
    "ProtocolError": PROTOCOL_ERROR,
    "InferenceRequest": INFER_REQUEST,
    "InferenceResponse": INFER_RESPONSE,
    "ModelList": MODEL_LIST,
    "ModelEntry": MODEL_ENTRY,
    "Rollout": ROLLOUT,
    "RolloutSpec": RolloutSpec.model_json_schema(),
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str,
    answers: dict[str, dict[str, Any]],
    error: str,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {**answers, "default": _json({"$ref": REF + error}, "Error")},
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": body}}
    return operation


def _errors(answers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each status with its description, answered as the ``Error`` schema."""
    return {status: _json({"$ref": REF + "Error"}, why) for status, why in answers.items()}


def _path_parameter(name: str, values: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if values:
        schema["enum"] = values
    return {"name": name, "in": "path", "required": True, "schema": schema}


def mounted_paths(
    models: list[str], tensor_models: list[str], download_names: list[str]
) -> dict[str, dict[str, Any]]:
    """The path items of the mounted routes: ``models`` are the enabled models (``{name}`` of
    the load route), ``tensor_models`` those ``/v2`` serves, ``download_names`` a job's
    files."""
    name = [_path_parameter("name", models)]
    tensor = [_path_parameter("name", tensor_models)]
    version = [*tensor, _path_parameter("version")]
    ready = {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": STRING, "ready": BOOLEAN},
    }
    readiness = {"200": _json(ready), "503": _json(ready, "Not ready")}
    metadata = {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": STRING,
            "versions": {"type": "array", "items": STRING},
            "platform": STRING,
            "inputs": {"type": "array", "items": TENSOR_METADATA},
            "outputs": {"type": "array", "items": TENSOR_METADATA},
        },
    }
    header_length = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "description": "bytes of JSON before the binary tensor data (binary extension)",
        "schema": {"type": "integer", "minimum": 0},
    }
    infer_answers = {
        "200": {
            "description": "The outputs (binary ones after the JSON header)",
            "content": {
                "application/json": {"schema": {"$ref": REF + "InferenceResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    server_ready = {"type": "object", "required": ["ready"], "properties": {"ready": BOOLEAN}}
    paths: dict[str, dict[str, Any]] = {
        "/v1/models": {
            "get": _operation(
                "Every enabled model: state, version, last load, routes",
                {"200": _json({"$ref": REF + "ModelList"})},
                "Error",
            )
        },
        "/v1/models/{name}/load": {
            "post": _operation(
                "Load the model's wanted version in this worker now",
                {"200": _json({"$ref": REF + "ModelEntry"})},
                "Error",
                name,
            )
        },
        "/v1/models/{name}/rollout": {
            "post": _operation(
                "Roll out a candidate version beside the served one, on every worker",
                {
                    "200": _json(
                        {"$ref": REF + "Rollout"}, "Started: this worker's rollout, loaded"
                    ),
                    **_errors(
                        {
                            "400": "A field of the body out of its limit (named in `detail`)",
                            "401": "No valid API key (when keys are set)",
                            "404": "The model is not enabled",
                            "409": "Another rollout runs on a worker, or the model cannot take one",
                            "422": "The candidate cannot be loaded (`detail` names `candidate`)",
                        }
                    ),
                },
                "Error",
                name,
                {"schema": {"$ref": REF + "RolloutSpec"}},
            )
        },
        "/v1/models/{name}/rollout/{action}": {
            "post": _operation(
                "Promote, roll back or cancel the running rollout, on every worker",
                {
                    "200": _json({"$ref": REF + "Rollout"}, "Ended: this worker's rollout"),
                    **_errors(
                        {
                            "401": "No valid API key (when keys are set)",
                            "404": "The model is not enabled, or no such action",
                            "409": "No rollout runs here, or another worker ended it first",
                        }
                    ),
                },
                "Error",
                [*name, _path_parameter("action", list(ACTIONS))],
            )
        },
        "/v1/batch/jobs/{job_id}/{name}": {
            "get": _operation(
                "A finished job's scores or rejects (Parquet)",
                {
                    "200": {
                        "description": "The Parquet file",
                        "content": {
                            "application/vnd.apache.parquet": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    }
                },
                "Error",
                [_path_parameter("job_id"), _path_parameter("name", download_names)],
            )
        },
        "/v2": {
            "get": _operation(
                "Server metadata",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["name", "version", "extensions"],
                            "properties": {
                                "name": STRING,
                                "version": STRING,
                                "extensions": {"type": "array", "items": STRING},
                            },
                        }
                    )
                },
                "ProtocolError",
            )
        },
        "/v2/health/live": {
            "get": _operation(
                "Liveness",
                {"200": _json({"type": "object", "properties": {"live": BOOLEAN}})},
                "ProtocolError",
            )
        },
        "/v2/health/ready": {
            "get": _operation(
                "Readiness: every enabled model ready",
                {"200": _json(server_ready), "503": _json(server_ready, "Not ready")},
                "ProtocolError",
            )
        },
    }
    for prefix, parameters in (
        ("/v2/models/{name}", tensor),
        ("/v2/models/{name}/versions/{version}", version),
    ):
        paths[prefix] = {
            "get": _operation(
                "A tensor model's inputs and outputs",
                {"200": _json(metadata)},
                "ProtocolError",
                parameters,
            )
        }
        paths[f"{prefix}/ready"] = {
            "get": _operation("A model's readiness", readiness, "ProtocolError", parameters)
        }
        paths[f"{prefix}/infer"] = {
            "post": _operation(
                "Inference on JSON or binary tensors",
                infer_answers,
                "ProtocolError",
                [*parameters, header_length],
                {"schema": {"$ref": REF + "InferenceRequest"}},
            )
        }
    return paths
