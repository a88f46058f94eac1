"""Signed routing tags: what a gateway needs to trust the sidecar's residency decision.

The signature is HMAC-SHA256, keyed with `<data-dir>/keys/tags.key` (share it with the
gateway), over this exact text, UTF-8 encoded:

    guardrail-tags-v1\\n<request_id>\\n<key>=<value>\\n<key>=<value>...

with every tag except `signature` itself, sorted by key. The `signature` tag is
`v1:<64 hex digits>`. Tag keys and values never contain a newline or `=` in keys (the
policy model guarantees it), so the text is unambiguous. Binding the request id stops a
tag set from being replayed onto another request.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_TAG = "signature"
VERSION = "v1"


def canonical(request_id: str, tags: dict[str, str]) -> bytes:
    lines = [f"guardrail-tags-{VERSION}", request_id]
    lines += [f"{key}={tags[key]}" for key in sorted(tags) if key != SIGNATURE_TAG]
    return "\n".join(lines).encode("utf-8")


def sign(key: bytes, request_id: str, tags: dict[str, str]) -> dict[str, str]:
    """`tags` plus their `signature` tag."""
    digest = hmac.new(key, canonical(request_id, tags), hashlib.sha256).hexdigest()
    return {**tags, SIGNATURE_TAG: f"{VERSION}:{digest}"}


def verify(key: bytes, request_id: str, tags: dict[str, str]) -> bool:
    """True when `tags` carry a valid signature for `request_id` (constant-time compare)."""
    expected = sign(key, request_id, tags)[SIGNATURE_TAG]
    return hmac.compare_digest(expected, tags.get(SIGNATURE_TAG, ""))
