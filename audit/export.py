"""Signed exports: a manifest proves what an export file holds and when it was taken.

The manifest names the filters, the record count, the SHA-256 of the file, the chain
checkpoint it was taken against, and is signed with the audit trail's Ed25519 key, so
an auditor can check a file offline (`guardrail audit verify-export`) with nothing but
the public key.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from audit import chain

VERSION = "guardrail-export-v1"


def manifest_for(path: Path, filters: dict[str, Any], count: int, checkpoint: tuple[int, str],
                 signer: chain.Signer) -> dict[str, Any]:
    body = {
        "version": VERSION, "file": path.name, "sha256": _sha256(path), "records": count,
        "filters": filters, "checkpoint": {"seq": checkpoint[0], "hash": checkpoint[1]},
        "created": time.time(), "public_key": signer.public_hex(),
    }
    return {**body, "signature": signer.sign(chain.canonical(body))}


def verify_export(path: Path, manifest: dict[str, Any], public_key: str | None = None) -> str:
    """"" when `path` is what the manifest signed; otherwise what is wrong."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    if manifest.get("version") != VERSION:
        return f"not a {VERSION} manifest"
    if public_key is not None and manifest.get("public_key") != public_key:
        return "signed by another key than the one given"
    if not chain.verify_signature(str(manifest.get("public_key", "")), chain.canonical(body),
                                  str(manifest.get("signature", ""))):
        return "the manifest's signature is invalid"
    if _sha256(path) != manifest.get("sha256"):
        return "the file does not match the manifest's SHA-256 (altered or truncated)"
    return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
