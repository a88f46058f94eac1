"""The AuditAdmin gRPC service: token required, then verify, export, hold, erase."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from audit.store import NewRecord
from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from sidecar.auditing import open_store
from sidecar.errors import ConfigError
from sidecar.transport.admin import read_token
from tests.conftest import admin_stub, make_settings

TOKEN = "s3cret-token-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.AuditAdminStub]:
    tmp = tmp_path_factory.mktemp("admin")
    token_file = tmp / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    settings = make_settings(tmp, audit_admin_listen="127.0.0.1:0",
                             audit_admin_token_file=token_file)
    store = open_store(settings)
    store.append([NewRecord(tenant="acme", decision="MODIFY", subject_id="ada",
                            payload=b'{"messages": [{"role": "user", "content": "hi <PERSON>"}]}')
                  for _ in range(3)] + [NewRecord(tenant="globex", decision="ALLOW")])
    store.close()
    with admin_stub(settings) as stub:
        yield stub


AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),),
                                      (("authorization", TOKEN),)],
                         ids=["missing", "wrong", "no Bearer prefix"])
def test_calls_without_the_token_are_unauthenticated(
        admin: pb_grpc.AuditAdminStub, metadata: tuple[tuple[str, str], ...],
        caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        admin.Verify(pb.AuditVerifyRequest(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert TOKEN not in caplog.text and "wrong" not in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        list(admin.Export(pb.AuditExportRequest(), metadata=metadata, timeout=10))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_verify_export_hold_and_erase(admin: pb_grpc.AuditAdminStub) -> None:
    assert admin.Verify(pb.AuditVerifyRequest(), metadata=AUTH, timeout=10).ok
    everything = [json.loads(r.json) for r in admin.Export(
        pb.AuditExportRequest(), metadata=AUTH, timeout=10)]
    assert [r["tenant"] for r in everything] == ["acme"] * 3 + ["globex"]
    mine = [json.loads(r.json) for r in admin.Export(pb.AuditExportRequest(
        subject_id="ada", include_payload=True), metadata=AUTH, timeout=10)]
    assert len(mine) == 3
    assert mine[0]["payload"]["messages"][0]["content"] == "hi <PERSON>"
    hold = admin.Hold(pb.AuditHoldRequest(action="add", tenant="globex", reason="case 7"),
                      metadata=AUTH, timeout=10)
    assert hold.hold_id > 0
    assert admin.Hold(pb.AuditHoldRequest(action="release", hold_id=hold.hold_id,
                                          reason="case 7 closed"),
                      metadata=AUTH, timeout=10).changed
    with pytest.raises(grpc.RpcError) as caught:
        admin.Hold(pb.AuditHoldRequest(action="add"), metadata=AUTH, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A hold on the subject wins: FAILED_PRECONDITION naming it, until overridden.
    held = admin.Hold(pb.AuditHoldRequest(action="add", subject_id="ada", reason="case 8"),
                      metadata=AUTH, timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        admin.Erase(pb.AuditEraseRequest(subject_id="ada"), metadata=AUTH, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"hold {held.hold_id}" in caught.value.details() and "case 8" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        admin.Erase(pb.AuditEraseRequest(subject_id="ada", override_hold=True), metadata=AUTH,
                    timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        admin.Hold(pb.AuditHoldRequest(action="add", tenant="x"), metadata=AUTH, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # a hold needs a reason
    assert admin.Hold(pb.AuditHoldRequest(action="release", hold_id=held.hold_id,
                                          reason="settled"), metadata=AUTH, timeout=10).changed
    receipt = admin.Erase(pb.AuditEraseRequest(subject_id="ada"), metadata=AUTH, timeout=10)
    assert receipt.records_affected == 3 and len(receipt.keys_destroyed) == 1
    after = [json.loads(r.json) for r in admin.Export(pb.AuditExportRequest(
        subject_id="ada", include_payload=True), metadata=AUTH, timeout=10)]
    assert all(r["payload"] is None for r in after)
    assert admin.Verify(pb.AuditVerifyRequest(), metadata=AUTH, timeout=10).ok
    # Each hold and the erasure name the token that made them (the token file's name).
    actors = {(r["kind"], r["decision"], r["tags"].get("actor")) for r in (
        json.loads(x.json) for x in admin.Export(pb.AuditExportRequest(), metadata=AUTH,
                                                 timeout=10)) if r["kind"] != "inspection"}
    assert {("hold", "ADDED", "token:admin"), ("hold", "RELEASED", "token:admin"),
            ("erasure", "ERASED", "token:admin")} <= actors


def test_named_tokens_are_the_actors(tmp_path: Path) -> None:
    from sidecar.transport.admin import read_tokens

    path = tmp_path / "tokens"
    path.write_text(f"# who may call\nalice {TOKEN}\nbob {TOKEN[::-1]}\n")
    path.chmod(0o600)
    assert read_tokens(path) == {"alice": TOKEN, "bob": TOKEN[::-1]}
    path.write_text(f"alice {TOKEN}\nalice {TOKEN}\n")
    with pytest.raises(ConfigError, match="second token named 'alice'"):
        read_tokens(path)


@pytest.mark.parametrize(("content", "mode", "message"), [
    ("short", 0o600, "at least 32"), (TOKEN, 0o644, "readable by group or others")])
def test_bad_token_files_are_refused(tmp_path: Path, content: str, mode: int,
                                     message: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=message):
        read_token(path)
    with pytest.raises(ConfigError, match="needs GUARDRAIL_AUDIT_ADMIN_TOKEN_FILE"):
        read_token(None)
