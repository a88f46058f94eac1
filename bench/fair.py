"""Equal cores for both sides: the instruments of the speed suite (bench/suite.py, issue 21).

Every comparison here gives vanilla Presidio the cores the sidecar gets, and counts what
each side spends, summed over all of its processes.

**Vanilla Presidio, deployed per core** (`VanillaPool`): N worker processes, N = the
sidecar's default worker count (one per usable CPU), each a warm `AnalyzerEngine` +
`AnonymizerEngine` that handles one request at a time, all taking requests from one
shared queue. That is what Presidio's own service image is under gunicorn with N sync
workers sharing the listening socket: a request/response service for callers that
arrive one at a time. Why not `BatchAnalyzerEngine(n_process=N)`: it is a batch job over
a list known in advance (spaCy's `nlp.pipe` chunked over forked processes); callers of a
guardrail send one prompt each and wait for it, so it would measure a workload nobody
runs, and it would hand vanilla cross-caller batching for free, which the sidecar has to
earn at run time from concurrent callers (that is part of what is measured). The hop
through the queue (pickle, pipe, a dispatcher thread) stands in for the HTTP hop of a
real Presidio service and is cheaper than it, so if anything vanilla is favoured.

**CPU per inspection** (`cpu_seconds`, `process_tree`): utime + stime of every process of
a side (`/proc` finds the processes, each one's CPU clock gives its time at ns
resolution), read before and after each phase. The sidecar's side is
its whole process tree (front, workers, multiprocessing's helpers); vanilla's side is
its worker processes. The benchmark process itself (the sidecar's gRPC client threads,
or vanilla's callers and dispatcher) is counted apart: a real client pays its share
either way, and the two shares are not the same work.

**Rounds** (`interleave`): the sides take turns on slices of the same inputs, and the
order flips every round, so a noisy stretch of the shared machine hits both alike.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Span = tuple[int, int]
TICK = os.sysconf("SC_CLK_TCK")


def usable_cpus() -> int:
    """What `guardrail serve` starts by default: one worker per CPU this process may use."""
    return len(os.sched_getaffinity(0))


# -- CPU accounting from /proc -----------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ")".
    return data.rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, every thread, reaped children excluded) of `pids`, in s.

    Read from each process's CPU-time clock (Linux: `MAKE_PROCESS_CPUCLOCK(pid,
    CPUCLOCK_SCHED)`), the same total as utime + stime in `/proc/<pid>/stat` but in
    nanoseconds rather than 10 ms ticks, which matters for short phases at c=1; the
    ticks are the fallback.
    """
    total = 0.0
    for pid in pids:
        try:
            total += time.clock_gettime((~pid << 3) | 2)
            continue
        except OSError:
            pass
        fields = _stat_fields(pid)
        if fields is not None:  # fields[0] is field 3 (state): utime is 14, stime 15
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant (a sidecar's front, workers and helpers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


# -- the sides ---------------------------------------------------------------------------

class Side(Protocol):
    name: str

    def call(self, text: str) -> list[Span]:
        """Inspect one text and return the spans found (replaced)."""

    def pids(self) -> list[int]:
        """Every process whose CPU this side pays."""


def _vanilla_worker(model: str, requests: Any, replies: Any) -> None:
    """One core's vanilla Presidio: analyze + anonymize, one request at a time."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    from sidecar.offline import enforce_offline

    enforce_offline()  # same footing as the sidecar: no public-suffix download
    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}],
    }).create_engine()
    analyzer, anonymizer = AnalyzerEngine(nlp_engine=nlp), AnonymizerEngine()
    while True:
        message = requests.get()
        if message is None:
            return
        number, text, entities = message
        if text is None:  # "which entities do you support?"
            replies.put((number, sorted(analyzer.get_supported_entities("en"))))
            continue
        results = analyzer.analyze(text, language="en", entities=entities)
        anonymizer.anonymize(text, results)
        replies.put((number, [(r.start, r.end) for r in results]))


class VanillaPool:
    """N warm vanilla Presidio processes behind one shared queue (see the module doc)."""

    def __init__(self, model: str, processes: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._requests: Any = context.Queue()
        self._replies: Any = context.Queue()
        self._workers = [context.Process(target=_vanilla_worker, daemon=True,
                                         args=(model, self._requests, self._replies),
                                         name=f"vanilla-presidio-{i}")
                         for i in range(processes)]
        for worker in self._workers:
            worker.start()
        self._waiting: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self._dispatcher.start()

    def _dispatch(self) -> None:
        while True:
            message = self._replies.get()
            if message is None:
                return
            number, result = message
            with self._lock:
                future = self._waiting.pop(number)
            future.set_result(result)

    def submit(self, text: str | None, entities: list[str] | None) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            self._counter += 1
            number = self._counter
            self._waiting[number] = future
        self._requests.put((number, text, entities))
        while True:  # a worker that died (bad model, out of memory) ends the run loudly
            try:
                return future.result(timeout=1)
            except TimeoutError:
                dead = [w for w in self._workers if not w.is_alive()]
                if dead:
                    raise RuntimeError(f"vanilla Presidio worker {dead[0].name} exited "
                                       f"(code {dead[0].exitcode})") from None

    def supported_entities(self) -> list[str]:
        return list(self.submit(None, None))

    def side(self, name: str, entities: list[str] | None = None) -> Side:
        """This pool as a side that asks for `entities` (None: all it supports)."""
        pool = self

        class _Vanilla:
            def __init__(self) -> None:
                self.name = name

            def call(self, text: str) -> list[Span]:
                return list(pool.submit(text, entities))

            def pids(self) -> list[int]:
                return [w.pid for w in pool._workers if w.pid is not None]

        return _Vanilla()

    def close(self) -> None:
        """Stop the workers and the dispatcher; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._requests.put(None)
        for worker in self._workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
        self._replies.put(None)


def grpc_stub(address: str) -> Any:
    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                      ("grpc.max_receive_message_length", -1)])
    return pb_grpc.GuardrailStub(channel)


class GrpcSide:
    """A `guardrail serve` process (or the empty servicer) called over loopback gRPC by
    one channel, as an app holds one; its side is the server's whole process tree."""

    def __init__(self, name: str, address: str, root_pid: int) -> None:
        from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb

        self.name = name
        self._stub = grpc_stub(address)
        self._request = pb.InspectRequest
        self.root = root_pid

    def call(self, text: str) -> list[Span]:
        reply = self._stub.InspectPrompt(self._request(text=text), timeout=600)
        return [(f.start, f.end) for f in reply.findings]

    def pids(self) -> list[int]:
        return process_tree(self.root)


# -- measuring ---------------------------------------------------------------------------

@dataclass
class Tally:
    """What one side did over every round of one comparison."""

    count: int = 0
    wall: float = 0.0
    side_cpu: float = 0.0
    local_cpu: float = 0.0  # this process: the client (sidecar) or callers+dispatcher
    parts: dict[str, float] = field(default_factory=dict)  # side_cpu by role (front, ...)
    latencies: list[float] = field(default_factory=list)
    spans: list[list[Span]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.wall

    @property
    def mean(self) -> float:
        return self.wall / self.count

    @property
    def cpu_ms(self) -> float:
        return self.side_cpu / self.count * 1000

    @property
    def local_cpu_ms(self) -> float:
        return self.local_cpu / self.count * 1000

    def part_ms(self, role: str) -> float:
        return self.parts.get(role, 0.0) / self.count * 1000

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)


def _roles(side: Side) -> dict[str, list[int]]:
    """The side's processes by role: a gRPC side's root is its front, the rest its
    workers (and multiprocessing's helpers); a vanilla side is all workers."""
    pids = side.pids()
    root = getattr(side, "root", None)
    if root is None:
        return {"workers": pids}
    return {"front": [root], "workers": [pid for pid in pids if pid != root]}


@contextmanager
def _counted(side: Side, tally: Tally, count: int) -> Iterator[None]:
    roles = _roles(side)
    me = [os.getpid()]
    before = {role: cpu_seconds(pids) for role, pids in roles.items()}
    local_before = cpu_seconds(me)
    started = time.perf_counter()
    yield
    tally.wall += time.perf_counter() - started
    for role, pids in roles.items():
        spent = cpu_seconds(pids) - before[role]
        tally.parts[role] = tally.parts.get(role, 0.0) + spent
        tally.side_cpu += spent
    tally.local_cpu += cpu_seconds(me) - local_before
    tally.count += count


def run(side: Side, texts: list[str], concurrency: int, tally: Tally) -> None:
    """`texts` through `side` by `concurrency` closed-loop callers, added to `tally`."""

    def one(text: str) -> tuple[list[Span], float]:
        started = time.perf_counter()
        spans = side.call(text)
        return spans, time.perf_counter() - started

    with _counted(side, tally, len(texts)):
        if concurrency == 1:
            results = [one(text) for text in texts]
        else:
            with ThreadPoolExecutor(concurrency) as callers:
                results = list(callers.map(one, texts))
    for spans, seconds in results:
        tally.spans.append(spans)
        tally.latencies.append(seconds)


def interleave(sides: list[Side], texts: list[str], concurrency: int,
               rounds: int) -> dict[str, Tally]:
    """Every side over every text, taking turns on `rounds` slices; the order flips each
    round. Spans come back in the order of `texts` for each side."""
    tallies = {side.name: Tally() for side in sides}
    size = -(-len(texts) // rounds)
    for number, first in enumerate(range(0, len(texts), size)):
        chunk = texts[first:first + size]
        for side in (sides if number % 2 == 0 else sides[::-1]):
            run(side, chunk, concurrency, tallies[side.name])
    return tallies


def warm(sides: list[Side], texts: list[str], concurrency: int = 1) -> None:
    """Untimed calls first: caches, lazy imports, every worker's first batch."""
    for side in sides:
        if concurrency == 1:
            for text in texts:
                side.call(text)
        else:
            with ThreadPoolExecutor(concurrency) as callers:
                list(callers.map(side.call, texts))


