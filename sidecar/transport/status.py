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


# gRPC's own retries (gRFC A6; the client package enables them for UNAVAILABLE) are for a
# sidecar starting or draining, where the next attempt a few ms later is answered. An
# audit trail that cannot be written (disk full, database damaged) will not be fixed in
# 50-500 ms: each automatic retry ran the whole inspection again to be refused again (30
# calls counted 90 refusals in the outside trial). A negative push-back tells the
# channel not to retry; the app still sees UNAVAILABLE and may retry on its own time.
_NO_RETRY = (("grpc-retry-pushback-ms", "-1"),)


def trailers_for(error: errors.GuardrailError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata to send with the status of `error`."""
    return _NO_RETRY if isinstance(error, errors.AuditUnavailable) else ()
