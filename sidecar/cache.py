"""Per-message results of a chat conversation, so each turn analyses only what is new.

A chat request re-sends the whole conversation every turn. The content and PII stages
look at each message on its own (their result for a message depends on its text, the
direction and the policy, nothing else), so their result for a message is kept, keyed
by (policy revision, stage, direction, BLAKE2b of the text), in a bounded LRU: turn 20
costs about what turn 1 costs. A policy edit changes the revision, so stale results are
never used; they age out.

Entries hold findings and edits, not the text (the key is a digest). Each worker process
has its own cache; a conversation served by two workers fills both, at most once each.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from sidecar.types import StageResult

Key = tuple[str, str, str, bytes]


def message_key(revision: str, stage: str, direction: str, text: str) -> Key:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return revision, stage, direction, digest


class MessageCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, StageResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> dict[Key, StageResult]:
        """A copy of what is cached, oldest first."""
        return dict(self._entries)

    def get(self, key: Key) -> StageResult | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: Key, result: StageResult) -> None:
        self._entries[key] = result
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
