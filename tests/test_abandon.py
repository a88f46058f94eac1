"""A batch whose callers have all gone is not inspected to the end (sidecar.abandon).

A 1 MiB request costs a worker ~15-50 s of CPU; before round 9 a caller whose deadline
passed, or who hung up, got its answer from gRPC at once while the worker went on for
nobody, and the next callers waited behind it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from sidecar import abandon
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.cache import MessageCache
from sidecar.errors import DeadlineExceeded, GuardrailError
from sidecar.pipeline import Pipeline
from sidecar.types import Direction, Inspection, Message, Verdict
from tests.conftest import REPO, SERVE, make_settings
from tests.test_shutdown import wait_for_log

TEXT = "Call Jane Doe on +1 212 555 0100 or mail jane@example.com. " * 3


@pytest.fixture
def pipeline(shipped: Pipeline) -> Iterator[Pipeline]:
    """The shipped policies' pipeline (shared), with a message cache of its own."""
    shipped.cache = MessageCache(64)
    yield shipped
    shipped.cache = None


def _timeless(outcomes: list[Verdict | GuardrailError]) -> list[object]:
    """The outcomes without the time the routing tags were issued (and signed) at."""
    return [dataclasses.replace(v, routing_tags={
        k: tag for k, tag in v.routing_tags.items() if k not in ("issued_at", "signature")})
        if isinstance(v, Verdict) else v for v in outcomes]


def _gone_at(point: int) -> Callable[[], bool]:
    """An answer to "have the callers gone?" that is yes from the `point`-th question."""
    asked = [0]

    def gone() -> bool:
        asked[0] += 1
        return asked[0] >= point

    return gone


def _checks_of(pipeline: Pipeline, inspection: Inspection) -> int:
    """How many times one inspection asks whether its callers have gone."""
    asked = [0]

    def count() -> bool:
        asked[0] += 1
        return False

    with abandon.watching(count):
        pipeline.run_batch([inspection])
    return asked[0]


@pytest.mark.parametrize("message", ["prompt", "chat"])
def test_stopping_at_any_point_leaves_nothing_behind(pipeline: Pipeline, message: str) -> None:
    """Stopped at each point it can stop, the inspection raises Abandoned (no verdict,
    so no audit record), the message cache holds only what a whole inspection caches
    (a stage that finished for a message; never a stage's part), and the next
    inspection of the same request is exactly what it is when nothing was ever stopped:
    spaCy's memory zone, the cache and Presidio's timeout counter are left in order."""
    inspection = Inspection.of_text(TEXT) if message == "prompt" else Inspection(
        direction=Direction.PROMPT, chat=True,
        messages=(Message("system", "Be brief."), Message("user", TEXT)))
    pipeline.cache = MessageCache(64)
    expected = pipeline.run_batch([inspection])
    whole = pipeline.cache.entries()
    pipeline.cache = MessageCache(64)
    points = _checks_of(pipeline, inspection)
    assert points >= 4  # stages, NER pass, texts, recognizers, phone candidates
    # The first points (stages, NER, texts, recognizers), then every 20th (phone
    # candidates: dozens) and the last.
    for stop_at in sorted({*range(1, min(points, 12) + 1), *range(20, points, 20), points}):
        pipeline.cache = MessageCache(64)
        with abandon.watching(_gone_at(stop_at)), pytest.raises(abandon.Abandoned):
            pipeline.run_batch([inspection])
        assert pipeline.cache.entries().items() <= whole.items()
        assert _timeless(pipeline.run_batch([inspection])) == _timeless(expected)


def test_only_a_batchs_inspection_stops_never_a_reload(tmp_path: Path) -> None:
    """The flag a gone batch set stays set until the front sends its next message: a
    policy reload (which warms the new policies up by inspecting a sample through the
    same code) must not be stopped by it, nor anything else outside a batch (while the
    question was asked process-wide, a reload right after a stopped batch raised
    Abandoned and ended the worker)."""
    from sidecar.workers import _reload, inspect_batch

    settings = make_settings(tmp_path, policies=REPO / "policies")
    pipeline = Pipeline.from_settings(settings)  # its own: the reload replaces policies
    stopped = inspect_batch(pipeline, [Inspection.of_text(TEXT)], 0, lambda: True)
    assert [type(outcome) for outcome in stopped] == [DeadlineExceeded]
    abandon.check()  # outside a batch: never stops
    assert _reload(pipeline, settings, REPO / "policies", 0) is None
    [verdict] = inspect_batch(pipeline, [Inspection.of_text(TEXT)], 0, lambda: False)
    assert isinstance(verdict, Verdict) and verdict.findings


@dataclasses.dataclass
class _Served:
    process: subprocess.Popen[str]
    stub: pb_grpc.GuardrailStub

    def stopped_batch(self) -> dict[str, object]:
        """The next "batch stopped" line the worker logs (each test waits for its own)."""
        assert self.process.stderr is not None
        return wait_for_log(self.process.stderr, "batch stopped: its callers have gone",
                            timeout=60)

    def answers_at_once(self) -> None:
        answer = self.stub.InspectPrompt(pb.InspectRequest(text="mail jane@example.com"),
                                         timeout=10)
        assert [f.entity_type for f in answer.findings] == ["EMAIL_ADDRESS"]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    """One real `guardrail serve` with one worker and max_queue 4, for the scenarios
    below (one server for all: each starts with the worker idle and leaves it so)."""
    data = tmp_path_factory.mktemp("abandon") / "data"
    process = subprocess.Popen(
        [*SERVE, "--policies", str(REPO / "policies"), "--data-dir", str(data)],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GUARDRAIL_WORKERS": "1", "GUARDRAIL_MAX_QUEUE": "4"})
    assert process.stderr is not None
    try:
        address = str(wait_for_log(process.stderr, "serving")["address"])
        # The worker fills spaCy's tokenizer cache while idle, then says so; the scenarios
        # below then run on a worker as it serves after its first second or so.
        assert wait_for_log(process.stderr, "worker finished its idle work")["worker"] == 0
        yield _Served(process, pb_grpc.GuardrailStub(grpc.insecure_channel(address)))
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["deadline", "hang-up"])
def test_a_gone_callers_megabyte_does_not_hold_the_worker(one_worker: _Served,
                                                          how: str) -> None:
    """One worker; a caller sends 1 MB of digit-dense text and goes: its deadline passes
    after 1 s, or it cancels the call. The worker stops (logging so), and the next
    caller is answered at once. Before round 9 it waited out the whole megabyte (this
    scenario against the previous commit: the next call answered after 23.5 s; 2.8 s
    with the stop, counted from the heavy call's start)."""
    heavy = pb.InspectRequest(text=(" -0" * 400_000)[:1_000_000])
    if how == "deadline":
        with pytest.raises(grpc.RpcError) as raised:
            one_worker.stub.InspectPrompt(heavy, timeout=1.0)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        call = one_worker.stub.InspectPrompt.future(heavy)
        with pytest.raises(grpc.FutureTimeoutError):
            call.result(timeout=1.0)
        call.cancel()
    assert one_worker.stopped_batch()["batch"] == 1
    one_worker.answers_at_once()


@pytest.mark.slow
def test_callers_who_went_while_queued_leave_the_queue(one_worker: _Served) -> None:
    """One worker busy with a long request whose caller waits; eight callers queue
    behind it and hang up; a ninth must be queued, not refused: the gone callers'
    requests stayed in the queue until a worker was free and counted against
    `max_queue` (outside trial 12: 256 gone callers, then RESOURCE_EXHAUSTED). The long
    caller waits 4 s (its text would take the worker 6-20 s), then its deadline stops it
    and the ninth is answered."""
    import threading

    stub = one_worker.stub
    long_outcome: list[grpc.StatusCode] = []

    def long_call() -> None:
        try:
            stub.InspectPrompt(pb.InspectRequest(text=(" -0" * 70_000)[:200_000]), timeout=4)
            long_outcome.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            long_outcome.append(err.code())

    caller = threading.Thread(target=long_call)
    caller.start()
    time.sleep(1.0)  # the worker has the long request
    for number in range(8):
        call = stub.InspectPrompt.future(pb.InspectRequest(text=f"hi {number}"))
        time.sleep(0.05)
        call.cancel()
    answer = stub.InspectPrompt(pb.InspectRequest(text="mail jane@example.com"), timeout=120)
    assert [f.entity_type for f in answer.findings] == ["EMAIL_ADDRESS"]
    caller.join(timeout=120)
    assert long_outcome == [grpc.StatusCode.DEADLINE_EXCEEDED]  # waited until it went
    assert one_worker.stopped_batch()["batch"] == 1


@pytest.mark.slow
def test_a_gateway_client_that_hangs_up_stops_its_inspection_and_its_model_call(
        tmp_path: Path) -> None:
    """Through the OpenAI-compatible gateway (one worker): a client sends 1 MB of
    digit-dense text and hangs up after 1 s. aiohttp used to let the handler run on
    (its `handler_cancellation` is off by default): the worker inspected the megabyte
    for nobody, and the prompt, allowed, then went to the model anyway."""
    import openai

    from tests.gateway import RecordingUpstream, gateway_sidecar

    upstream = RecordingUpstream()
    try:
        with gateway_sidecar(tmp_path, upstream, workers=1, max_text_bytes=1 << 20,
                             upstream_timeout=30.0) as running:
            client = openai.OpenAI(base_url=running.base_url, api_key="sk-test",
                                   max_retries=0)
            heavy = (" -0" * 400_000)[:1_000_000]
            with pytest.raises(openai.APITimeoutError):
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": heavy}], timeout=1.0)
            answer = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hello there"}],
                timeout=10.0)
            assert answer.choices[0].message.content == "You said: hello there"
            assert [r.json["messages"][-1]["content"] for r in upstream.received] == [
                "hello there"]
    finally:
        upstream.stop()
