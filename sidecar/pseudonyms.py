"""The server-side half of `pseudonymize` and `restore`: finish the pending edits.

The pipeline runs in worker processes and knows nothing of conversations. Its PII stage
marks pseudonym edits (provisional `<PERSON>`) and placeholders to restore as pending
(see sidecar.types.Edit); here, in the server process, one vault exchange per
inspection issues or looks up each placeholder (audit.vault), and the verdict's text is
rebuilt from the message the app sent and the finished edits.

Without a conversation id (or without a vault, as in `guardrail inspect`) placeholders
hold within the one request and nothing is stored or restored. When the vault fails
(disk full, damaged file), the values are still replaced, by request-local
placeholders, and the response carries an `error.pseudonyms` violation: never a value
left in the clear.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from audit.vault import Exchange, Mappings, local_exchange
from sidecar.edits import apply_resolved
from sidecar.jsontext import escape_for_json_string
from sidecar.policy.model import Policy
from sidecar.stages.pii import PLACEHOLDER
from sidecar.types import Decision, Edit, Inspection, Message, Verdict, Violation

log = logging.getLogger(__name__)


def exchange_for(inspection: Inspection, verdict: Verdict) -> Exchange | None:
    """What the verdict's pending edits ask of the vault; None when nothing is pending."""
    pending = [e for edits in verdict.edits.values() for e in edits if e.pending]
    if not pending:
        return None
    # A placeholder the app already wrote must not be issued for something else.
    avoid = {match.group() for message in inspection.messages
             for match in PLACEHOLDER.finditer(message.content)}
    return Exchange(values=[(e.entity, e.value) for e in pending if e.pending == "pseudonym"],
                    tokens=[e.value for e in pending if e.pending == "restore"], avoid=avoid)


def finish(inspection: Inspection, verdict: Verdict, exchange: Exchange) -> Verdict:
    """The verdict with every pending edit done as the exchange says."""
    placeholders = iter(exchange.placeholders)
    restored: dict[str, None] = {}
    edits: dict[int, tuple[Edit, ...]] = {}
    for index, message_edits in verdict.edits.items():
        finished = []
        for edit in message_edits:
            if edit.pending == "pseudonym":
                finished.append(Edit(edit.start, edit.end, next(placeholders)))
            elif edit.pending == "restore":
                value = exchange.restored.get(edit.value)
                if value is None:
                    continue  # never issued here: a look-alike, left as it is
                restored[edit.value] = None
                finished.append(Edit(edit.start, edit.end,
                                     escape_for_json_string(value) if edit.json else value))
            else:
                finished.append(edit)
        if finished:
            edits[index] = tuple(finished)
    original = inspection.messages
    messages = tuple(Message(m.role, apply_resolved(m.content, edits[i])) if i in edits else m
                     for i, m in enumerate(original))
    changed = messages != original
    return dataclasses.replace(
        verdict, messages=messages, edits=edits, restored=tuple(restored),
        decision=Decision.MODIFY if changed else Decision.ALLOW,
        would_modify=verdict.would_modify or changed)


def finish_locally(inspection: Inspection, verdict: Verdict) -> Verdict:
    """Request-local placeholders, nothing stored or restored (`guardrail inspect`)."""
    exchange = exchange_for(inspection, verdict)
    if exchange is None:
        return verdict
    exchange.tokens = []
    return finish(inspection, verdict, local_exchange(exchange))


class Pseudonymizer:
    """Runs vault exchanges on one dedicated thread (the vault's connection is its own)."""

    def __init__(self, vault: Mappings | None,
                 policy_of: Callable[[str], Policy | None]) -> None:
        self.vault = vault
        self.policy_of = policy_of
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault")

    async def finish(self, inspection: Inspection, verdict: Verdict) -> Verdict:
        exchange = exchange_for(inspection, verdict)
        if exchange is None:
            return verdict
        policy = self.policy_of(verdict.policy)
        if self.vault is None or policy is None or not inspection.conversation_id:
            return finish_locally(inspection, verdict)
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, functools.partial(
                self.vault.exchange, inspection.tenant, inspection.subject_id,
                inspection.conversation_id, exchange,
                ttl=float(policy.pii.pseudonyms.ttl_seconds)))
        except Exception as err:  # disk full, damaged vault: still replace every value
            log.error("pseudonym vault failed; using request-local placeholders",
                      extra={"request_id": inspection.request_id,
                             "error_type": type(err).__name__})
            fallback = finish_locally(inspection, verdict)
            return dataclasses.replace(fallback, violations=(*fallback.violations, Violation(
                "error.pseudonyms", "error",
                "the pseudonym vault is unavailable: placeholders hold for this request only "
                "and none were restored")))
        return finish(inspection, verdict, exchange)

    def close(self) -> None:
        def shut() -> None:
            if self.vault is not None:
                self.vault.close()
        self._thread.submit(shut).result(timeout=30)
        self._thread.shutdown(wait=True)
