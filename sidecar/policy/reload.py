"""Live policy reload: watch the directory, validate a change, swap it in or keep the old.

A change is never compiled from the live directory: the files are first read safely
(sidecar.policy.files: no link out of the directory, no FIFO, bounded sizes) and written
as plain files into an immutable snapshot (`<data-dir>/policy-snapshots/<content hash>/`,
file modes kept so the world-writable check still bites), the snapshot is compiled, and
only a snapshot that compiles completely is handed to the runner. Every worker then
compiles exactly those bytes, so an editor saving a file half-way through a reload
cannot make two workers disagree, and a schema `$ref` read lazily later still reads the
validated version.

If anything fails — a bad edit, a hostile file, or a bug of ours raising something
unexpected — the last good set keeps serving, the failure is counted
(`guardrail_policy_reload_failures_total`), logged (file, line, field, reason; never
content) and kept for `PolicyStatus`, and the watch goes on: the next edit is looked at
as usual. Deleting a file is just another change: it applies only if the remaining set
is valid (a default policy must exist), and is logged at WARNING (its tenants now get
another policy).

A file still open for writing by another process is not read at all: a writer pausing
longer than the debounce leaves a prefix that may be a valid, looser policy. The reload
waits (the running set serving) and looks again every WRITING_RETRY_S until the file is
closed (sidecar.policy.files.open_for_writing says how it is told, and when it cannot).

Files are always named as the operator knows them: relative to the policy directory,
never by their path inside a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.policy import files
from sidecar.policy.store import PolicySet, compile_directory
from sidecar.types import StageResources

log = logging.getLogger(__name__)
KEEP_SNAPSHOTS = 3
# How soon a reload that found a file still open for writing looks again.
WRITING_RETRY_S = 0.1


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    revision: str
    source: str  # file name relative to the policy directory
    loaded_at: float  # when this revision started serving (unix time)
    last_error: str  # the latest rejected edit of this policy's file, if any
    is_default: bool
    mode: str


@dataclass
class Status:
    policies: list[PolicyInfo]
    # Problems of the latest reload attempt; empty when it applied (or nothing changed).
    errors: list[PolicyIssue] = field(default_factory=list)
    last_attempt: float = 0.0
    last_applied: float = 0.0


Fingerprint = tuple[files.ScanEntry, ...]


class PolicyManager:
    """Owns the serving policy set of one sidecar process tree."""

    def __init__(self, source: Path, data_dir: Path, resources: StageResources,
                 on_swap: Callable[[PolicySet, Path], None] | None = None, *,
                 on_snapshot: Callable[[Path], None] | None = None) -> None:
        """Read, snapshot and compile `source` (PolicyError: it does not compile).

        `on_snapshot` is told the first snapshot's path before it is compiled here:
        `guardrail serve` starts its workers on it then, so they compile the same bytes
        while this process does."""
        self.source = source
        # Told of every applied change: (policy, old revision, new revision, file sha256);
        # an empty new revision means the policy was removed. The audit trail listens.
        self.on_change: Callable[[str, str, str, str], None] | None = None
        self.snapshots = data_dir / "policy-snapshots"
        self.resources = resources
        self.on_swap = on_swap
        self._lock = threading.Lock()  # one reload at a time
        self._closed = False  # set on shutdown: a reload still running swaps nothing
        self._fingerprint: Fingerprint = ()
        self._loaded_at: dict[str, tuple[str, float]] = {}
        self._errors: list[PolicyIssue] = []
        self._last_attempt = self._last_applied = 0.0
        # A file was still open for writing at the last attempt: look again shortly
        # (the watcher may see no further event once the writer closes it).
        self.writing: list[str] = []
        self.applied = self.rejected = 0  # reloads since start (metrics)
        try:  # a bad start fails loudly, naming files under the directory given
            self.current, self.snapshot = self._build(files.scan(source), on_snapshot)
        except PolicyError as err:
            raise PolicyError(files.located(err.issues, source)) from None
        self._record(self.current)

    # -- reloading --------------------------------------------------------------------

    def reload(self, *, force: bool = False) -> bool:
        """Apply the directory's current content if it changed and is valid.

        Returns True when a new set was swapped in. Never raises: whatever goes wrong
        is counted, logged and shown by `status`, and the previous set keeps serving.
        """
        with self._lock:
            if self._closed:
                return False
            try:
                fingerprint = files.scan(self.source)
            except Exception as err:  # see the docstring
                fingerprint = (("\0scan", type(err).__name__),)
            if fingerprint == self._fingerprint and not force:
                self.writing = []
                return False
            self._last_attempt = time.time()
            try:
                policies, snapshot = self._build(fingerprint, settled=True)
            except files.StillWriting as busy:
                if busy.names != self.writing:
                    log.info("policy file still open for writing; it is read once closed, "
                             "the current revision keeps serving", extra={
                                 "files": busy.names})
                self.writing = busy.names
                return False
            except PolicyError as err:
                self._reject(fingerprint, err.issues)
                return False
            except Exception as err:  # a bug must not end live reload
                log.error("policy reload failed unexpectedly; the previous revision keeps "
                          "serving", exc_info=True, extra={"error_type": type(err).__name__})
                self._reject(fingerprint, [PolicyIssue(".", "", (
                    f"internal error while loading the policies ({type(err).__name__}); "
                    "the previous revision keeps serving"))])
                return False
            self.writing = []
            if self._closed:
                return False
            previous = {p.name: p.revision for p in self.current.policies}
            if self.on_swap is not None:
                try:
                    self.on_swap(policies, snapshot)
                except Exception as err:  # e.g. shutting down meanwhile
                    log.error("policy swap failed; it is tried again on the next change",
                              extra={"error_type": type(err).__name__})
                    self._fingerprint = ()
                    self.rejected += 1
                    return False
            self.current, self.snapshot = policies, snapshot
            self.applied += 1
            self._errors = []
            self._last_applied = self._last_attempt
            self._record(policies)
            self._prune()
            self._announce(previous, policies)
            return True

    def close(self) -> None:
        """No swap after this (shutdown): a reload running meanwhile just ends."""
        self._closed = True

    async def watch(self, stop: asyncio.Event, poll_interval: float = 0.5) -> None:
        """Reload on file events; poll as well, and only poll when events are unavailable.

        Never raises, and returns as soon as `stop` is set, even while a reload runs
        (that reload then swaps nothing)."""
        try:
            await self._watch(stop, poll_interval)
        except Exception as err:  # the server must still drain
            log.error("policy watch stopped unexpectedly; polling instead",
                      extra={"error_type": type(err).__name__})
            with contextlib.suppress(Exception):
                await self._poll(stop, poll_interval)
        finally:
            self.close()

    async def _watch(self, stop: asyncio.Event, poll_interval: float) -> None:
        try:
            from watchfiles import awatch

            async for _ in awatch(self.source, stop_event=stop, debounce=200, step=50,
                                  rust_timeout=2000, yield_on_timeout=True,
                                  ignore_permission_denied=True):
                if not await self._reload_until(stop):
                    return
            return
        except Exception as err:  # no inotify here (or the directory vanished): poll
            if stop.is_set():
                return
            log.warning("file events unavailable; polling the policy directory",
                        extra={"error_type": type(err).__name__, "interval_s": poll_interval})
        await self._poll(stop, poll_interval)

    async def _poll(self, stop: asyncio.Event, poll_interval: float) -> None:
        while not stop.is_set():
            if not await self._reload_until(stop):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)

    async def _reload_until(self, stop: asyncio.Event) -> bool:
        """One reload in a thread (the event loop keeps answering); False once `stop`.

        While a file is still open for writing, it looks again every WRITING_RETRY_S:
        closing a file need not raise another file event."""
        loop = asyncio.get_running_loop()
        while True:
            reloading: asyncio.Future[bool] = loop.run_in_executor(None, self.reload)
            stopping: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({reloading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not reloading.done():
                self.close()
                return False
            with contextlib.suppress(Exception):
                reloading.result()
            if not self.writing or stop.is_set():
                return not stop.is_set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WRITING_RETRY_S)

    # -- status -----------------------------------------------------------------------

    def status(self) -> Status:
        by_file: dict[str, list[str]] = {}
        for issue in self._errors:
            by_file.setdefault(issue.file, []).append(str(issue))
        infos = []
        for compiled in self.current.policies:
            source = compiled.file
            infos.append(PolicyInfo(
                name=compiled.name, revision=compiled.revision, source=source,
                loaded_at=self._loaded_at[compiled.name][1],
                last_error="; ".join(by_file.get(source, [])),
                is_default=compiled.policy.is_default, mode=compiled.policy.mode))
        return Status(infos, list(self._errors), self._last_attempt, self._last_applied)

    # -- internals --------------------------------------------------------------------

    def _reject(self, fingerprint: Fingerprint, issues: list[PolicyIssue]) -> None:
        self.writing = []
        self._fingerprint = fingerprint  # do not retry the same bad content
        self._errors = issues
        self.rejected += 1
        for issue in issues:
            log.error("policy change rejected; the previous revision keeps serving",
                      extra={"file": issue.file, "line": issue.line, "field": issue.path,
                             "reason": issue.reason})

    def _announce(self, previous: dict[str, str], policies: PolicySet) -> None:
        changes = [(c.name, previous.get(c.name, ""), c.revision, _file_sha256(c.source))
                   for c in policies.policies if previous.get(c.name) != c.revision]
        changes += [(name, previous[name], "", "")
                    for name in set(previous) - {p.name for p in policies.policies}]
        for name, old, new, file_hash in changes:
            # A removed policy sends its tenants to the default one (a file renamed to
            # `.bak`): an operator must see that, so it is a warning, not news.
            log.log(logging.INFO if new else logging.WARNING,
                    "policy applied" if new else "policy removed", extra={
                        "policy": name, "revision": new[:12], "previous_revision": old[:12]})
            if self.on_change is not None:
                try:
                    self.on_change(name, old, new, file_hash)
                except Exception as err:  # the change is live; say it was not recorded
                    log.error("policy change not recorded in the audit trail",
                              extra={"policy": name, "error_type": type(err).__name__})

    def _build(self, fingerprint: Fingerprint,
               on_snapshot: Callable[[Path], None] | None = None, *,
               settled: bool = False) -> tuple[PolicySet, Path]:
        """Snapshot and compile the directory. With `settled` (live reload), a file still
        open for writing raises files.StillWriting: half a file can be a valid, looser
        policy. The start reads what is there, as `policy check` does."""
        snapshot = self._snapshot(settled)
        if on_snapshot is not None:
            on_snapshot(snapshot)
        policies = compile_directory(snapshot, self.resources)
        self._fingerprint = fingerprint
        return policies, snapshot

    def _snapshot(self, settled: bool = False) -> Path:
        """Read the directory safely and write it as plain files into a snapshot."""
        tree = files.read_tree(self.source, settled=settled)
        target = self.snapshots / tree.digest()[:32]
        if not target.is_dir():
            staging = self.snapshots / f".staging-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(staging, ignore_errors=True)
            tree.write(staging)
            self.snapshots.mkdir(parents=True, exist_ok=True)
            try:
                staging.rename(target)
            except OSError:  # another process made the same snapshot first
                shutil.rmtree(staging, ignore_errors=True)
        os.utime(target)  # most recently used, for pruning
        return target

    def _record(self, policies: PolicySet) -> None:
        now = time.time()
        self._loaded_at = {
            p.name: (p.revision, self._loaded_at[p.name][1]
                     if self._loaded_at.get(p.name, ("", 0.0))[0] == p.revision else now)
            for p in policies.policies}

    def _prune(self) -> None:
        """Keep the few most recent snapshots (workers may still be compiling one)."""
        try:
            old = sorted((p for p in self.snapshots.iterdir()
                          if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_SNAPSHOTS:]
        except OSError:
            return
        for path in old:
            if path != self.snapshot:
                shutil.rmtree(path, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
