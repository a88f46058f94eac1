"""Presidio anonymizer operators that Presidio does not ship in the form we need.

- `keyed_hash`: HMAC-SHA256 with a secret key. Presidio's `hash` is a bare (salted)
  digest; a bare hash of an email or a card number is reversible by guessing, a keyed
  one is not without the key. Same value + same key = same token, so analytics can still
  join on it.
- `mask_keep_last`: mask all but the last N characters (`****1111`). Presidio's `mask`
  masks a fixed count, which cannot express "keep the last four" for values of varying
  length.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from presidio_anonymizer.entities import InvalidParamError
from presidio_anonymizer.operators import Operator, OperatorType

HASH_HEX_CHARS = 32  # 128 bits: collisions are negligible, tokens stay readable


class KeyedHash(Operator):
    def operate(self, text: str, params: dict[str, Any] | None = None) -> str:
        assert params is not None
        digest = hmac.new(params["key"], text.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"<{params['entity_type']}:{digest[:HASH_HEX_CHARS]}>"

    def validate(self, params: dict[str, Any] | None = None) -> None:
        key = (params or {}).get("key")
        if not isinstance(key, bytes) or len(key) < 16:
            raise InvalidParamError("keyed_hash needs a key of at least 16 bytes")

    def operator_name(self) -> str:
        return "keyed_hash"

    def operator_type(self) -> OperatorType:
        return OperatorType.Anonymize


class MaskKeepLast(Operator):
    def operate(self, text: str, params: dict[str, Any] | None = None) -> str:
        assert params is not None
        keep = min(int(params["keep_last"]), len(text))
        masking_char = str(params["masking_char"])
        return masking_char * (len(text) - keep) + text[len(text) - keep:]

    def validate(self, params: dict[str, Any] | None = None) -> None:
        params = params or {}
        if not isinstance(params.get("keep_last"), int) or params["keep_last"] < 0:
            raise InvalidParamError("mask_keep_last needs a non-negative keep_last")
        if not isinstance(params.get("masking_char"), str) or len(params["masking_char"]) != 1:
            raise InvalidParamError("mask_keep_last needs a single masking_char")

    def operator_name(self) -> str:
        return "mask_keep_last"

    def operator_type(self) -> OperatorType:
        return OperatorType.Anonymize
