"""Secret key files in the data directory: created 0600 on first start, checked after.

The embedded default generates keys so the sidecar runs from a clean clone; production
mounts them from a secret store. A key readable by others is refused, not used.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
from pathlib import Path

from sidecar.errors import ConfigError

log = logging.getLogger(__name__)
KEY_BYTES = 32


def load_or_create_key(path: Path, *, nbytes: int = KEY_BYTES) -> bytes:
    """Return the key at `path`, creating it (mode 0600, parents 0700) if it is absent."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path, nbytes)
    except OSError as err:
        raise ConfigError(f"cannot create key file {path}: {err.strerror}") from None
    try:
        os.write(fd, secrets.token_bytes(nbytes))
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning("generated a new development key at %s; mount a managed key in production", path)
    return _read_key(path, nbytes)


def _read_key(path: Path, nbytes: int) -> bytes:
    key = read_private_file(path, "key file")
    if len(key) < nbytes:
        raise ConfigError(f"key file {path} holds {len(key)} bytes, expected {nbytes}")
    return key


def read_private_file(path: Path, what: str) -> bytes:
    """The bytes of a secret file, refused if anyone but its owner (and, for a root-owned
    file, its group) may read it, or anyone but its owner may write it.

    Kubernetes mounts Secret files root-owned with the mode the manifest asks for, 0440
    in ours (the group is the pod's fsGroup, which is how the non-root sidecar reads
    them). That is accepted: a process that is not root cannot make a file root-owned,
    so such a file was put there by the system, and only root may widen it; nobody but
    root and the group it names may read it, nobody may write it. A group-readable file
    owned by anyone else (a user's own 0640 file) is still refused, and so is any file
    that others may read or that its group may write, whoever owns it.
    """
    try:
        info = path.stat()
        mode = info.st_mode
        loose = mode & (stat.S_IRWXG | stat.S_IRWXO)
        if loose == stat.S_IRGRP and info.st_uid == 0:
            loose = 0  # root-owned, group-read only: a Secret mount (see above)
        if loose:
            raise ConfigError(
                f"{what} {path} is readable by group or others, or writable by them "
                f"(mode {oct(mode & 0o777)}); run: chmod 600 {path} (a root-owned file "
                "may be 0440, as Kubernetes mounts a Secret)")
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None


def read_key_file(path: Path, what: str, *, nbytes: int = KEY_BYTES) -> bytes:
    """A mounted key: at least `nbytes` raw bytes in a private file (see read_private_file)."""
    key = read_private_file(path, what)
    if len(key) < nbytes:
        raise ConfigError(f"{what} {path} holds {len(key)} bytes, expected at least {nbytes}")
    return key


def key_from_text(text: str, what: str, *, nbytes: int = KEY_BYTES) -> bytes:
    """A key given in the environment: base64 of at least `nbytes` random bytes (raw bytes
    cannot travel in an environment variable). The value never appears in the error."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what}: expected base64 text") from None
    if len(key) < nbytes:
        raise ConfigError(f"{what}: holds {len(key)} bytes once decoded, expected at least "
                          f"{nbytes} (make one: head -c 32 /dev/urandom | base64)")
    return key


def shared_key(*, text: str | None, file: Path | None, generated: Path, env: str,
               fleet: bool, allow_generated: bool) -> bytes:
    """A key every replica must share (the `hash` action's, the routing tags'): from the
    environment (`GUARDRAIL_<env>`, base64), else a mounted file (`GUARDRAIL_<env>_FILE`),
    else the data directory's own, generated on first start.

    In fleet mode the data directory is a per-pod emptyDir, so a generated key differs
    on every pod: hashes would not match across replicas and a tag signed by one pod
    would be refused by the next. That is refused at start unless the operator says so.
    """
    if text:
        return key_from_text(text, f"GUARDRAIL_{env}")
    if file is not None:
        return read_key_file(Path(file), f"GUARDRAIL_{env}_FILE")
    if fleet and not allow_generated:
        raise ConfigError(
            f"fleet mode (GUARDRAIL_STORE) needs a key shared by every replica: set "
            f"GUARDRAIL_{env}_FILE (a file from a Secret) or GUARDRAIL_{env} (base64); "
            f"a key generated in {generated.parent} would differ on every pod. To run "
            "with per-pod keys anyway, set GUARDRAIL_ALLOW_POD_KEYS=1")
    return load_or_create_key(generated)
