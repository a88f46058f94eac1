"""The head anchor: the newest signed checkpoint, kept outside `audit.db`.

Signed checkpoints inside the database prove integrity, not completeness: whoever can
write `audit.db` can delete its newest records together with the checkpoints that name
them, or put back an older copy of the whole file, and the rest still verifies. The
anchor is a copy of the newest checkpoint in a separate file (by default next to the
keys, `<data-dir>/keys/audit-anchor.json`), so `verify` can tell that the trail it reads
reaches at least as far as the trail the sidecar last signed.

Rules that make it worth something:
- written after the checkpoint committed, atomically (temporary file, fsync, rename,
  fsync of the directory), so a crash leaves the old anchor or the new one, never half;
- monotonic: under an exclusive lock, a checkpoint with a lower number than the anchor's
  never replaces it (two processes checkpointing at once cannot roll it back);
- only advanced over the trail it anchors: when `audit.db` no longer holds the anchored
  checkpoint (rolled back, replaced), the anchor is left alone and the caller is told,
  so the evidence survives until someone resets it on purpose (a chained event).

Deploy it where the pod's writer cannot rewrite it (see README): an attacker who can
rewrite the anchor *and* holds the signing key can forge a consistent shorter trail.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VERSION = "guardrail-anchor-v1"


class AnchorError(Exception):
    """The anchor file is unreadable or malformed. Safe to show."""


@dataclass(frozen=True)
class Anchor:
    """One signed v2 or v3 checkpoint (see `audit.chain.checkpoint_message`)."""

    n: int
    seq: int
    hash: str
    time: float
    prev: str
    extra: str
    signature: str
    public_key: str
    index: str = ""  # the index key's id the checkpoint signs (v3); "" before

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Anchor:
        try:
            data: Any = loads(text)
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise AnchorError(f"head anchor {where} is not a {VERSION} file")
            return cls(n=int(data["n"]), seq=int(data["seq"]), hash=str(data["hash"]),
                       time=float(data["time"]), prev=str(data["prev"]),
                       extra=str(data["extra"]), signature=str(data["signature"]),
                       public_key=str(data["public_key"]),
                       index=str(data.get("index", "")))
        except (ValueError, KeyError, TypeError) as err:
            raise AnchorError(f"head anchor {where} is malformed ({type(err).__name__})"
                              ) from None


def loads(text: str) -> Any:
    """json.loads, where JSON nested too deeply for Python's parser (`'[' * 100000`) is
    a JSONDecodeError like any other malformed text, not a RecursionError that escapes
    every handler for bad files (outside trial: tracebacks from `audit verify`, `hold
    add`, `verify-export` and the server's sweep and shutdown)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text[:1], 0) from None


def read(path: Path) -> Anchor | None:
    """The anchor at `path`; None when there is none yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise AnchorError(f"cannot read head anchor {path}: {err.strerror}") from None
    return Anchor.from_json(text, str(path))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock next to the anchor (advisory, held for one read-compare-write)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write(path: Path, anchor: Anchor) -> None:
    """Replace the anchor atomically and durably (call under `locked`)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, anchor.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
