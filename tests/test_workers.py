"""The worker pool through real gRPC: batching, load shedding, deadlines, a worker's death."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.config import Settings
from sidecar.errors import DeadlineExceeded
from sidecar.pipeline import Pipeline
from sidecar.runner import available_cpus, make_runner
from sidecar.types import Inspection
from sidecar.workers import BATCH_TEXT_CHARS, WorkerPool, _Job
from tests.conftest import REPO, SERVE, Sidecar, _ServerThread, make_settings

# Long enough that one inspection keeps the single worker busy for a while.
SLOW_TEXT = "Call John Smith at 212-555-0187 about the invoice. " * 400


def serving(settings: Settings) -> Iterator[tuple[_ServerThread, pb_grpc.GuardrailStub]]:
    """A server on `settings` with a worker pool, and a stub; stopped afterwards."""
    server = _ServerThread(settings, make_runner(settings, Pipeline.from_settings(settings)))
    channel = grpc.insecure_channel(server.running.address)
    try:
        yield server, pb_grpc.GuardrailStub(channel)
    finally:
        channel.close()
        server.stop()


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[_ServerThread, pb_grpc.GuardrailStub]]:
    yield from serving(make_settings(tmp_path_factory.mktemp("workers"), workers=1,
                                     max_queue=4))


def pool_of(server: _ServerThread) -> WorkerPool:
    runner = server.running.runner
    assert isinstance(runner, WorkerPool)
    return runner


def largest_batch(server: _ServerThread) -> int:
    return max(worker.largest_batch for worker in pool_of(server)._workers)


def test_concurrent_requests_get_their_own_answers(
        one_worker: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    """Requests batched together must never get each other's verdicts."""
    server, stub = one_worker
    texts = [f"Ticket for Jane Roe, number {n:06d}" for n in range(30)]

    def call(text: str) -> tuple[str, str]:
        reply = stub.InspectPrompt(pb.InspectRequest(text=text, request_id=text[-6:]),
                                   timeout=60)
        return reply.request_id, reply.text

    with ThreadPoolExecutor(3) as pool:  # below max_queue: none may be shed
        # The slow one first: the short ones arrive while the worker is busy with it.
        answers = list(pool.map(call, [SLOW_TEXT, *texts]))[1:]
    for text, (request_id, redacted) in zip(texts, answers, strict=True):
        assert request_id == text[-6:]
        assert redacted == text.replace("Jane Roe", "<PERSON>")
    # Requests that arrived while the worker was busy went to it together.
    assert largest_batch(server) >= 2


def short_calls(sidecar: Sidecar, count: int) -> list[str]:
    """`count` short prompts sent at once; their answers' text."""
    def short(n: int) -> str:
        reply = sidecar.stub.InspectPrompt(pb.InspectRequest(text=f"Mail j{n}@example.com"),
                                           timeout=60)
        return str(reply.text)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(short, range(count)))


def test_short_requests_never_wait_behind_a_long_one(sidecar: Sidecar) -> None:
    """Two workers, one busy with a long text: short requests sent meanwhile are all
    answered by the other. A request is bound to a worker only when that worker is free,
    never queued behind another worker's batch."""
    long_text = (SLOW_TEXT * 4)[:60 * 1024]  # seconds of NER, within max_text_bytes
    slow = sidecar.stub.InspectPrompt.future(pb.InspectRequest(text=long_text), timeout=120)
    time.sleep(0.3)  # it has reached a worker

    answers = short_calls(sidecar, 6)
    assert not slow.done(), "a short request waited for the long one"
    assert answers == ["Mail <EMAIL_ADDRESS>"] * 6
    assert slow.result().text


def test_two_long_texts_leave_a_worker_for_short_ones(sidecar: Sidecar) -> None:
    """Two workers (long_text_chars 16 KiB here), two long texts sent one after the
    other: the second waits for the first, and short requests sent meanwhile are
    answered by the other worker while both long ones are still pending. Before, the
    two long ones took both workers and the short ones waited for one of them."""
    long_text = (SLOW_TEXT * 2)[:40 * 1024]  # a second or more of inspection each
    first = sidecar.stub.InspectPrompt.future(pb.InspectRequest(text=long_text), timeout=120)
    time.sleep(0.3)  # it has reached a worker
    second = sidecar.stub.InspectPrompt.future(
        pb.InspectRequest(text=long_text.replace("John", "Jane")), timeout=120)
    time.sleep(0.1)  # queued

    answers = short_calls(sidecar, 4)
    assert not first.done() and not second.done(), "a short request waited for a long one"
    assert answers == ["Mail <EMAIL_ADDRESS>"] * 4
    assert "Jane Smith" not in second.result().text and "John Smith" not in first.result().text


_SHORT = st.integers(1, 4096)
_LONG = st.integers(BATCH_TEXT_CHARS // 2, 3 * BATCH_TEXT_CHARS)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.one_of(_SHORT, _SHORT, _LONG), min_size=1, max_size=120),
       batch_max=st.integers(1, 40))
def test_a_batch_of_several_never_holds_more_than_the_batch_bound(
        pool_settings: tuple[Settings, Pipeline], sizes: list[int], batch_max: int) -> None:
    """Whatever waits, batches take it in order, whole; a batch of several requests holds
    at most BATCH_TEXT_CHARS (a long request goes alone), and short ones are never split
    needlessly: each batch is as long as the next request, the count and the bound allow.
    Before: the bound was max_text_bytes (1 MiB), and short calls queued beside a 100 KB
    prompt rode in its batch, answered after 2-3 s of its NER (outside trial)."""
    base, pipeline = pool_settings
    pool = WorkerPool(base.model_copy(update={"batch_max": batch_max}), pipeline.limits, 1)
    loop = asyncio.new_event_loop()
    try:
        jobs = [_Job(Inspection.of_text("x" * size, request_id=str(n)), loop.create_future(),
                     None) for n, size in enumerate(sizes)]
        pool._queue.extend(jobs)
        batches = []
        while pool._queue:
            batches.append(pool._next_batch())
    finally:
        loop.close()
    assert [job for batch in batches for job in batch] == jobs
    for number, batch in enumerate(batches):
        chars = sum(job.inspection.chars for job in batch)
        assert 1 <= len(batch) <= batch_max
        assert len(batch) == 1 or chars <= BATCH_TEXT_CHARS
        if number + 1 < len(batches):
            following = batches[number + 1][0].inspection.chars
            assert len(batch) == batch_max or chars + following > BATCH_TEXT_CHARS


LONG = 16 * 1024  # long_text_chars in the tests below
_ANY_SIZE = st.one_of(st.integers(1, 4096), st.integers(1, 4096),
                      st.integers(LONG + 1, 4 * BATCH_TEXT_CHARS))


@settings(max_examples=300, deadline=None)
@given(count=st.integers(1, 4), events=st.lists(st.one_of(
    st.tuples(st.just("arrive"), _ANY_SIZE),
    st.tuples(st.just("finish"), st.integers(0, 3)),
    st.tuples(st.just("die or revive"), st.integers(0, 3))), max_size=80))
def test_long_texts_never_take_the_last_free_worker(
        pool_settings: tuple[Settings, Pipeline], count: int,
        events: list[tuple[str, int]]) -> None:
    """The pool's dispatch, driven through random arrivals, finished batches and workers
    dying and coming back (the pipes replaced by a recorder). Invariants: a long text is
    sent only while fewer than all living workers but one (at least one) run one; no
    worker is left idle while something it may take waits; no request is sent twice;
    a request overtakes an earlier one only if it is short and that one long; one worker
    takes everything in arrival order. Before round 10 two long texts took both workers
    of a pod and every other caller waited for them."""
    base, pipeline = pool_settings
    pool = WorkerPool(base.model_copy(update={"batch_wait_ms": 0, "long_text_chars": LONG}),
                      pipeline.limits, count)
    loop = asyncio.new_event_loop()
    sent: list[_Job] = []
    arrived: list[_Job] = []

    def is_long(job: _Job) -> bool:
        return job.inspection.chars > LONG

    def limit() -> int:
        return max(1, sum(worker.alive for worker in pool._workers) - 1)

    def running_long(but: object = None) -> int:
        return sum(worker is not but and worker.longest_in_flight > LONG
                   for worker in pool._workers)

    def recorder(worker: Any) -> Callable[[list[_Job]], None]:
        def send(batch: list[_Job]) -> None:
            assert worker.idle and batch
            if any(is_long(job) for job in batch):
                assert running_long(but=worker) < limit()
            worker._in_flight = batch
            sent.extend(batch)
        return send

    for worker in pool._workers:
        worker.alive = True
        worker.send = recorder(worker)  # type: ignore[method-assign]
    try:
        for kind, value in events:
            if kind == "arrive":
                job = _Job(Inspection.of_text("x" * value), loop.create_future(), None)
                arrived.append(job)
                pool._queue.append(job)
            else:
                worker = pool._workers[value % count]
                worker._in_flight = []
                if kind == "die or revive":
                    worker.alive = not worker.alive
            pool._feed()
            waiting = [job for job in pool._queue if not job.future.done()]
            for worker in pool._workers:
                if worker.idle:
                    assert not any(not is_long(job) for job in waiting)
                    assert not any(is_long(job) for job in waiting) or \
                        running_long() >= limit()
    finally:
        loop.close()
    assert len({id(job) for job in sent}) == len(sent)
    order = {id(job): n for n, job in enumerate(sent)}
    for job in arrived:  # none lost: sent, still waiting, or failed (every worker down)
        assert id(job) in order or job in pool._queue or job.future.done()
    for n, earlier in enumerate(arrived):
        for later in arrived[n + 1:]:
            if id(later) not in order or earlier.future.done():
                continue  # not sent; or failed unsent (every worker down)
            if order.get(id(earlier), len(sent)) > order[id(later)]:
                assert is_long(earlier) and not is_long(later)
    if count == 1:
        assert sent == [job for job in arrived if id(job) in order]
    for job in arrived:  # every worker down failed them: read, so asyncio does not warn
        if job.future.done():
            job.future.exception()


def test_a_worker_that_dies_lets_the_kept_one_take_the_long_text_at_once(
        pool_settings: tuple[Settings, Pipeline]) -> None:
    """Two workers, one running a long text, another long text held back for it. The
    busy worker dies: the kept one may now run long texts and takes the waiting one at
    once, not after the replacement has loaded (outside trial 13: 5.4 s later, the kept
    worker idle meanwhile). The pipes are stand-ins; the death goes through the real
    `_on_readable` -> `_lost` path, with a respawn that stays loading throughout."""
    base, pipeline = pool_settings
    reading_end, writing_end = os.pipe()

    class DeadPipe:
        def fileno(self) -> int:
            return reading_end

        def recv(self) -> object:
            raise EOFError

    async def scenario() -> tuple[list[_Job], list[_Job]]:
        loop = asyncio.get_running_loop()
        pool = WorkerPool(base.model_copy(update={"batch_wait_ms": 0,
                                                  "long_text_chars": LONG}),
                          pipeline.limits, 2)
        sent: dict[int, list[_Job]] = {0: [], 1: []}

        def recorder(worker: Any) -> Callable[[list[_Job]], None]:
            def send(batch: list[_Job]) -> None:
                worker._in_flight = batch
                sent[worker.index].extend(batch)
            return send

        for worker in pool._workers:
            worker.alive = True
            worker.send = recorder(worker)  # type: ignore[method-assign]
        dying = pool._workers[0]
        dying.conn, dying._loop = DeadPipe(), loop  # type: ignore[assignment]
        dying.process = type("Exited", (), {"exitcode": -9})()
        restarted = threading.Event()
        dying._respawn = lambda: restarted.wait(30)  # type: ignore[method-assign]
        jobs = [_Job(Inspection.of_text("x" * (LONG + n + 1)), loop.create_future(), None)
                for n in range(2)]
        for job in jobs:
            pool._queue.append(job)
            pool._feed()
        assert sent == {0: [jobs[0]], 1: []}  # the second is held back: worker 1 is kept
        dying._on_readable()  # EOF: the worker died
        for _ in range(3):
            await asyncio.sleep(0)  # callbacks scheduled meanwhile
        with pytest.raises(Exception, match="exited; retry"):
            jobs[0].future.result()
        assert dying.respawning, "the replacement must still be loading"
        taken = list(sent[1])
        restarted.set()
        return sent[0], taken

    try:
        first, second = asyncio.run(scenario())
    finally:
        os.close(reading_end)
        os.close(writing_end)
    assert len(first) == 1 and [job.inspection.chars for job in second] == [LONG + 2]


@pytest.fixture(scope="module")
def pool_settings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Pipeline]:
    settings = make_settings(tmp_path_factory.mktemp("batches"))
    return settings, Pipeline.from_settings(settings)


def test_short_requests_never_ride_in_a_long_requests_batch(
        one_worker: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    """One worker, busy; a long prompt (over BATCH_TEXT_CHARS) and two short ones queue
    behind it. The long one is answered from a batch of its own and the short ones from
    another: they are not held for the long one's NER."""
    server, stub = one_worker
    pool = pool_of(server)
    long_text = (SLOW_TEXT * 4)[:BATCH_TEXT_CHARS + 4096]
    sent = pool.batches
    busy = stub.InspectPrompt.future(pb.InspectRequest(text=SLOW_TEXT), timeout=120)
    deadline = time.monotonic() + 30
    while pool.batches == sent:  # the worker has it (after any gathering wait)
        assert time.monotonic() < deadline, "the first request never reached the worker"
        time.sleep(0.01)
    before = pool.batch_sizes.copy()
    long_call = stub.InspectPrompt.future(pb.InspectRequest(text=long_text), timeout=120)
    time.sleep(0.05)  # queued in this order
    shorts = [stub.InspectPrompt.future(pb.InspectRequest(text=f"Mail j{n}@example.com"),
                                        timeout=120) for n in range(2)]
    assert [future.result().text for future in shorts] == ["Mail <EMAIL_ADDRESS>"] * 2
    assert long_call.result().text and busy.result().text
    sizes = pool.batch_sizes - before
    assert sizes == {1: 1, 2: 1}, f"batches by size: {dict(sizes)}"


def test_full_queue_sheds_load_with_resource_exhausted(
        one_worker: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    """One slow request holds the worker (max_queue=4); of 15 short ones sent meanwhile,
    three may wait and the rest are refused at once. (The short ones are cheap, so the
    test does not pay for a queue full of NER.)"""
    server, stub = one_worker
    pool = pool_of(server)
    slow = stub.InspectPrompt.future(pb.InspectRequest(text=SLOW_TEXT), timeout=120)
    deadline = time.monotonic() + 30
    while pool.load().queued < 1:  # admitted: it is the one outstanding request
        assert time.monotonic() < deadline, "the slow request never arrived"
        time.sleep(0.01)
    futures = [slow, *(stub.InspectPrompt.future(pb.InspectRequest(
        text=f"Mail j{n}@example.com"), timeout=120) for n in range(15))]
    codes, details = [], []
    for future in futures:
        codes.append(future.code())
        details.append(future.details() or "")
    assert all("max_queue=4" in detail for code, detail in zip(codes, details, strict=True)
               if code == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
    assert codes.count(grpc.StatusCode.OK) >= 4
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_a_call_whose_deadline_passes_in_the_queue_is_not_run(
        one_worker: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    _, stub = one_worker
    busy = stub.InspectPrompt.future(pb.InspectRequest(text=SLOW_TEXT), timeout=120)
    time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as caught:
        stub.InspectPrompt(pb.InspectRequest(text="Jane Roe"), timeout=0.01)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert busy.result().decision == pb.MODIFY


def test_deadline_already_past_is_refused_before_any_work(
        one_worker: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    server, _ = one_worker
    pool = pool_of(server)

    async def late() -> None:
        await pool.run(Inspection.of_text("Jane Roe"), deadline=time.monotonic() - 1)

    with pytest.raises(DeadlineExceeded):
        asyncio.run_coroutine_threadsafe(late(), server.loop).result(timeout=30)


def test_a_killed_worker_fails_its_requests_retryably_and_is_replaced(
        one_worker: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    server, stub = one_worker
    worker = pool_of(server)._workers[0]
    old_pid = worker.process.pid
    busy = stub.InspectPrompt.future(pb.InspectRequest(text=SLOW_TEXT), timeout=120)
    time.sleep(0.1)
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as caught:
        busy.result()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "exited; retry" in caught.value.details()
    deadline = time.monotonic() + 90
    while True:  # a new worker loads its model, then serves again
        call = stub.InspectPrompt.future(pb.InspectRequest(text="Mail jane@example.com"),
                                         timeout=30)
        if call.code() == grpc.StatusCode.OK:
            break
        assert call.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.5)
    assert call.result().text == "Mail <EMAIL_ADDRESS>"
    assert worker.process.pid != old_pid


def test_a_worker_runs_numpys_blas_on_one_thread(
        one_worker: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    """A worker's NER multiplies with numpy's OpenBLAS, which starts a thread per core
    unless told otherwise; those threads spin between products (batches of 8 cost 3.82
    CPU-ms a document instead of 2.18). The worker must start with one."""
    server, _ = one_worker
    pid = pool_of(server)._workers[0].process.pid
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"OPENBLAS_NUM_THREADS=1" in environment


def test_every_guardrail_command_runs_numpys_blas_on_one_thread() -> None:
    """Not only workers: the front with `--workers 0`, `inspect` and `policy test` run NER
    in the command's own process (outside trial: 18 CPU-ms a request with --workers 0,
    11 with one BLAS thread). The `guardrail` entry point sets it before numpy loads:
    after it, numpy starts no BLAS thread."""
    script = ("import os, sys\n"
              "os.environ.pop('OPENBLAS_NUM_THREADS', None)\n"
              "from sidecar.cli import main\n"
              "assert 'numpy' not in sys.modules, 'numpy loaded before main()'\n"
              "main([])\n"
              "import numpy\n"
              "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["1", "1"]


@pytest.mark.parametrize(("cpu_max", "expected_cap"), [
    ("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1),
    ("400000 100000\n", 4)])
def test_worker_count_respects_the_cgroup_cpu_quota(tmp_path: Path, cpu_max: str,
                                                    expected_cap: int | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    usable = len(os.sched_getaffinity(0))
    expected = usable if expected_cap is None else min(usable, expected_cap)
    assert available_cpus(tmp_path) == expected
    assert available_cpus(tmp_path / "missing") == usable


def test_with_no_worker_left_requests_and_reloads_fail_at_once(tmp_path: Path) -> None:
    """A pool whose every worker is down (its restart failed) answers UNAVAILABLE at once
    and lets a policy reload finish, rather than leaving either waiting forever."""
    from sidecar.errors import WorkerLost

    settings = make_settings(tmp_path, workers=1)
    pipeline = Pipeline.from_settings(settings)
    pool = WorkerPool(settings, pipeline.limits, 1)  # never started: no worker is alive

    async def scenario() -> None:
        with pytest.raises(WorkerLost):
            await asyncio.wait_for(pool.run(Inspection.of_text("Jane Roe")), timeout=5)
        await asyncio.wait_for(pool.swap(pipeline.policies, settings.policies), timeout=5)

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def gathering_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[_ServerThread, pb_grpc.GuardrailStub]]:
    """Two workers with a long gathering wait, so that whether a wait happens shows in
    batch counts however slow the machine is."""
    yield from serving(make_settings(tmp_path_factory.mktemp("gathering"), workers=2,
                                     batch_wait_ms=250))


def test_a_lone_caller_never_waits_for_a_batch(
        gathering_pool: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    server, stub = gathering_pool
    pool = pool_of(server)
    gathers = pool.gathers
    for n in range(12):
        reply = stub.InspectPrompt(pb.InspectRequest(text=f"Mail j{n}@example.com"),
                                   timeout=60)
        assert reply.text == "Mail <EMAIL_ADDRESS>"
    assert pool.gathers == gathers


def test_callers_in_a_closed_loop_are_gathered_into_batches(
        gathering_pool: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    """Eight callers, each sending its next request when its answer comes: without
    gathering, a worker that had answered a batch took the first comer alone (batches
    went 1, 7, 1, 7...), and a request alone costs ~30% more CPU than in a batch."""
    server, stub = gathering_pool
    pool = pool_of(server)
    before = pool.batch_sizes.copy()

    def caller(n: int) -> list[str]:
        return [str(stub.InspectPrompt(pb.InspectRequest(
            text=f"Ticket for Jane Roe, number {n}{turn:05d}"), timeout=60).text)
            for turn in range(10)]

    with ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(caller, range(8)))
    assert [text for texts in answers for text in texts] == [
        f"Ticket for <PERSON>, number {n}{turn:05d}" for n in range(8) for turn in range(10)]
    sizes = pool.batch_sizes - before
    # Without gathering: 51 of 58 batches held one request; with it, 7 of 31 (the first
    # few, before the running mean of batch sizes shows the load).
    assert sizes[1] <= 20, f"{sizes[1]} batches of one request: {sorted(sizes.items())}"
    assert sum(sizes.values()) <= 40, f"batches averaged under 2: {sorted(sizes.items())}"


def test_after_a_burst_a_lone_caller_waits_once_at_most(
        gathering_pool: tuple[_ServerThread, pb_grpc.GuardrailStub]) -> None:
    """Found by an outside trial: the running mean fell only as batches were sent, so
    after a burst the next ~9 lone requests each waited the whole gathering time."""
    server, stub = gathering_pool

    def caller(n: int) -> None:
        for turn in range(6):
            stub.InspectPrompt(pb.InspectRequest(text=f"Ticket {n} {turn}"), timeout=60)

    with ThreadPoolExecutor(8) as threads:
        list(threads.map(caller, range(8)))
    pool = pool_of(server)
    gathers = pool.gathers
    for n in range(8):
        stub.InspectPrompt(pb.InspectRequest(text=f"Mail j{n}@example.com"), timeout=60)
    assert pool.gathers - gathers <= 1


MARKER = "GUARDRAIL_TEST_MARKER"


def _carrying(value: str) -> list[int]:
    """Processes whose environment holds MARKER=value (children inherit it)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if f"{MARKER}={value}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


def test_a_start_that_fails_after_the_workers_spawned_leaves_none_behind(
        tmp_path: Path) -> None:
    """Workers start as soon as the policy snapshot exists, before the front has compiled
    it: a policy that then fails to compile ends the start with exit 1 and its message,
    and no worker process outlives it (they inherit the marker looked for here)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "bad.yaml").write_text(
        "name: bad\ncontent:\n  rules:\n    - id: lookahead\n      action: block\n"
        "      patterns: ['secret(?=s)']\n")
    value = secrets.token_hex(8)
    started = subprocess.run(
        [*SERVE, "--workers", "2", "--policies", str(policies), "--data-dir",
         str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, MARKER: value}, check=False)
    assert started.returncode == 1, started.stderr  # a policy that does not compile
    assert "bad.yaml" in started.stderr and "Traceback" not in started.stderr
    assert _carrying(value) == [], "processes left behind"


def _front_with_loading_workers(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """`guardrail serve` with two workers, once both exist (they load for seconds then,
    the front still compiles); the marker value its processes carry."""
    value = secrets.token_hex(8)
    front = subprocess.Popen(
        [*SERVE, "--workers", "2", "--data-dir", str(tmp_path / "data")], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, MARKER: value})
    deadline = time.monotonic() + 60
    while len(_carrying(value)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)  # the front and both workers
    if len(_carrying(value)) < 3:
        front.kill()
        raise AssertionError("the workers never started")
    return front, value


def test_workers_of_a_front_killed_while_they_load_exit_quietly(tmp_path: Path) -> None:
    """The front killed (SIGKILL, or SIGTERM before it can drain) while its workers still
    load: each worker finds nobody to tell it is ready and exits without a traceback
    (found by an outside trial: BrokenPipeError from the worker's 'ready')."""
    front, value = _front_with_loading_workers(tmp_path)
    try:
        # Past multiprocessing's own hand-over (a front killed within its first
        # milliseconds leaves the child's bootstrap an EOFError we cannot catch).
        time.sleep(0.5)
        front.kill()
        front.wait(timeout=30)
        assert front.stderr is not None
        output = front.stderr.read()  # to EOF: until the last worker has exited
    finally:
        front.kill()
    assert "Traceback" not in output and "BrokenPipeError" not in output, output
    deadline = time.monotonic() + 30
    while _carrying(value) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _carrying(value) == []


def test_a_sigterm_while_the_workers_load_stops_cleanly(tmp_path: Path) -> None:
    """SIGTERM while the front still compiles its policies and its workers load (found by
    the outside trial: the front died with -15 and left both workers loading, each then
    printing a traceback): it stops as for a SIGTERM while serving, exit 0, nobody left."""
    front, value = _front_with_loading_workers(tmp_path)
    try:
        front.send_signal(signal.SIGTERM)
        code = front.wait(timeout=60)
        assert front.stderr is not None
        output = front.stderr.read()
    finally:
        front.kill()
    assert code == 0, output
    assert '"stopped"' in output and "Traceback" not in output, output
    assert '"serving"' not in output  # it stopped before it served
    assert _carrying(value) == []
