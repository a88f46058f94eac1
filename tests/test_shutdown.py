"""`guardrail serve` as a real process: ready on health, drains in-flight calls on SIGTERM."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from tests.conftest import REPO, SERVE, TEST_POLICIES


def wait_for_log(stream: IO[str], message: str, timeout: float = 120,
                 seen: list[dict[str, object]] | None = None) -> dict[str, object]:
    """The first log line saying `message`; the lines before it go to `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("msg") == message:
            return entry  # type: ignore[no-any-return]
        if seen is not None:
            seen.append(entry)
    raise AssertionError(f"no {message!r} log line")


def _logged_at(entry: dict[str, object]) -> float:
    return datetime.datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_sigterm_lets_in_flight_calls_finish_then_exits_zero(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*SERVE,
         "--policies", str(TEST_POLICIES), "--data-dir", str(tmp_path / "data")],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        before: list[dict[str, object]] = []
        serving = wait_for_log(process.stderr, "serving", seen=before)
        address = str(serving["address"])
        # Counted from the start of `serve`, so it covers the whole start, including the
        # front's policy compile while the workers already load (the first line logged
        # is a development key made before that compile). The `serving` record is made
        # just after `ready_after_s` is read, but a busy machine can hand the GIL to
        # another thread in between: 13 ms once, with the suite in two processes. 0.1 s
        # of slack still fails a count that leaves out the compile (~0.4 s here).
        assert before, "a fresh data directory logs its new development keys first"
        assert float(str(serving["ready_after_s"])) >= \
            _logged_at(serving) - _logged_at(before[0]) - 0.1
        channel = grpc.insecure_channel(address)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.GuardrailStub(channel)
        # Long enough to be still in flight when the new call below is refused, on a
        # fast worker too: 43 KB was done in time on spaCy 3.8.7's faster NER, the server
        # had finished draining, and the new call was CANCELLED, not refused.
        text = "John Smith lives in Paris and mails john@example.com. " * 2000
        outcome: dict[str, object] = {}

        def slow_call() -> None:
            try:
                outcome["response"] = stub.InspectPrompt(pb.InspectRequest(text=text), timeout=60)
            except grpc.RpcError as err:
                outcome["error"] = err.code()

        caller = threading.Thread(target=slow_call)
        caller.start()
        time.sleep(0.5)  # the call is now being inspected
        process.send_signal(signal.SIGTERM)
        wait_for_log(process.stderr, "draining", timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GuardrailStub(grpc.insecure_channel(address)).InspectPrompt(
                pb.InspectRequest(text="hello"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        caller.join(timeout=60)
        assert "error" not in outcome
        response = outcome["response"]
        assert isinstance(response, pb.InspectResponse)
        assert response.decision == pb.MODIFY and "john@example.com" not in response.text
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
