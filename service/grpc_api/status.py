"""The data plane's typed errors (``service.errors.InferenceError``) as gRPC status codes: the
gRPC front door's one rendering of a refusal, as ``InferenceError.answer`` is HTTP's.

| refusal | HTTP | gRPC |
| --- | --- | --- |
| bad input (``RequestInputError``, naming the input and the rule) | 400 | ``INVALID_ARGUMENT`` |
| missing or invalid API key | 401 | ``UNAUTHENTICATED`` |
| unknown model or version (``ModelNotFoundError``) | 404 | ``NOT_FOUND`` |
| queue full (``QueueFullError``) | 429 | ``RESOURCE_EXHAUSTED`` |
| client gone (``ClientGoneError``) | 499 | ``CANCELLED`` |
| not ready, overloaded, draining (``ModelNotReadyError``...) | 503 | ``UNAVAILABLE`` |

A refusal worth retrying carries its hint as the trailing metadata ``retry-after`` (seconds,
as HTTP's ``Retry-After``).
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from service.errors import InferenceError

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}
RETRY_AFTER = "retry-after"


def status_code(error: InferenceError) -> grpc.StatusCode:
    """The gRPC status code of ``error`` (``INTERNAL`` for any status not in the table)."""
    return STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL)


def trailing_metadata(error: InferenceError) -> tuple[tuple[str, str], ...]:
    """``retry-after`` for a refusal worth retrying; nothing otherwise."""
    if error.retry_after_s is None:
        return ()
    return ((RETRY_AFTER, str(error.retry_after_s)),)


async def abort(context: grpc.aio.ServicerContext, error: InferenceError) -> NoReturn:
    """End the call with ``error``'s status code, its message (naming the input, if one) and
    its retry hint."""
    await context.abort(status_code(error), error.summary, trailing_metadata(error))
    raise AssertionError("context.abort returns only by raising")  # for the type checker


class MissingKeyError(InferenceError):
    """No valid ``authorization: Bearer KEY`` metadata while API keys are set (401)."""

    status = 401
    kind = "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "missing or invalid API key: send the metadata `authorization: Bearer KEY` "
            "with a valid API key"
        )
