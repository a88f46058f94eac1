"""Where inspections run: inline in this process, or in a pool of worker processes.

The gRPC servicer awaits `runner.run(inspection)` and does not care which. Both keep the
event loop free of CPU work, shed load when their queue is full (Overloaded) and skip
work whose caller has already given up (DeadlineExceeded).
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sidecar.config import Settings
from sidecar.errors import DeadlineExceeded, Overloaded
from sidecar.pipeline import Pipeline
from sidecar.policy.store import PolicySet
from sidecar.types import Inspection, Verdict


@dataclass(frozen=True)
class Load:
    """What an operator watches: work waiting or running, and the workers behind it."""

    queued: int
    workers: int
    workers_alive: int
    worker_restarts: int
    # Batches handed to workers and the requests they held: their ratio is the mean batch,
    # which says whether concurrent callers share spaCy passes (BATCH_WAIT_MS, README).
    batches: int = 0
    batched_requests: int = 0


class Runner(Protocol):
    def load(self) -> Load:
        """The current load (cheap: read at every metrics scrape)."""

    def start(self) -> None:
        """Load models and warm up; blocks, so call it off the event loop."""

    async def run(self, inspection: Inspection, deadline: float | None = None) -> Verdict:
        """Inspect; `deadline` is a time.monotonic() instant after which the answer is moot."""

    async def swap(self, policies: PolicySet, snapshot: Path) -> None:
        """Serve `policies` (compiled from `snapshot`) from now on; in-flight work finishes
        on the policies it started with."""

    async def close(self) -> None:
        """Release processes and threads; in-flight work is expected to be drained first."""


class InlineRunner:
    """One thread in this process runs the pipeline (workers = 0, and `guardrail inspect`)."""

    def __init__(self, pipeline: Pipeline, max_queue: int) -> None:
        self.pipeline = pipeline
        self.max_queue = max_queue
        self.waiting = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspect")

    def load(self) -> Load:
        return Load(self.waiting, 0, 0, 0)

    def start(self) -> None:
        self.pipeline.prepare()

    async def run(self, inspection: Inspection, deadline: float | None = None) -> Verdict:
        if self.waiting >= self.max_queue:
            raise Overloaded(f"{self.waiting} requests already waiting (max_queue="
                             f"{self.max_queue}); retry with backoff")
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, inspection, deadline)
        finally:
            self.waiting -= 1

    def _run(self, inspection: Inspection, deadline: float | None) -> Verdict:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the call's deadline passed before inspection could start")
        return self.pipeline.run(inspection)

    async def swap(self, policies: PolicySet, snapshot: Path) -> None:
        # Load models and warm up off the event loop, then one reference assignment:
        # a request already running holds the CompiledPolicy it selected.
        await asyncio.get_running_loop().run_in_executor(
            self._executor, Pipeline(policies, self.pipeline.limits).prepare)
        self.pipeline.policies = policies

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._executor.shutdown(wait=True, cancel_futures=True))


def make_runner(settings: Settings, pipeline: Pipeline) -> Runner:
    """The runner `settings.workers` asks for (None: one worker process per usable CPU)."""
    count = worker_count(settings)
    if count == 0:
        return InlineRunner(pipeline, settings.max_queue)
    from sidecar.workers import WorkerPool

    return WorkerPool(settings, pipeline.limits, count)


def worker_count(settings: Settings) -> int:
    """Worker processes `settings.workers` asks for (0: inspect in this process)."""
    return available_cpus() if settings.workers is None else settings.workers


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    A pod with `limits.cpu: 2` on a 64-core node sees 64 CPUs in os.cpu_count(); starting
    64 workers there would only make them fight over two CPUs' worth of time.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, int(quota + 0.999)))
    return max(1, cpus)


def _cgroup_quota(cgroup: Path) -> float | None:
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
