"""A pool of worker processes, each with its own pipeline and spaCy model.

Why processes: spaCy and Presidio are CPU-bound Python and hold the GIL, so threads
cannot use a second core. Why one front process dispatching to them, rather than several
servers sharing the port with SO_REUSEPORT: the kernel balances *connections*, and an
app usually holds one gRPC channel, i.e. one connection: every request would land on the
same server. The front process does only the gRPC work and hands requests on.

Batching needs no timer: each worker has at most one batch in flight, and requests that
arrive while every worker is busy wait in one queue; the first worker to become idle takes
them together as its next batch (up to `batch_max`), where the PII stage runs them through
spaCy's `nlp.pipe` in one pass. A lone request is sent at once; under load, batches grow
by themselves.

Gathering. Callers in a closed loop (an app's request threads, a benchmark) send their
next requests as their answers come back, so a worker that answers a batch of eight is
idle again before the eight come back, and would take the first alone: batches went
1, 7, 1, 7, ... (145 of 236 batches held one request at 16 callers on the PII corpus),
and a request costs a worker ~30% more CPU alone than in a batch of eight. So the pool
keeps a running mean of its batch sizes, and while that is 2 or more (the load comes in
bursts), an idle worker that finds fewer requests waiting than the mean waits up to
`batch_wait_ms` for more before it takes what is there. A lone caller, or light load,
keeps the mean near one and is served at once; a wait that gathers nobody ends the
burst (the mean goes back to one), so after a burst one request waits, not the next
ten.

A worker that dies (out of memory, a crash in native code) fails only the batch it held
(UNAVAILABLE, retryable) and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sidecar import abandon
from sidecar.aio import settle
from sidecar.config import Settings
from sidecar.errors import (
    ConfigError,
    DeadlineExceeded,
    GuardrailError,
    Overloaded,
    StageFailed,
    WorkerLost,
)
from sidecar.logs import error_frames
from sidecar.pipeline import Limits, Pipeline
from sidecar.policy.store import PolicySet
from sidecar.runner import Load
from sidecar.types import Inspection, Verdict

log = logging.getLogger(__name__)
Outcome = Verdict | BaseException
_DONE = object()  # what next() gives for an exhausted iterator of idle steps


@dataclass(frozen=True, slots=True)
class _Job:
    inspection: Inspection
    future: asyncio.Future[Verdict]
    deadline: float | None


@dataclass(frozen=True, slots=True)
class _Reload:
    """Switch the worker to the policy snapshot at `directory` (between two batches)."""

    directory: str
    future: asyncio.Future[None]


# How much text may wait for a worker by default, as a multiple of the request limit.
QUEUED_TEXT_FACTOR = 16
# Most characters a batch of several requests holds. A batch is answered as a whole, so a
# short request that rode in a long one's batch waited for all of it: an outside trial
# saw short calls queued beside 100 KB prompts take 2-3 s instead of ~30 ms. Batching
# pays off for short requests (a spaCy pass reads 16 KiB at most anyway, NER_PASS_CHARS),
# and 32 requests of 2 KiB still fit; a longer request goes alone.
BATCH_TEXT_CHARS = 64 * 1024


class WorkerPool:
    """Worker processes driven from the event loop: no feeder threads, no locks.

    Requests wait in one queue, in arrival order, and are bound to a worker only when it
    is idle: it then takes everything waiting (up to `batch_max`) as its next batch. So a
    short request never waits behind one worker's long batch while another worker is
    free (queues bound at arrival, least-loaded first, put every other request of a
    burst behind it).

    One worker is kept for shorter texts (`long_text_chars`): with two workers or more,
    a text longer than that is taken only while fewer than all living workers but one
    run one; otherwise it waits, in its place, and idle workers take the shorter
    requests behind it. A long text costs seconds (1 MiB: 15-50 s of one core), so
    without this two of them took both workers of a 2-CPU pod and every other caller
    waited for them. The price: long texts run one at a time there.

    Each worker's pipe is watched with `loop.add_reader`; a batch is written only when
    the worker is idle (so it is blocked reading and drains the pipe at once), and the
    answer is read when the pipe turns readable. Two thread hand-offs per request cost
    more than the pipe itself (measured: ~0.9 ms against ~0.2 ms).
    """

    def __init__(self, settings: Settings, limits: Limits, count: int) -> None:
        self.settings = settings
        # Checked in the front process, so an oversized request is refused before it is
        # copied to a worker.
        self.limits = limits
        self.max_queue = settings.max_queue
        self._queue: deque[_Job] = deque()
        self._typical_batch = 1.0  # running mean of batch sizes (gathering)
        self.gathers = 0  # gathering waits started
        self._gather_until: float | None = None  # loop time the current wait ends
        self.batch_sizes: Counter[int] = Counter()  # batches sent, by size
        # The same as plain counts: metrics read them from another thread, where walking
        # the Counter while the loop adds a size would raise.
        self.batches = 0
        self.batched_requests = 0
        self._workers = [_Worker(settings, index, self._feed) for index in range(count)]

    @property
    def size(self) -> int:
        return len(self._workers)

    def _outstanding(self) -> int:
        return len(self._queue) + sum(worker.in_flight for worker in self._workers)

    def load(self) -> Load:
        return Load(self._outstanding(), len(self._workers),
                    sum(worker.alive for worker in self._workers),
                    sum(worker.restarts for worker in self._workers),
                    self.batches, self.batched_requests)

    def spawn(self) -> None:
        """Start every worker process not started yet, without waiting for it.

        `guardrail serve` calls this as soon as the policy snapshot exists, so the workers
        load spaCy while the front compiles its own policies, opens the audit trail and
        binds its ports (start to serving: 6.2 -> 5.6 s, median of six alternating starts).
        """
        for worker in self._workers:
            if worker.process is None:
                worker.spawn()

    def start(self) -> None:
        """Start every worker and wait until all have loaded and warmed their models."""
        try:
            self.spawn()
            for worker in self._workers:
                worker.await_ready()
        except BaseException:
            self.terminate()
            raise

    def terminate(self) -> None:
        """Kill every worker at once (a start that failed; nothing is in flight)."""
        for worker in self._workers:
            worker.terminate()

    async def run(self, inspection: Inspection, deadline: float | None = None) -> Verdict:
        self.limits.check(inspection)
        waiting = self._outstanding()
        if waiting >= self.max_queue:
            raise Overloaded(f"{waiting} requests already waiting (max_queue={self.max_queue});"
                             " retry with backoff")
        # The queue holds whole texts in the front process: bound their sum, not only
        # their count (256 queued 1 MiB prompts held ~0.5 GiB).
        queued = sum(job.inspection.chars for job in self._queue)
        budget = self.settings.max_queued_bytes or \
            QUEUED_TEXT_FACTOR * self.settings.max_text_bytes
        if self._queue and queued + inspection.chars > budget:
            raise Overloaded(f"{queued} characters of text already waiting (at most "
                             f"{budget}: GUARDRAIL_MAX_QUEUED_BYTES); retry with backoff")
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the call's deadline passed before it could be run")
        job = _Job(inspection, asyncio.get_running_loop().create_future(), deadline)
        self._queue.append(job)
        self._feed()
        try:
            return await job.future
        finally:
            if job.future.cancelled():  # the caller went (deadline, hang-up) while queued
                self._forget(job)

    def _forget(self, job: _Job) -> None:
        """Take a gone caller's job out of the queue: waiting, it counted against
        `max_queue` and the queued-text budget, and living callers were refused for it
        (outside trial 12: 256 callers that had hung up, and the next call got
        RESOURCE_EXHAUSTED while one long request ran)."""
        for index, queued in enumerate(self._queue):
            if queued is job:
                del self._queue[index]
                return

    async def swap(self, policies: PolicySet, snapshot: Path) -> None:
        """Move every worker to a validated snapshot. Batches already sent finish on the
        old policies; a worker reloads before it takes its next batch, so requests
        dispatched after this see the new ones."""
        loop = asyncio.get_running_loop()
        waits = []
        for worker in self._workers:
            # A worker started later (a replacement) must load this snapshot, not the one
            # the pool started with (which may even have been pruned by now).
            worker.settings = worker.settings.model_copy(update={"policies": snapshot})
            waits.append(worker.reload(_Reload(str(snapshot), loop.create_future())))
        self._feed()
        results = await asyncio.gather(*waits, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.error("a worker could not load a validated policy snapshot",
                      extra={"workers_failed": len(failed),
                             "error_type": type(failed[0]).__name__})

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, worker.shutdown)
                               for worker in [w for w in self._workers if w.detach()]))

    def _feed(self) -> None:
        """Give every idle worker its pending reload or the next batch from the queue."""
        for worker in self._workers:
            if not worker.idle or worker.send_reload():
                continue
            if self._queue and self._gathering():
                continue
            batch = self._next_batch(long_allowed=self._long_allowed())
            if batch:
                self._typical_batch = 0.8 * self._typical_batch + 0.2 * len(batch)
                self.batch_sizes[len(batch)] += 1
                self.batches += 1
                self.batched_requests += len(batch)
                worker.send(batch)
        if self._queue and not any(worker.alive or worker.respawning
                                   for worker in self._workers):
            while self._queue:  # no worker is left to run them
                settle(self._queue.popleft().future,
                       WorkerLost("every inspection worker is down; retry"))

    def _gathering(self) -> bool:
        """Whether idle workers should wait a little longer for callers' next requests
        (see "Gathering" in the module docstring); schedules the end of the wait. One
        wait for the pool, however many workers are idle during it."""
        wait = self.settings.batch_wait_ms / 1000
        if wait <= 0 or self._typical_batch < 2 or len(self._queue) >= self._typical_batch:
            self._gather_until = None
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._gather_until is None:
            self._gather_until = now + wait
            self.gathers += 1
            loop.call_at(self._gather_until, self._feed)
        if now < self._gather_until:
            return True
        self._gather_until = None
        if len(self._queue) <= 1:
            self._typical_batch = 1.0  # the wait gathered nobody: the burst is over
        return False

    def _long(self, chars: int) -> bool:
        return 0 < self.settings.long_text_chars < chars

    def _long_allowed(self) -> bool:
        """Whether an idle worker may take a long text now: not while all living workers
        but one already run one (at least one may, so a lone worker takes everything)."""
        if self.settings.long_text_chars <= 0:
            return True
        alive = sum(worker.alive for worker in self._workers)
        running = sum(self._long(worker.longest_in_flight) for worker in self._workers)
        return running < max(1, alive - 1)

    def _next_batch(self, long_allowed: bool = True) -> list[_Job]:
        """What waits, in order, up to `batch_max` requests and `BATCH_TEXT_CHARS`
        characters in all (`max_text_bytes` if lower), at least one request: a worker's
        peak memory is that of the largest request it may get, not of 32 of them at once,
        and a short request never waits for a long one's pass. Without `long_allowed`,
        long texts are passed over and keep their places (see the class docstring)."""
        now = time.monotonic()
        batch: list[_Job] = []
        passed_over: list[_Job] = []
        chars = 0
        bound = min(self.settings.max_text_bytes, BATCH_TEXT_CHARS)
        while self._queue and len(batch) < self.settings.batch_max:
            job = self._queue.popleft()
            if job.future.done():
                continue  # the caller went away (cancelled call)
            if job.deadline is not None and now >= job.deadline:
                job.future.set_exception(DeadlineExceeded(
                    "the call's deadline passed while it waited for a worker"))
                continue
            if not long_allowed and self._long(job.inspection.chars):
                passed_over.append(job)
                continue
            size = job.inspection.chars
            if batch and chars + size > bound:
                self._queue.appendleft(job)  # the next batch starts with it
                break
            batch.append(job)
            chars += size
        self._queue.extendleft(reversed(passed_over))
        return batch


class _Worker:
    """One worker process, fed by the pool from the event loop of the front process."""

    def __init__(self, settings: Settings, index: int, on_idle: Callable[[], None]) -> None:
        self.settings = settings
        self.index = index
        self._on_idle = on_idle
        self.process: Any = None  # multiprocessing.context.SpawnProcess
        self.conn: Connection | None = None
        # Shared with the process: set when every caller of the batch it inspects has
        # gone (sidecar.abandon); cleared before every message. Only the front writes.
        self.abandoned: Any = None
        self.alive = False
        self.respawning = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: list[_Job] | _Reload = []
        self._reload: _Reload | None = None
        self.largest_batch = 0
        self.largest_batch_chars = 0
        self.restarts = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) if isinstance(self._in_flight, list) else 0

    @property
    def longest_in_flight(self) -> int:
        """Characters of the longest text in the batch this worker runs (0: none)."""
        held = self._in_flight
        if not isinstance(held, list):
            return 0
        return max((job.inspection.chars for job in held), default=0)

    @property
    def idle(self) -> bool:
        return self.alive and not self._in_flight

    # -- process life (blocking: called off the event loop) --------------------------

    def spawn(self) -> None:
        # spawn, not fork: forking a process that runs grpc's threads is unsafe.
        context = multiprocessing.get_context("spawn")
        # A worker is one core's worth of inspection: its NER multiplies matrices with
        # numpy's OpenBLAS (sidecar.pii.nlp.matmul_with_numpy), which otherwise starts a
        # thread per core that spins between products (+75% CPU on batches of 8). The
        # variable is read when the worker loads numpy; a spawned process takes the
        # parent's environment. An operator's own setting is kept.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        parent_end, child_end = context.Pipe()
        self.abandoned = context.RawValue("b", 0)
        self.process = context.Process(
            target=worker_main, args=(self.settings, self.index, child_end, self.abandoned),
            name=f"guardrail-worker-{self.index}", daemon=True)
        self.process.start()
        child_end.close()  # so that the worker's exit shows here as EOF
        self.conn = parent_end

    def await_ready(self) -> None:
        assert self.conn is not None
        try:
            status, error = self.conn.recv()
        except (EOFError, OSError):
            raise ConfigError(f"worker {self.index} exited while starting "
                              f"(exit code {self.process.exitcode})") from None
        if status != "ready":
            raise error
        self.alive = True

    def terminate(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join()

    def shutdown(self) -> None:
        """Ask the worker to exit (it finishes nothing: in-flight calls were drained)."""
        if self.conn is not None:
            with contextlib.suppress(OSError):  # the worker may already be gone
                self.conn.send(None)
        if self.process is not None:
            self.process.join(timeout=10)
        self.terminate()

    # -- dispatch (on the event loop) ------------------------------------------------

    def reload(self, control: _Reload) -> asyncio.Future[None]:
        """Reload before the next batch; a newer snapshot replaces one not yet sent."""
        if self._reload is not None:
            settle(self._reload.future, None)  # superseded: the newer one is loaded instead
        if self.alive or self.respawning:
            self._reload = control
        else:  # its restart failed; a later replacement loads `settings` anyway
            settle(control.future, WorkerLost(f"inspection worker {self.index} is down"))
        return control.future

    def send_reload(self) -> bool:
        """Send the pending reload, if any (the worker must be idle)."""
        if self._reload is None:
            return False
        control, self._reload = self._reload, None
        self._write(("policies", control.directory), control)
        return True

    def send(self, batch: list[_Job]) -> None:
        self.largest_batch = max(self.largest_batch, len(batch))
        self.largest_batch_chars = max(self.largest_batch_chars,
                                       sum(job.inspection.chars for job in batch))
        self._write([job.inspection for job in batch], batch)
        for job in batch:
            job.future.add_done_callback(self._on_caller_done)

    def _on_caller_done(self, _: asyncio.Future[Verdict]) -> None:
        """When every caller of the batch in flight has gone (cancelled: a deadline, a
        hang-up), tell the worker to stop inspecting it (sidecar.abandon)."""
        in_flight = self._in_flight
        if isinstance(in_flight, list) and in_flight \
                and all(job.future.cancelled() for job in in_flight):
            self.abandoned.value = 1

    def detach(self) -> bool:
        """Stop watching the pipe (on the loop); True when there is a process to shut down."""
        if self._loop is not None and self.conn is not None:
            self._loop.remove_reader(self.conn.fileno())
        self._loop = None
        return self.process is not None

    def _write(self, message: Any, held: list[_Job] | _Reload) -> None:
        assert self.conn is not None
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.conn.fileno(), self._on_readable)
        self._in_flight = held
        # A flag a gone batch left set must not stop the next batch, nor a reload's
        # warm-up (which inspects a sample through the same code).
        self.abandoned.value = 0
        try:
            self.conn.send(message)
        except OSError:
            self._lost()

    def _on_readable(self) -> None:
        assert self.conn is not None
        try:
            answer: Any = self.conn.recv()
        except (EOFError, OSError):
            self._lost()
            return
        in_flight, self._in_flight = self._in_flight, []
        if isinstance(in_flight, _Reload):
            settle(in_flight.future, answer)  # None, or the PolicyError it raised
        else:
            for job, outcome in zip(in_flight, answer, strict=True):
                settle(job.future, outcome)
        self._on_idle()

    def _lost(self) -> None:
        """The worker died: fail what it held (retryable), start a new one off the loop."""
        assert self._loop is not None
        assert self.conn is not None
        log.error("worker exited; starting a new one",
                  extra={"worker": self.index, "exit_code": self.process.exitcode,
                         "lost_requests": self.in_flight})
        self.alive = False
        self.respawning = True
        self.restarts += 1
        self._loop.remove_reader(self.conn.fileno())
        in_flight, self._in_flight = self._in_flight, []
        for job in [in_flight] if isinstance(in_flight, _Reload) else in_flight:
            settle(job.future, WorkerLost(f"inspection worker {self.index} exited; retry"))
        loop, self._loop = self._loop, None
        future = loop.run_in_executor(None, self._respawn)
        future.add_done_callback(lambda _: self._on_respawned())
        # One worker fewer changes what the others may take (a long text the rule held
        # back while this one ran another: outside trial 13 saw it wait for the restart).
        # Scheduled, not called: _lost may run inside the pool's own _feed (a failed send).
        loop.call_soon(self._on_idle)

    def _respawn(self) -> None:
        self.terminate()
        try:
            self.spawn()
            self.await_ready()
        except Exception as err:  # stays dead; requests go to the other workers
            log.error("worker restart failed", extra={"worker": self.index,
                                                      "error_type": type(err).__name__})

    def _on_respawned(self) -> None:
        self.respawning = False
        if not self.alive and self._reload is not None:
            settle(self._reload.future, WorkerLost(f"inspection worker {self.index} is down"))
            self._reload = None
        self._on_idle()


def worker_main(settings: Settings, index: int, conn: Connection,
                abandoned: Any = None) -> None:
    """Entry point of a worker process: load, warm up, then answer batches until told to
    stop. `abandoned`: the flag the front sets when a batch's callers have all gone."""
    from sidecar import logs

    # Ctrl-C reaches the whole process group; the front process decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.configure(settings.log_level)
    loaded = threading.Event()
    threading.Thread(target=_exit_with_the_front, args=(os.getppid(), loaded), daemon=True,
                     name="front-watch").start()
    try:
        pipeline = Pipeline.from_settings(settings)
        pipeline.prepare()
    except GuardrailError as err:
        _tell(conn, ("failed", err))
        return
    except Exception as err:  # reported to the front process, not raised
        log.error("worker failed to start", extra={"worker": index,
                                                   "error_type": type(err).__name__,
                                                   "error_frames": error_frames(err)})
        _tell(conn, ("failed", ConfigError(f"worker {index} failed to start: "
                                           f"{type(err).__name__}")))
        return
    # Everything loaded so far (spaCy's model and vocabulary, Presidio, the policies: a few
    # million objects) lives as long as the worker: keep it out of the garbage collector's
    # full passes. Python runs a full pass only when the objects surviving since the last
    # one exceed a quarter of the long-lived ones, so with this heap counted it almost
    # never ran, and any reference cycle a request made (a closure calling itself held a
    # 50 KB request's text views) stayed until then: a worker grew by ~250 MiB per 1 MB
    # request. Frozen, full passes run as often as the request's own objects warrant.
    gc.freeze()
    gone = None if abandoned is None else (lambda: abandoned.value != 0)
    loaded.set()
    if not _tell(conn, ("ready", None)):
        return
    idle: Iterator[None] | None = pipeline.idle_steps()
    while True:
        # While nothing waits, a step of work that makes later inspections cheaper (a few
        # ms: a request that comes meanwhile waits for one step at most).
        if idle is not None and not conn.poll(0):
            if next(idle, _DONE) is _DONE:
                idle = None
                log.info("worker finished its idle work", extra={"worker": index})
            continue
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return  # the front process is gone
        if batch is None:
            return
        if isinstance(batch, tuple):  # ("policies", snapshot directory)
            if not _tell(conn, _reload(pipeline, settings, Path(batch[1]), index)):
                return
            idle = pipeline.idle_steps()  # a model the new policies loaded, if any
            continue
        if not _tell(conn, inspect_batch(pipeline, batch, index, gone)):
            return


def inspect_batch(pipeline: Pipeline, batch: list[Inspection], worker: int,
                  gone: Callable[[], bool] | None = None) -> list[Verdict | GuardrailError]:
    """The outcome of each request of `batch`; whatever a request makes the code raise,
    the others are answered and this worker lives on.

    The pipeline already isolates an Exception to its request. A BaseException that is
    not one (SystemExit, KeyboardInterrupt or GeneratorExit raised by a library) ended
    this process, and its batch with it; the same request, sent again, did it again:
    one caller kept a worker restarting and others' calls missing their deadlines
    (outside trial 9). No such exception is ours to honour here: SIGINT is ignored and
    the front stops a worker through its pipe. So the batch goes again one request at a
    time, and the request that raises fails alone (StageFailed -> INTERNAL).

    `gone` says whether every caller of the batch has gone (sidecar.abandon): the
    inspection then stops and the batch is answered DeadlineExceeded."""
    with abandon.watching(gone):
        try:
            return _inspect_batch(pipeline, batch, worker)
        except abandon.Abandoned:  # every caller has gone: nobody reads these
            log.info("batch stopped: its callers have gone", extra={
                "worker": worker, "batch": len(batch)})
            return [DeadlineExceeded("the call was cancelled while it was inspected")
                    for _ in batch]


def _inspect_batch(pipeline: Pipeline, batch: list[Inspection], worker: int
                   ) -> list[Verdict | GuardrailError]:
    try:
        return list(pipeline.run_batch(batch))
    except abandon.Abandoned:
        raise  # a stop, not a fault: inspect_batch answers it
    except BaseException as err:  # never echo: the message may quote text
        log.error("batch failed; inspecting its requests one at a time", extra={
            "worker": worker, "error_type": type(err).__name__,
            "error_frames": error_frames(err)})
    outcomes: list[Verdict | GuardrailError] = []
    for inspection in batch:
        try:
            outcomes.extend(pipeline.run_batch([inspection]))
        except abandon.Abandoned:
            raise
        except BaseException as err:
            log.error("inspection failed", extra={
                "worker": worker, "error_type": type(err).__name__,
                "request_id": inspection.request_id})
            outcomes.append(StageFailed("pipeline"))
    return outcomes


def _exit_with_the_front(front: int, loaded: threading.Event) -> None:
    """While this worker loads (seconds of spaCy and RE2 in C, no reading of the pipe),
    end it as soon as the front process is gone (killed before it could stop us): it
    would otherwise load to the end for nobody. Once loaded, a closed pipe says so."""
    while not loaded.wait(0.2):
        if os.getppid() != front:
            os._exit(0)


def _tell(conn: Connection, message: Any) -> bool:
    """Send `message` to the front process; False when it is gone (killed, or stopped
    while this worker was still loading): the worker then exits quietly, not with a
    BrokenPipeError traceback on the shared stderr."""
    try:
        conn.send(message)
    except OSError:  # BrokenPipeError, ConnectionResetError
        return False
    return True


def _reload(pipeline: Pipeline, settings: Settings, snapshot: Path,
            index: int) -> GuardrailError | None:
    """Compile and warm the snapshot, then swap; on failure keep serving the old set."""
    from sidecar.pipeline import resources_from
    from sidecar.policy.store import compile_directory

    try:
        fresh = Pipeline(compile_directory(snapshot, resources_from(settings)), pipeline.limits)
        fresh.prepare()
    except GuardrailError as err:
        log.error("worker kept its policies: the snapshot failed to load",
                  extra={"worker": index, "error_type": type(err).__name__})
        return err
    pipeline.policies = fresh.policies
    # The replaced policies were frozen with the rest (worker_main): a cycle among frozen
    # objects is never collected, so thaw, collect them once, and freeze what stays.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return None
