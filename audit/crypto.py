"""Envelope encryption for audit payloads, with keys that can be destroyed per subject.

    KEK (key-encryption key)  from a file or an env var, never in the database
      └── wraps DEKs (data keys), one per data subject (or per tenant when a record
          has no subject), stored wrapped in the database with their key id and version
            └── seal each payload with AES-256-GCM, associated data = the record's id
                and metadata digest, so a ciphertext cannot be moved to another record

Crypto-shredding: destroying a subject's wrapped DEKs makes every copy of their
payloads, backups included, unreadable, without touching the hash chain (which covers
ciphertext digests, never plaintext).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class AuditKeyError(Exception):
    """A key is missing, unreadable, the wrong one, or was destroyed. Safe to show."""


@dataclass(frozen=True)
class Kek:
    key: bytes = b""

    @property
    def id(self) -> str:
        """A fingerprint that names the key without revealing it."""
        return hashlib.sha256(b"guardrail-kek-id\0" + self.key).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path) -> Kek:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise AuditKeyError(f"audit KEK file {path} does not exist") from None
        except OSError as err:
            raise AuditKeyError(f"cannot read audit KEK file {path}: {err.strerror}") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuditKeyError(f"audit KEK file {path} is readable by group or others; "
                                "chmod 600 it")
        return cls.from_text(path.read_text().strip(), str(path))

    @classmethod
    def from_text(cls, text: str, where: str = "GUARDRAIL_AUDIT_KEK") -> Kek:
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError:
            raise AuditKeyError(f"audit KEK in {where} is not base64") from None
        if len(key) != KEY_BYTES:
            raise AuditKeyError(f"audit KEK in {where} must be {KEY_BYTES} bytes "
                                f"(base64), got {len(key)}")
        return cls(key)

    @classmethod
    def create_file(cls, path: Path) -> Kek:
        """A new random KEK written with mode 0600 (the embedded dev default)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(key).decode() + "\n")
        return cls(key)


def new_dek() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def wrap(kek: Kek, dek: bytes, dek_id: str) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(kek.key).encrypt(nonce, dek, b"guardrail-dek\0" + dek_id.encode())


def unwrap(kek: Kek, wrapped: bytes, dek_id: str) -> bytes:
    try:
        return AESGCM(kek.key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                       b"guardrail-dek\0" + dek_id.encode())
    except InvalidTag:
        raise AuditKeyError(f"data key {dek_id} does not open with this KEK "
                            "(wrong KEK, or a tampered key)") from None


def seal(dek: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, associated)


def open_sealed(dek: bytes, blob: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(dek).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated)
    except InvalidTag:
        raise AuditKeyError("payload does not decrypt: it was altered or moved to "
                            "another record") from None


def fingerprint(dek: bytes) -> str:
    """Names a data key in receipts (sha256 prefix; reveals nothing usable)."""
    return hashlib.sha256(b"guardrail-dek-fp\0" + dek).hexdigest()[:16]
