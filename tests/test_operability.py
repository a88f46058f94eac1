"""What an operator and an app developer see: metrics, the typed client, TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidecar.client import AsyncGuardrailClient, GuardrailCallError, GuardrailClient, Tls
from sidecar.config import Settings
from sidecar.errors import ConfigError
from sidecar.pipeline import Pipeline
from sidecar.runner import make_runner
from sidecar.transport.server import start_metrics, start_server
from tests.conftest import REPO, Sidecar, _ServerThread, make_settings

# -- metrics ---------------------------------------------------------------------------


def sample(page: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text page (0 when absent)."""
    for line in page.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, body = head.partition("{")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', body))
        if metric == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_metrics_count_decisions_findings_and_rules_by_closed_labels(sidecar: Sidecar) -> None:
    before = sidecar.scrape()
    sidecar.prompt("Mail jane.roe@example.com please", request_id="m-1", subject_id="subj-77")
    sidecar.prompt("my card is 4111 1111 1111 1111", request_id="m-2")
    sidecar.prompt("this is damn good", tenant="content", request_id="m-3")
    with pytest.raises(grpc.RpcError):
        sidecar.prompt("x" * (64 * 1024 + 1))
    after = sidecar.scrape()

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("guardrail_requests_total", policy="default", direction="prompt",
                decision="modify") == 1
    assert grew("guardrail_requests_total", policy="default", direction="prompt",
                decision="block") == 1
    # Named fully: another policy's series for the same type (earlier tests of the session
    # send tenant "content" e-mail addresses too) would otherwise be read instead.
    assert grew("guardrail_findings_total", policy="default", direction="prompt",
                entity_type="EMAIL_ADDRESS", action="replace") == 1
    assert grew("guardrail_violations_total", policy="content", rule="profanity") == 1
    assert grew("guardrail_refusals_total", direction="prompt", status="RESOURCE_EXHAUSTED") == 1
    assert grew("guardrail_stage_seconds_count", stage="pii") >= 2
    assert grew("guardrail_text_chars_count", direction="prompt") == 3
    assert grew("guardrail_audit_write_seconds_count") == 3
    assert sample(after, "guardrail_ready") == 1
    assert sample(after, "guardrail_workers") == 2
    assert sample(after, "guardrail_workers_alive") == 2
    # The three answered prompts went to workers (the oversized one was refused before).
    assert grew("guardrail_worker_batched_requests_total") == 3
    assert 1 <= grew("guardrail_worker_batches_total") <= 3
    assert "guardrail_audit_queue_depth" in after
    # Known label sets are on the page from the start, at 0 until their first event.
    for outcome in ("complete", "blocked", "abandoned", "failed"):
        assert f'guardrail_streams_total{{outcome="{outcome}"}}' in before
    assert 'guardrail_refusals_total{direction="completion",status="UNAVAILABLE"}' in before
    assert "guardrail_work_queue_depth" in after
    # No label may carry text, subject ids or request ids. Only the page's words are
    # searched: a sample's value is a number, and a timestamp such as 1.7953496661741118e+09
    # holds "4111" by chance.
    from prometheus_client.parser import text_string_to_metric_families

    words = [part for family in text_string_to_metric_families(after)
             for part in (family.name, family.documentation,
                          *(text for sample in family.samples
                            for text in (sample.name, *sample.labels, *sample.labels.values())))]
    assert any("EMAIL_ADDRESS" in word for word in words)  # the labels were read
    for value in ("jane.roe", "example.com", "4111", "damn", "subj-77", "m-1"):
        assert not [word for word in words if value in word], value


def test_the_refusal_series_cover_every_status_a_refusal_can_carry() -> None:
    """The series made at start (metrics.REFUSAL_STATUSES) are the statuses the doors
    answer refusals with: every GuardrailError's code, and INTERNAL for the rest. A new
    error kind with a new code must show up here, not as a series that appears late."""
    from sidecar import errors
    from sidecar.metrics import REFUSAL_STATUSES
    from sidecar.transport.status import code_for

    kinds = [kind for kind in vars(errors).values()
             if isinstance(kind, type) and issubclass(kind, errors.GuardrailError)]
    codes = {code_for(kind.__new__(kind)).name for kind in kinds} | {"INTERNAL"}
    assert codes == set(REFUSAL_STATUSES)


def test_metrics_refuse_a_public_address_and_a_taken_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a loopback"):
        start_metrics(make_settings(tmp_path, metrics_listen="0.0.0.0:0"))
    first = start_metrics(make_settings(tmp_path))
    assert first is not None
    try:
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            start_metrics(make_settings(tmp_path, metrics_listen=first.address))
    finally:
        first.close()
    assert start_metrics(make_settings(tmp_path, metrics_listen="")) is None


# -- the client ------------------------------------------------------------------------


def test_sync_client_wraps_a_model_call(sidecar: Sidecar) -> None:
    with GuardrailClient(sidecar.address, tenant="pseudo", timeout=30) as guard:
        ask = guard.inspect_prompt("Jane Doe asks about her refund", conversation_id="c-cl",
                                   subject_id="u-1")
        assert ask.modified and ask.text == "<PERSON_1> asks about her refund"
        assert ask.findings[0].entity_type == "PERSON" and ask.audit_id
        answer = guard.inspect_completion(f"Dear {ask.text.split()[0]}, it is on its way.",
                                          conversation_id="c-cl", subject_id="u-1")
        assert answer.text == "Dear Jane Doe, it is on its way."
        assert answer.restored == ("<PERSON_1>",)
        chat = guard.inspect_prompt(messages=[("user", "call me at jane@example.com")],
                                    tenant="")
        assert chat.messages == (("user", "call me at <EMAIL_ADDRESS>"),)
        blocked = guard.inspect_prompt("card 4111 1111 1111 1111", tenant="")
        assert blocked.blocked and blocked.text == ""
        updates = list(guard.stream_completion(["Write to jane", "@example.com today"],
                                               tenant=""))
        assert "".join(u.text for u in updates) == "Write to <EMAIL_ADDRESS> today"
        assert updates[-1].final and updates[-1].decision == "MODIFY"
        with pytest.raises(GuardrailCallError) as caught:
            guard.inspect_prompt()
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert not caught.value.retryable


def test_async_client_gives_the_same_answers(sidecar: Sidecar) -> None:
    async def run() -> tuple[str, str, str]:
        async with AsyncGuardrailClient(sidecar.address, timeout=30) as guard:
            prompt = await guard.inspect_prompt("mail jane@example.com")
            completion = await guard.inspect_completion("mail jane@example.com")

            async def chunks():  # type: ignore[no-untyped-def]
                for piece in ("mail ja", "ne@exa", "mple.com"):
                    yield piece

            streamed = "".join([u.text async for u in guard.stream_completion(chunks())])
            return prompt.text, completion.text, streamed

    assert asyncio.run(run()) == ("mail <EMAIL_ADDRESS>",) * 3


def test_client_reports_an_absent_sidecar_as_retryable() -> None:
    with GuardrailClient("127.0.0.1:1", timeout=0.5) as guard, \
            pytest.raises(GuardrailCallError) as caught:
        guard.inspect_prompt("hello")
    assert caught.value.retryable


# -- TLS -------------------------------------------------------------------------------


def _certificate(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, *, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _certificate("test CA", ca_key, ca_name, ca_key, ca=True)
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(role, key, ca_name, ca_key)
        files[role] = folder / f"{role}.pem"
        files[f"{role}-key"] = folder / f"{role}.key"
        files[role].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}-key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        files[f"{role}-key"].chmod(0o600)
    return files


def _serve(settings: Settings) -> _ServerThread:
    settings = settings.model_copy(update={"workers": 0, "policies": REPO / "policies",
                                           "audit": False})
    return _ServerThread(settings, make_runner(settings, Pipeline.from_settings(settings)))


def test_a_public_bind_needs_tls(tmp_path: Path, pki: dict[str, Path]) -> None:
    settings = make_settings(tmp_path, listen="0.0.0.0:0", allow_public_bind=True)
    with pytest.raises(ConfigError, match="without TLS"):
        asyncio.run(start_server(settings, None))  # type: ignore[arg-type]
    server = _serve(settings.model_copy(update={"tls_cert_file": pki["server"],
                                                "tls_key_file": pki["server-key"]}))
    try:
        port = server.running.address.rpartition(":")[2]
        with GuardrailClient(f"127.0.0.1:{port}", tls=Tls(pki["ca"]), timeout=30) as guard:
            assert guard.inspect_prompt("mail jane@example.com").text == "mail <EMAIL_ADDRESS>"
        with GuardrailClient(f"127.0.0.1:{port}", timeout=5) as plain:  # no TLS: no answer
            with pytest.raises(GuardrailCallError) as caught:
                plain.inspect_prompt("hello")
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_mutual_tls_refuses_clients_without_a_certificate(tmp_path: Path,
                                                          pki: dict[str, Path]) -> None:
    server = _serve(make_settings(tmp_path, tls_cert_file=pki["server"],
                                  tls_key_file=pki["server-key"],
                                  tls_client_ca_file=pki["ca"]))
    try:
        address = server.running.address
        with GuardrailClient(address, tls=Tls(pki["ca"]), timeout=5) as anonymous:
            with pytest.raises(GuardrailCallError) as caught:
                anonymous.inspect_prompt("hello")
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        known = Tls(pki["ca"], pki["client"], pki["client-key"])
        with GuardrailClient(address, tls=known, timeout=30) as guard:
            assert guard.inspect_prompt("hello").decision == "ALLOW"
        probe = subprocess.run(
            [str(REPO / ".venv/bin/guardrail"), "health", "--listen", address,
             "--tls-ca", str(pki["ca"]), "--tls-client-cert", str(pki["client"]),
             "--tls-client-key", str(pki["client-key"])],
            capture_output=True, text=True, timeout=60, check=False)
        assert (probe.returncode, probe.stdout.strip()) == (0, "SERVING")
    finally:
        server.stop()


def test_tls_settings_are_checked_before_serving(tmp_path: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        make_settings(tmp_path, tls_cert_file=pki["server"])
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki["server-key"].read_bytes())
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        asyncio.run(start_server(make_settings(tmp_path, tls_cert_file=pki["server"],
                                               tls_key_file=loose), None))  # type: ignore[arg-type]
    swapped = make_settings(tmp_path, tls_cert_file=pki["server-key"],
                            tls_key_file=pki["server-key"])
    with pytest.raises(ConfigError, match="no PEM certificate"):
        asyncio.run(start_server(swapped, None))  # type: ignore[arg-type]
