"""A short fuzz run through gRPC (scripts/fuzz.py is the long one): every random request
gets a verdict or INVALID_ARGUMENT/RESOURCE_EXHAUSTED, in time, with findings in bounds,
and no stage raises. One call per example, so Hypothesis can shrink a failure."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.conftest import Sidecar
from tests.fuzzing import Call, calls, check, send


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(call=calls())
def test_random_requests_get_answers_within_bounds(sidecar: Sidecar, call: Call) -> None:
    check(call, send(sidecar.stub, call, timeout=30))
