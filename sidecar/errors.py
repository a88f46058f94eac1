"""One exception tree for the whole sidecar.

    GuardrailError                 base; `str(err)` is always safe to show and log
    ├── InvalidRequest             the caller sent something malformed   → INVALID_ARGUMENT
    │   └── RequestTooLarge        over a configured size limit          → RESOURCE_EXHAUSTED
    ├── PolicyError                policy files do not load or validate  → FAILED_PRECONDITION
    ├── ConfigError                settings, keys or models are unusable → FAILED_PRECONDITION
    ├── NotReady                   starting or draining                  → UNAVAILABLE
    │   └── WorkerLost             an inspection worker died mid-request → UNAVAILABLE
    ├── AuditUnavailable           the audit record could not be written → UNAVAILABLE
    ├── Overloaded                 the work queue is full; shed at once  → RESOURCE_EXHAUSTED
    ├── DeadlineExceeded           the caller's deadline passed before
    │                              the work could start (or every caller
    │                              of a batch went while it ran)         → DEADLINE_EXCEEDED
    └── StageFailed                a pipeline stage broke; the policy's
                                   on_error turns it into BLOCK or ALLOW → INTERNAL

The core raises these; only `sidecar.transport.status` turns them into gRPC codes and
only `sidecar.cli` turns them into exit codes. Messages must never contain inspected text:
they name fields, limits and rule ids, not values.
"""

from __future__ import annotations

from dataclasses import dataclass


class GuardrailError(Exception):
    """Base class: every error the sidecar raises on purpose."""


class InvalidRequest(GuardrailError):
    """The request is malformed; the message says which field and why."""


class RequestTooLarge(InvalidRequest):
    """The request exceeds a configured limit; the message names the limit."""


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in one policy file, located as precisely as we can."""

    file: str
    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.reason}"


class PolicyError(GuardrailError):
    """Policy files failed to load; carries every issue found, not just the first."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))

    def __reduce__(self) -> tuple[type[PolicyError], tuple[list[PolicyIssue]]]:
        return (type(self), (self.issues,))  # crosses process boundaries intact


class ConfigError(GuardrailError):
    """The sidecar cannot start with these settings (bad key file, missing model, ...)."""


class NotReady(GuardrailError):
    """The sidecar is not serving yet, or is draining for shutdown."""


class WorkerLost(NotReady):
    """The worker process running this inspection exited; a new one is being started."""


class AuditUnavailable(GuardrailError):
    """The decision could not be recorded, and the policy fails closed (on_error: block)."""


class Overloaded(GuardrailError):
    """More requests are waiting than the sidecar can answer in time: shed, don't queue."""


class DeadlineExceeded(GuardrailError):
    """The caller's deadline passed while the request waited; the work was never started.

    Also what a worker answers for a batch it stopped because all its callers had gone
    (sidecar.abandon): nobody reads it, but every request of a batch gets an outcome."""


class StageFailed(GuardrailError):
    """A pipeline stage raised unexpectedly. The cause is chained, the message is generic."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        super().__init__(f"stage '{stage}' failed")

    def __reduce__(self) -> tuple[type[StageFailed], tuple[str]]:
        return (type(self), (self.stage,))
