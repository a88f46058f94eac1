"""Signed routing tags: what a gateway needs to trust the sidecar's residency decision.

The signature is HMAC-SHA256, keyed with `<data-dir>/keys/tags.key` (share it with the
gateway), over this exact text, UTF-8 encoded:

    guardrail-tags-v1\\n<request_id>\\n<key>=<value>\\n<key>=<value>...

with every tag except `signature` itself, sorted by key. The `signature` tag is
`v1:<64 hex digits>`. Tag keys and values never contain a newline or `=` in keys (the
policy model guarantees it), so the text is unambiguous. Binding the request id stops a
tag set from being replayed onto another request; the sidecar makes a request id when
the app sent none, so no two requests share one.

`sign` adds an `issued_at` tag (Unix seconds, an integer) before signing, so the
signature covers when the tags were issued: a gateway calls `verify(..., max_age=60)`
to reject stale tags, and remembers the request ids it accepted for that long to reject
a replay of fresh ones.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_TAG = "signature"
ISSUED_TAG = "issued_at"
VERSION = "v1"
MAX_CLOCK_SKEW = 5  # seconds a tag may appear to come from the future


def canonical(request_id: str, tags: dict[str, str]) -> bytes:
    lines = [f"guardrail-tags-{VERSION}", request_id]
    lines += [f"{key}={tags[key]}" for key in sorted(tags) if key != SIGNATURE_TAG]
    return "\n".join(lines).encode("utf-8")


def _signature(key: bytes, request_id: str, tags: dict[str, str]) -> str:
    digest = hmac.new(key, canonical(request_id, tags), hashlib.sha256).hexdigest()
    return f"{VERSION}:{digest}"


def sign(key: bytes, request_id: str, tags: dict[str, str],
         now: float | None = None) -> dict[str, str]:
    """`tags` plus `issued_at` (unless given) and their `signature` tag."""
    issued = {ISSUED_TAG: str(int(time.time() if now is None else now)), **tags}
    return {**issued, SIGNATURE_TAG: _signature(key, request_id, issued)}


def verify(key: bytes, request_id: str, tags: dict[str, str], *,
           max_age: float | None = None, now: float | None = None) -> bool:
    """True when `tags` carry a valid signature for `request_id` (constant-time compare)
    and, with `max_age`, were issued at most that many seconds ago (and not from the
    future beyond a small clock skew)."""
    valid = hmac.compare_digest(_signature(key, request_id, tags),
                                tags.get(SIGNATURE_TAG, ""))
    if not valid or max_age is None:
        return valid
    try:
        issued = int(tags.get(ISSUED_TAG, ""))
    except ValueError:
        return False
    age = (time.time() if now is None else now) - issued
    return -MAX_CLOCK_SKEW <= age <= max_age
