"""The AuditAdmin gRPC service: compliance operations behind a bearer token.

Off by default. When `audit_admin_listen` is set it runs as a second gRPC server in the
sidecar process, on its own socket or port, with its own connection to the audit store
(store work runs on one dedicated thread, never on the event loop). Every call must
carry `authorization: Bearer <token>`; the token is compared in constant time and a
failure is logged without it.

The token file holds one token per line, `NAME TOKEN` or just `TOKEN` (then named after
the file): the name is the actor recorded in the chain for every hold and erasure made
with it. A legal hold refuses `Erase` with FAILED_PRECONDITION naming the hold, unless
the request sets `override_hold` with a `reason` (both recorded).

In fleet mode (`store` set) it works on the whole fleet store (audit.pgstore.FleetStore):
every pod's chain, the central keys and vault; holds and erasures are events of the
compliance chain signed with this sidecar's key.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc

from audit.crypto import AuditKeyError
from audit.export import rows
from audit.store import AuditStore, LegalHoldError
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.config import Settings
from sidecar.errors import ConfigError
from sidecar.keys import read_private_file
from sidecar.transport.handlers import add_service
from sidecar.transport.tls import bind

if TYPE_CHECKING:
    from audit.pgstore import FleetStore

log = logging.getLogger(__name__)
T = TypeVar("T")
MIN_TOKEN_CHARS = 32
REASON_HEADER = "x-audit-reason"  # Export with include_payload: why (recorded)


def pinned_keys() -> list[str] | None:
    """The checkpoint keys the server trusts for `Verify`: GUARDRAIL_AUDIT_PUBLIC_KEY
    (hex, comma-separated) and GUARDRAIL_AUDIT_PUBLIC_KEY_FILE, as the CLI reads them.
    Mount them from where the pod cannot write (a ConfigMap), or they prove nothing."""
    from audit.chain import normalize_public_key

    given = [k for k in os.environ.get("GUARDRAIL_AUDIT_PUBLIC_KEY", "").split(",")
             if k.strip()]
    where = os.environ.get("GUARDRAIL_AUDIT_PUBLIC_KEY_FILE", "")
    if where:
        try:
            given += Path(where).read_text().split()
        except OSError as err:
            raise ConfigError(f"GUARDRAIL_AUDIT_PUBLIC_KEY_FILE: cannot read {where}: "
                              f"{err.strerror}") from None
    try:
        return [normalize_public_key(key) for key in given] or None
    except ValueError as err:
        raise ConfigError(f"GUARDRAIL_AUDIT_PUBLIC_KEY: {err}") from None


def read_tokens(path: Path | None) -> dict[str, str]:
    """{name: token} from the token file (`NAME TOKEN` or `TOKEN` per line)."""
    if path is None:
        raise ConfigError("the audit admin service needs GUARDRAIL_AUDIT_ADMIN_TOKEN_FILE")
    text = read_private_file(path, "audit admin token").decode("utf-8", "replace")
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise ConfigError(f"{path}:{number}: expected `NAME TOKEN` or `TOKEN`")
        name, token = (fields[0], fields[1]) if len(fields) == 2 else (path.stem, fields[0])
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"the audit admin token must be at least {MIN_TOKEN_CHARS} "
                              f"characters ({path}:{number})")
        if name in tokens:
            raise ConfigError(f"{path}:{number}: a second token named {name!r}")
        tokens[name] = token
    if not tokens:
        raise ConfigError(f"the audit admin token must be at least {MIN_TOKEN_CHARS} "
                          f"characters ({path} holds none)")
    return tokens


def read_token(path: Path | None) -> str:
    """The first token of the file (a single-token deployment)."""
    return next(iter(read_tokens(path).values()))


class AuditAdminServicer(pb_grpc.AuditAdminServicer):
    def __init__(self, store: AuditStore | FleetStore, tokens: dict[str, str] | str, *,
                 pinned: list[str] | None = None) -> None:
        self.store = store
        self.pinned = pinned if pinned is not None else pinned_keys()
        named = tokens if isinstance(tokens, dict) else {"admin": tokens}
        self._expected = {name: f"Bearer {token}".encode() for name, token in named.items()}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-admin")

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The name of the caller's token (the actor), or abort UNAUTHENTICATED."""
        given = str(dict(context.invocation_metadata() or ()).get("authorization", "")).encode()
        actor = ""
        for name, expected in self._expected.items():  # every one compared: no early exit
            if hmac.compare_digest(given, expected):
                actor = name
        if not actor:
            log.warning("audit admin call refused", extra={
                "reason": "missing token" if not given else "wrong token",
                "peer": context.peer()})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "a valid 'authorization: Bearer <token>' is required")
        return f"token:{actor}"

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def Verify(self, request: pb.AuditVerifyRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> pb.AuditVerifyResponse:
        await self._authorize(context)
        # Against the pinned keys when the server has them (GUARDRAIL_AUDIT_PUBLIC_KEY or
        # _FILE, as the CLI): a signing key swapped on the pod then fails. Without them
        # it can only check against the key this sidecar signs with, which whoever
        # replaced that key controls: the answer says it is unauthenticated.
        pinned = self.pinned
        keys = pinned or [self.store.signer.public_hex()]
        result = await self._run(lambda: self.store.verify(keys))
        reason = result.reason
        if result.ok and not pinned:
            reason = ("UNAUTHENTICATED: checked against this sidecar's own signing key, not "
                      "a pinned one (set GUARDRAIL_AUDIT_PUBLIC_KEY on the server, or run "
                      "`guardrail audit verify --public-key` with a key kept elsewhere)")
        elif result.ok and result.warnings:
            reason = f"WARNING: {result.warnings[0]}"
        return pb.AuditVerifyResponse(ok=result.ok, checked=result.checked,
                                      first_bad_seq=result.first_bad_seq or 0,
                                      first_bad_id=result.first_bad_id, reason=reason)

    async def Erase(self, request: pb.AuditEraseRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> pb.AuditEraseResponse:
        actor = await self._authorize(context)
        if not request.subject_id.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "subject_id: required (not blank)")
        if request.override_hold and not request.reason.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "reason: required with override_hold (it is recorded)")
        try:
            receipt = await self._run(lambda: self.store.erase(
                request.subject_id, actor=actor, reason=request.reason,
                override_hold=request.override_hold))
        except LegalHoldError as err:
            log.info("audit erasure refused: legal hold",
                     extra={"holds": [h["id"] for h in err.holds]})
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{err} (set override_hold and reason)")
            raise AssertionError from None  # abort raises
        except AuditKeyError as err:  # the index key is not the trail's: would miss
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
            raise AssertionError from None
        log.info("audit erasure", extra={"subject_ref": receipt.subject_ref[:16],
                                         "records": receipt.records_affected,
                                         "actor": actor,
                                         "overrode_holds": receipt.overrode_holds})
        return pb.AuditEraseResponse(
            subject_ref=receipt.subject_ref, records_affected=receipt.records_affected,
            keys_destroyed=receipt.keys_destroyed, time_unix_ms=int(receipt.time * 1000),
            checkpoint_seq=receipt.checkpoint_seq, checkpoint_hash=receipt.checkpoint_hash,
            conversations_erased=receipt.conversations)

    async def Export(self, request: pb.AuditExportRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.AuditRecord]:
        actor = await self._authorize(context)
        import json

        from audit.export import DECISIONS

        if request.decision and request.decision.upper() not in DECISIONS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"decision: one of {', '.join(DECISIONS)} (any case)")
        if request.since_unix_ms and request.until_unix_ms and \
                request.since_unix_ms >= request.until_unix_ms:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "since_unix_ms must be before until_unix_ms")
        if request.subject_id and not request.subject_id.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "subject_id: blank")
        # Why the payloads are read (a request number): metadata, recorded with the actor.
        reason = str(dict(context.invocation_metadata() or ()).get(REASON_HEADER, ""))

        def collect() -> list[str]:
            lines = [json.dumps(row, ensure_ascii=False) for row in rows(
                self.store, tenant=request.tenant, app=request.app, decision=request.decision,
                policy=request.policy, subject_id=request.subject_id,
                since=request.since_unix_ms / 1000 if request.since_unix_ms else None,
                until=request.until_unix_ms / 1000 if request.until_unix_ms else None,
                include_payload=request.include_payload)]
            if request.include_payload:  # reading personal data is evidence too
                filters = {name: str(getattr(request, name)) for name in (
                    "tenant", "app", "decision", "policy", "since_unix_ms", "until_unix_ms")
                    if getattr(request, name)}
                if request.subject_id:
                    filters["subject_ref"] = self.store.subject_ref(request.subject_id)
                self.store.record_access(actor, reason, filters, len(lines))
            return lines

        try:
            lines = await self._run(collect)
        except AuditKeyError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
            raise AssertionError from None
        if request.include_payload:
            log.info("audit export with payloads", extra={"actor": actor,
                                                          "records": len(lines)})
        for line in lines:
            yield pb.AuditRecord(json=line)

    async def Hold(self, request: pb.AuditHoldRequest,
                   context: grpc.aio.ServicerContext[Any, Any]) -> pb.AuditHoldResponse:
        actor = await self._authorize(context)
        if request.action == "add":
            if bool(request.subject_id) == bool(request.tenant):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "add: set exactly one of subject_id or tenant")
            if not request.reason.strip():
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "reason: required (a case number); it is recorded")
            scope, ref = ("subject", request.subject_id) if request.subject_id else \
                ("tenant", request.tenant)
            if not ref.strip():
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{'subject_id' if scope == 'subject' else 'tenant'}: blank")
            hold_id = await self._run(self.store.hold, scope, ref, request.reason, actor)
            return pb.AuditHoldResponse(hold_id=hold_id, changed=True)
        if request.action == "release":
            if not request.reason.strip():
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "reason: required to release a hold (it is recorded)")
            changed = await self._run(self.store.release, int(request.hold_id), actor,
                                      request.reason)
            return pb.AuditHoldResponse(hold_id=request.hold_id, changed=changed)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            "action: 'add' or 'release'")
        raise AssertionError  # abort raises

    def close(self) -> None:
        self._thread.submit(self.store.close).result(timeout=30)
        self._thread.shutdown(wait=True)


async def start_admin_server(settings: Settings) -> tuple[grpc.aio.Server, AuditAdminServicer,
                                                          str]:
    """Bind and start the admin server; (server, servicer, address)."""
    from sidecar.auditing import LazyFleetStore, open_store

    assert settings.audit_admin_listen is not None
    listen = settings.audit_admin_listen
    tokens = read_tokens(settings.audit_admin_token_file)
    # Fleet: opened at the first call, so that a pod starts while the store is down.
    store = cast("FleetStore", LazyFleetStore(settings)) if settings.store else \
        open_store(settings)
    servicer = AuditAdminServicer(store, tokens)
    server = grpc.aio.server()
    add_service(server, servicer, "AuditAdmin")
    port = bind(server, listen, settings, "the audit admin service")
    await server.start()
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:").removeprefix("//")
        os.chmod(path, 0o600)  # only the sidecar's user (and root) may connect
        address = listen
    else:
        address = f"{listen.rpartition(':')[0]}:{port}"
    return server, servicer, address
