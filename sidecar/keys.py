"""Secret key files in the data directory: created 0600 on first start, checked after.

The embedded default generates keys so the sidecar runs from a clean clone; production
mounts them from a secret store. A key readable by others is refused, not used.
"""

from __future__ import annotations

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
    """The bytes of a secret file, refused if group or others may read or write it."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{what} {path} is readable by group or others (mode {oct(mode & 0o777)}); "
                "run: chmod 600 " + str(path))
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
