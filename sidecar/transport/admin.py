"""The AuditAdmin gRPC service: compliance operations behind a bearer token.

Off by default. When `audit_admin_listen` is set it runs as a second gRPC server in the
sidecar process, on its own socket or port, with its own connection to the audit store
(store work runs on one dedicated thread, never on the event loop). Every call must
carry `authorization: Bearer <token>`; the token is compared in constant time and a
failure is logged without it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc

from audit.export import rows
from audit.store import AuditStore
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.config import Settings
from sidecar.errors import ConfigError
from sidecar.keys import read_private_file
from sidecar.transport.handlers import add_service
from sidecar.transport.tls import bind

log = logging.getLogger(__name__)
T = TypeVar("T")
MIN_TOKEN_CHARS = 32


def read_token(path: Path | None) -> str:
    if path is None:
        raise ConfigError("the audit admin service needs GUARDRAIL_AUDIT_ADMIN_TOKEN_FILE")
    token = read_private_file(path, "audit admin token").decode("utf-8", "replace").strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the audit admin token must be at least {MIN_TOKEN_CHARS} "
                          "characters")
    return token


class AuditAdminServicer(pb_grpc.AuditAdminServicer):
    def __init__(self, store: AuditStore, token: str) -> None:
        self.store = store
        self._expected = f"Bearer {token}".encode()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-admin")

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(str(given).encode(), self._expected):
            log.warning("audit admin call refused", extra={
                "reason": "missing token" if not given else "wrong token",
                "peer": context.peer()})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "a valid 'authorization: Bearer <token>' is required")

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def Verify(self, request: pb.AuditVerifyRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> pb.AuditVerifyResponse:
        await self._authorize(context)
        result = await self._run(self.store.verify)
        return pb.AuditVerifyResponse(ok=result.ok, checked=result.checked,
                                      first_bad_seq=result.first_bad_seq or 0,
                                      first_bad_id=result.first_bad_id, reason=result.reason)

    async def Erase(self, request: pb.AuditEraseRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> pb.AuditEraseResponse:
        await self._authorize(context)
        if not request.subject_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "subject_id: required")
        receipt = await self._run(self.store.erase, request.subject_id)
        log.info("audit erasure", extra={"subject_ref": receipt.subject_ref[:16],
                                         "records": receipt.records_affected})
        return pb.AuditEraseResponse(
            subject_ref=receipt.subject_ref, records_affected=receipt.records_affected,
            keys_destroyed=receipt.keys_destroyed, time_unix_ms=int(receipt.time * 1000),
            checkpoint_seq=receipt.checkpoint_seq, checkpoint_hash=receipt.checkpoint_hash,
            conversations_erased=receipt.conversations)

    async def Export(self, request: pb.AuditExportRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.AuditRecord]:
        await self._authorize(context)
        import json

        def collect() -> list[str]:
            return [json.dumps(row, ensure_ascii=False) for row in rows(
                self.store, tenant=request.tenant, app=request.app, decision=request.decision,
                policy=request.policy, subject_id=request.subject_id,
                since=request.since_unix_ms / 1000 if request.since_unix_ms else None,
                until=request.until_unix_ms / 1000 if request.until_unix_ms else None,
                include_payload=request.include_payload)]

        for line in await self._run(collect):
            yield pb.AuditRecord(json=line)

    async def Hold(self, request: pb.AuditHoldRequest,
                   context: grpc.aio.ServicerContext[Any, Any]) -> pb.AuditHoldResponse:
        await self._authorize(context)
        if request.action == "add":
            if bool(request.subject_id) == bool(request.tenant):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "add: set exactly one of subject_id or tenant")
            scope, ref = ("subject", request.subject_id) if request.subject_id else \
                ("tenant", request.tenant)
            hold_id = await self._run(self.store.hold, scope, ref, request.reason)
            return pb.AuditHoldResponse(hold_id=hold_id, changed=True)
        if request.action == "release":
            changed = await self._run(self.store.release, int(request.hold_id))
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
    from sidecar.auditing import open_store

    assert settings.audit_admin_listen is not None
    listen = settings.audit_admin_listen
    token = read_token(settings.audit_admin_token_file)
    servicer = AuditAdminServicer(open_store(settings), token)
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
