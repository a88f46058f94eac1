"""The one place where the sidecar's exceptions become gRPC status codes."""

from __future__ import annotations

import grpc

from sidecar import errors

_CODES: tuple[tuple[type[errors.GuardrailError], grpc.StatusCode], ...] = (
    # Most specific first: RequestTooLarge is also an InvalidRequest.
    (errors.RequestTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.PolicyError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotReady, grpc.StatusCode.UNAVAILABLE),
    (errors.AuditUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.StageFailed, grpc.StatusCode.INTERNAL),
)


def code_for(error: errors.GuardrailError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL
