"""Tamper evidence: a hash chain over records and Ed25519-signed checkpoints.

Each record's hash covers the previous record's hash, its own metadata (canonical JSON)
and the SHA-256 of its encrypted payload, never the plaintext, so erasing a payload
leaves the chain intact. Checkpoints sign (sequence, hash, time) with the sidecar's
Ed25519 key; one also signs the list of records a retention sweep removed, which lets
`verify` bridge the gap and still prove everything that remains.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = "0" * 64


def canonical(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def record_hash(prev_hash: str, metadata: dict[str, Any], payload_digest: str) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode() + b"\n")
    digest.update(canonical(metadata) + b"\n")
    digest.update(payload_digest.encode())
    return digest.hexdigest()


def checkpoint_message(seq: int, hash_: str, time: float, extra: str = "", *,
                       n: int | None = None, prev: str = "", index: str = "") -> bytes:
    """The bytes a checkpoint signs.

    v2 (every checkpoint since the anchor was introduced) also signs its own number `n`
    and `prev`, the SHA-256 of the previous checkpoint's signature, so checkpoints form
    a chain of their own: deleting one, or keeping an old one as the newest, breaks it.
    v3 also signs `index`, the fingerprint of the index key (`index_key_id`): a swapped
    `audit-index.key` would make every subject lookup (erase, hold, export) silently
    miss, so the key is pinned by every signature. v1 rows (n is None) and v2 rows come
    from trails written before; they are still checked.
    """
    if n is None:
        return f"guardrail-checkpoint-v1\n{seq}\n{hash_}\n{time!r}\n{extra}".encode()
    if index:
        return (f"guardrail-checkpoint-v3\n{n}\n{seq}\n{hash_}\n{time!r}\n{prev}\n"
                f"{index}\n{extra}").encode()
    return (f"guardrail-checkpoint-v2\n{n}\n{seq}\n{hash_}\n{time!r}\n{prev}\n"
            f"{extra}").encode()


def index_key_id(index_key: bytes) -> str:
    """Names the index key (subject_ref = HMAC(index_key, subject id)) without revealing
    it: what checkpoints sign, so a substituted key is found."""
    return hmac.new(index_key, b"guardrail-index-key-id", hashlib.sha256).hexdigest()[:32]


def signature_digest(signature_hex: str) -> str:
    """What the next checkpoint's `prev` names: SHA-256 of this one's signature."""
    return hashlib.sha256(signature_hex.encode()).hexdigest()


def public_key_of(private_path: Path) -> str:
    """The hex public half of a signing key file, without creating one."""
    raw = private_path.read_bytes()
    return Signer(Ed25519PrivateKey.from_private_bytes(raw)).public_hex()


def normalize_public_key(text: str) -> str:
    """A pinned key as 64 lower-case hex digits; ValueError with a clear reason if not."""
    key = text.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError("an Ed25519 public key is 64 hex digits "
                         "(print it with `guardrail audit public-key`)")
    return key


class Signer:
    """The Ed25519 key that signs checkpoints, kept 0600 next to the other keys."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        if path.exists():
            return cls(Ed25519PrivateKey.from_private_bytes(path.read_bytes()))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        return cls(private)

    def sign(self, message: bytes) -> str:
        return self._private.sign(message).hex()

    def public_hex(self) -> str:
        return self.public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def verify_signature(public_hex: str, message: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(signature_hex), message)
        return True
    except (InvalidSignature, ValueError):
        return False
