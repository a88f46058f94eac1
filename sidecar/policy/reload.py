"""Live policy reload: watch the directory, validate a change, swap it in or keep the old.

A change is never compiled from the live directory: the files are first copied into an
immutable snapshot (`<data-dir>/policy-snapshots/<content hash>/`, file modes kept so the
world-writable check still bites), the snapshot is compiled, and only a snapshot that
compiles completely is handed to the runner. Every worker then compiles exactly those
bytes, so an editor saving a file half-way through a reload cannot make two workers
disagree, and a schema `$ref` read lazily later still reads the validated version.

If anything fails, the last good set keeps serving and the issues (file, line, field
path, reason) are logged and kept for `PolicyStatus`. Deleting a file is just another
change: it applies only if the remaining set is valid (a default policy must exist).
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
from sidecar.policy.store import PolicySet, compile_directory
from sidecar.types import StageResources

log = logging.getLogger(__name__)
MAX_SNAPSHOT_FILES = 2000
KEEP_SNAPSHOTS = 3


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


class PolicyManager:
    """Owns the serving policy set of one sidecar process tree."""

    def __init__(self, source: Path, data_dir: Path, resources: StageResources,
                 on_swap: Callable[[PolicySet, Path], None] | None = None) -> None:
        self.source = source
        # Told of every applied change: (policy, old revision, new revision, file sha256);
        # an empty new revision means the policy was removed. The audit trail listens.
        self.on_change: Callable[[str, str, str, str], None] | None = None
        self.snapshots = data_dir / "policy-snapshots"
        self.resources = resources
        self.on_swap = on_swap
        self._lock = threading.Lock()  # one reload at a time
        self._fingerprint: tuple[tuple[str, int, int, int], ...] = ()
        self._loaded_at: dict[str, tuple[str, float]] = {}
        self._errors: list[PolicyIssue] = []
        self._last_attempt = self._last_applied = 0.0
        self.applied = self.rejected = 0  # reloads since start (metrics)
        self.current, self.snapshot = self._build()  # a bad start fails loudly
        self._record(self.current)

    # -- reloading --------------------------------------------------------------------

    def reload(self, *, force: bool = False) -> bool:
        """Apply the directory's current content if it changed and is valid.

        Returns True when a new set was swapped in. Never raises for a bad edit.
        """
        with self._lock:
            fingerprint = self._scan()
            if fingerprint == self._fingerprint and not force:
                return False
            self._last_attempt = time.time()
            try:
                policies, snapshot = self._build(fingerprint)
            except PolicyError as err:
                self._fingerprint = fingerprint  # do not retry the same bad content
                self._errors = err.issues
                self.rejected += 1
                for issue in err.issues:
                    log.error("policy change rejected; the previous revision keeps serving",
                              extra={"file": _relative(issue.file, self.snapshots),
                                     "line": issue.line, "field": issue.path,
                                     "reason": issue.reason})
                return False
            previous = {p.name: p.revision for p in self.current.policies}
            if self.on_swap is not None:
                self.on_swap(policies, snapshot)
            self.current, self.snapshot = policies, snapshot
            self.applied += 1
            self._errors = []
            self._last_applied = self._last_attempt
            self._record(policies)
            self._prune()
            changes = [(c.name, previous.get(c.name, ""), c.revision, _file_sha256(c.source))
                       for c in policies.policies if previous.get(c.name) != c.revision]
            changes += [(name, previous[name], "", "")
                        for name in set(previous) - {p.name for p in policies.policies}]
            for name, old, new, file_hash in changes:
                log.info("policy applied" if new else "policy removed", extra={
                    "policy": name, "revision": new[:12], "previous_revision": old[:12]})
                if self.on_change is not None:
                    try:
                        self.on_change(name, old, new, file_hash)
                    except Exception as err:  # the change is live; say it was not recorded
                        log.error("policy change not recorded in the audit trail",
                                  extra={"policy": name, "error_type": type(err).__name__})
            return True

    async def watch(self, stop: asyncio.Event, poll_interval: float = 0.5) -> None:
        """Reload on file events; poll as well, and only poll when events are unavailable."""
        loop = asyncio.get_running_loop()
        try:
            from watchfiles import awatch

            async for _ in awatch(self.source, stop_event=stop, debounce=200, step=50,
                                  rust_timeout=2000, yield_on_timeout=True,
                                  ignore_permission_denied=True):
                await loop.run_in_executor(None, self.reload)
            return
        except Exception as err:  # no inotify here (or the directory vanished): poll
            log.warning("file events unavailable; polling the policy directory",
                        extra={"error_type": type(err).__name__, "interval_s": poll_interval})
        while not stop.is_set():
            await loop.run_in_executor(None, self.reload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)

    # -- status -----------------------------------------------------------------------

    def status(self) -> Status:
        by_file: dict[str, list[str]] = {}
        for issue in self._errors:
            by_file.setdefault(_relative(issue.file, self.snapshots), []).append(str(issue))
        infos = []
        for compiled in self.current.policies:
            source = compiled.source.name
            infos.append(PolicyInfo(
                name=compiled.name, revision=compiled.revision, source=source,
                loaded_at=self._loaded_at[compiled.name][1],
                last_error="; ".join(by_file.get(source, [])),
                is_default=compiled.policy.is_default, mode=compiled.policy.mode))
        errors = [PolicyIssue(_relative(i.file, self.snapshots), i.path, i.reason, i.line)
                  for i in self._errors]
        return Status(infos, errors, self._last_attempt, self._last_applied)

    # -- internals --------------------------------------------------------------------

    def _build(self, fingerprint: tuple[tuple[str, int, int, int], ...] | None = None,
               ) -> tuple[PolicySet, Path]:
        fingerprint = self._scan() if fingerprint is None else fingerprint
        snapshot = self._snapshot(fingerprint)
        policies = compile_directory(snapshot, self.resources)
        self._fingerprint = fingerprint
        return policies, snapshot

    def _scan(self) -> tuple[tuple[str, int, int, int], ...]:
        """(relative path, size, mtime, mode) of every file: cheap enough to poll."""
        entries = []
        errors: list[OSError] = []
        try:
            for root, dirs, files in os.walk(self.source, onerror=errors.append):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    path = Path(root) / name
                    with contextlib.suppress(OSError):
                        info = path.stat()
                        entries.append((str(path.relative_to(self.source)), info.st_size,
                                        info.st_mtime_ns, info.st_mode))
        except OSError as err:
            errors.append(err)
        # An unreadable directory is an error to report, not an empty policy set.
        entries += [(f"{UNREADABLE}{err.filename or self.source}", 0, 0, err.errno or 0)
                    for err in errors]
        return tuple(entries)

    def _snapshot(self, fingerprint: tuple[tuple[str, int, int, int], ...]) -> Path:
        if not self.source.is_dir():
            raise PolicyError([PolicyIssue(str(self.source), "",
                                           "policy directory does not exist")])
        if len(fingerprint) > MAX_SNAPSHOT_FILES:
            raise PolicyError([PolicyIssue(str(self.source), "",
                                           f"more than {MAX_SNAPSHOT_FILES} files")])
        unreadable = [(name.removeprefix(UNREADABLE), code) for name, _, _, code in fingerprint
                      if name.startswith(UNREADABLE)]
        if unreadable:
            raise PolicyError([PolicyIssue(name, "", f"cannot read: {os.strerror(code)}")
                               for name, code in unreadable])
        digest = hashlib.sha256()
        contents: list[tuple[str, bytes, int]] = []
        for relative, _, _, mode in fingerprint:
            try:
                data = (self.source / relative).read_bytes()
            except OSError as err:
                raise PolicyError([PolicyIssue(relative, "", f"cannot read: {err.strerror}")
                                   ]) from None
            contents.append((relative, data, mode))
            digest.update(f"{relative}\0{mode}\0{len(data)}\0".encode())
            digest.update(data)
        target = self.snapshots / digest.hexdigest()[:32]
        if not target.is_dir():
            staging = self.snapshots / f".staging-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(staging, ignore_errors=True)
            for relative, data, mode in contents:
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                os.chmod(path, mode & 0o777)
            self.snapshots.mkdir(parents=True, exist_ok=True)
            staging.mkdir(parents=True, exist_ok=True)
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


UNREADABLE = "\0unreadable:"  # marks a directory the scan could not list


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _relative(file: str, snapshots: Path) -> str:
    """Issues name files inside a snapshot; show them as the operator knows them."""
    path = Path(file)
    with contextlib.suppress(ValueError):
        return str(Path(*path.relative_to(snapshots).parts[1:]))
    return file
