"""Stop inspecting a batch that nobody waits for any more.

A worker inspected a batch to the end once it had started: a 1 MiB request costs it
~15-50 s of CPU (README, "What a request can cost"), and a caller whose deadline passed
or who hung up got its answer from gRPC at once while the worker went on for nobody:
two such calls held both workers of a 2-CPU pod, and everyone else waited.

The front process knows when every caller of a batch has gone (their calls cancelled:
gRPC cancels a call at its deadline and when the client disconnects), and says so
through a flag it shares with the worker (`sidecar.workers`). The inspection reads
the flag at points where it can stop cheaply (between stages, spaCy passes and segment
cuts, texts, content views and detectors, recognizers, phone-number candidates) and
`check` raises `Abandoned` there.

`Abandoned` is a BaseException so that nothing on its way turns it into a verdict: the
pipeline's and the stages' fault isolation catch Exception (a stage that fails is
answered by its policy's `on_error`), and a stopped inspection must not look like a
failed one. No verdict means no audit record, no cache entry, no finding reported: the
callers are gone. spaCy's memory zone is left in order on the way out
(`sidecar.pii.nlp.memory_zone`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Abandoned", "check", "watching"]


class Abandoned(BaseException):
    """Every caller of the batch being inspected has gone: stop."""


# What `check` asks while a batch is inspected (a worker's shared flag); nothing else.
_gone: ContextVar[Callable[[], bool] | None] = ContextVar("gone", default=None)


@contextmanager
def watching(gone: Callable[[], bool] | None) -> Iterator[None]:
    """Have `check` ask `gone` inside the block, and only there (None: never stop).

    Only a batch's inspection may stop: a policy reload warms the new policies up by
    inspecting a sample through the same code, and must never be cut short by a flag
    a gone batch left set."""
    token = _gone.set(gone)
    try:
        yield
    finally:
        _gone.reset(token)


def check() -> None:
    """Raise Abandoned when the callers of the batch being inspected have all gone."""
    gone = _gone.get()
    if gone is not None and gone():
        raise Abandoned
