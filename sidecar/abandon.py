"""Stop inspecting a batch that nobody waits for any more.

A worker inspected a batch to the end once it had started: a 1 MiB request costs it
~15-50 s of CPU (README, "What a request can cost"), and a caller whose deadline passed
or who hung up got its answer from gRPC at once while the worker went on for nobody:
two such calls held both workers of a 2-CPU pod, and everyone else waited.

The front process knows when every caller of a batch has gone (their calls cancelled:
gRPC cancels a call at its deadline and when the client disconnects), and says so
through a flag it shares with the worker (`sidecar.workers`). The inspection reads
the flag at points where it can stop cheaply (between spaCy passes, texts, recognizers
and phone-number candidates) and `check` raises `Abandoned` there.

`Abandoned` is a BaseException so that nothing on its way turns it into a verdict: the
pipeline's and the stages' fault isolation catch Exception (a stage that fails is
answered by its policy's `on_error`), and a stopped inspection must not look like a
failed one. No verdict means no audit record, no cache entry, no finding reported: the
callers are gone. spaCy's memory zone is left in order on the way out
(`sidecar.pii.nlp.memory_zone`).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Abandoned", "check", "watch"]


class Abandoned(BaseException):
    """Every caller of the batch being inspected has gone: stop."""


# What `check` asks: the one question of this process (a worker's shared flag).
_watching: list[Callable[[], bool]] = []


def watch(gone: Callable[[], bool] | None) -> None:
    """Have `check` ask `gone` (None: never stop). Set once by a worker at start."""
    _watching[:] = [] if gone is None else [gone]


def check() -> None:
    """Raise Abandoned when the callers of the current batch have all gone."""
    if _watching and _watching[0]():
        raise Abandoned
