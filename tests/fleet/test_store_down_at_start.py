"""A pod that starts while PostgreSQL is down (issue 19, round 3).

Real `guardrail serve` processes and a real PostgreSQL stopped and restarted. A pod
whose data directory reached the store once (it pinned the fleet's index key) starts
without it, answers every inspection into its outbox, says DOWN in the health detail,
and ships everything once the store answers; killed mid-retry, it ships on restart. A
data directory that never reached the store, a malformed URL or a role the server
refuses are fatal at start: exit 2, one clear line, no traceback, no password.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import grpc
import psycopg

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc
from tests.faults import Sidecar, guardrail, kill_leftovers, no_traceback
from tests.fleet.conftest import Postgres, fleet_secrets
from tests.fleet.test_outbox_bound import _health_detail, _metrics, _wait

TOKEN = "admin-token-for-the-offline-start-0123456789"


def _shipped(url: str, ids: set[str]) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM records WHERE id = "
                           "ANY(%s)", (list(ids),)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_pod_started_while_the_store_is_down_serves_and_ships_everything_later(
        postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.database()
    keys = fleet_secrets(tmp_path / "secrets")
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    # The AuditAdmin service too: it must not need the store at start either.
    env = keys.env(url, GUARDRAIL_STORE_OUTBOX_MAX_RECORDS="1000",
                   GUARDRAIL_AUDIT_ADMIN_LISTEN="127.0.0.1:0",
                   GUARDRAIL_AUDIT_ADMIN_TOKEN_FILE=str(token))
    data = tmp_path / "pod"
    admin = ["--store", url, "--data-dir", str(tmp_path / "admin")]
    pod = Sidecar(data, env=env).serving()  # reaches the store once: pins its index key
    try:
        old = pod.prompt("note before, from the subject", subject_id="subj-1",
                         tenant="acme").audit_id
        _wait(lambda: _shipped(url, {old}) == (1, 1), "the first record shipped")
        assert pod.stop() == 0
        erased = guardrail("audit", "erase", "--subject", "subj-1", "--actor", "dpo",
                           "--reason", "request 7", *admin, env=env)
        assert erased.returncode == 0, erased.stderr
        with psycopg.connect(url) as conn:
            [old_key] = conn.execute("SELECT dek_id FROM records WHERE id = %s",
                                     (old,)).fetchone() or [""]
        postgres.pause()
        answered: set[str] = set()
        try:
            pod = Sidecar(data, env=env).serving()
            for n in range(12):  # 0 failed inspections within the bound
                answered.add(pod.prompt(f"offline {n}, write to ann@example.com",
                                        tenant="acme", subject_id=f"subj-{n % 3}").audit_id)
            assert all(answered) and len(answered) == 12
            _wait(lambda: _metrics(pod)["guardrail_store_up"] == 0, "store_up 0")
            detail = _health_detail(pod)
            assert detail.startswith("SERVING\n") and "store: DOWN" in detail, detail
            # Killed mid-retry, restarted still offline: it serves again, loses nothing.
            pod.process.send_signal(signal.SIGKILL)
            pod.process.wait(timeout=30)
            pod = Sidecar(data, env=env).serving()
            answered |= {pod.prompt(f"after the kill {n}", tenant="acme",
                                    subject_id="subj-1").audit_id for n in range(3)}
            assert all(answered) and len(answered) == 15
        finally:
            postgres.resume()
        _wait(lambda: _shipped(url, answered) == (15, 15), "every record shipped once", 90)
        _wait(lambda: _metrics(pod)["guardrail_store_up"] == 1, "store_up 1")
        [listening] = pod.logged("audit admin service listening")
        with grpc.insecure_channel(str(listening["address"])) as channel:
            checked = pb_grpc.AuditAdminStub(channel).Verify(
                pb.AuditVerifyRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),),
                timeout=60)
        assert checked.ok and checked.checked >= 15, checked
        with psycopg.connect(url) as conn:
            # The subject erased before the outage: written offline with a new key, never
            # the destroyed one, which stays destroyed.
            new_keys = {r[0] for r in conn.execute(
                "SELECT r.dek_id FROM records r WHERE r.id = ANY(%s) AND r.subject_ref = "
                "(SELECT subject_ref FROM records WHERE id = %s)", (list(answered), old))}
            assert new_keys and old_key not in new_keys
            assert conn.execute("SELECT wrapped IS NULL FROM data_keys WHERE dek_id = %s",
                                (old_key,)).fetchone() == (True,)
            assert conn.execute("SELECT COUNT(*) FROM data_keys WHERE dek_id = ANY(%s) AND "
                                "wrapped IS NOT NULL", (list(new_keys),)).fetchone() == \
                (len(new_keys),)
        assert pod.stop() == 0
        done = guardrail("audit", "verify", "--public-key", keys.public_key, *admin, env=env)
        no_traceback(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout + done.stderr
        exported = guardrail("audit", "export", "--subject", "subj-1", "--include-payload",
                             *admin, env=env)
        assert exported.returncode == 0, exported.stderr
        rows = {row["id"]: row for row in map(json.loads, exported.stdout.splitlines())}
        assert rows[old]["payload"] is None  # erased before the outage
        assert sum(1 for i in answered if i in rows and rows[i]["payload"]) >= 7
    finally:
        if pod.process.poll() is None:
            pod.stop()
        kill_leftovers()


def test_what_no_retry_can_fix_is_fatal_at_start(postgres: Postgres, tmp_path: Path) -> None:
    """Exit 2, one line naming the cause, never a traceback or a password: a malformed
    URL, a role the server refuses, a schema newer than this code; and a data directory
    that never reached the store while it is down (it does not know the index key)."""
    keys = fleet_secrets(tmp_path / "secrets")
    url = postgres.database()
    bad_role = url.replace("user=postgres", "user=nobody&password=hunter2-secret")
    malformed = url + "&bogus_option=1"
    not_utf8 = "postgresql://ops:hunter2-%80secret@db.example/guard"  # was a traceback
    with psycopg.connect(url, autocommit=True) as conn:
        migrated = guardrail("store", "migrate", "--store", url)
        assert migrated.returncode == 0, migrated.stderr
        conn.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    # The four starts are independent (a fresh data directory each): started together,
    # they import and fail on both cores instead of one after another.
    refused = [(Sidecar(tmp_path / f"fresh{n}", env=keys.env(store)), expected)
               for n, (store, expected) in enumerate((
                   (bad_role, 'role "nobody" does not exist'), (malformed, "malformed"),
                   (not_utf8, "malformed"),
                   (url, "schema version 99, newer than this sidecar knows")))]
    for pod, expected in refused:
        code, out = pod.exits()
        no_traceback(out)
        assert code == 2, out
        assert expected in out and "hunter2-secret" not in out, out
    postgres.pause()
    try:
        code, out = Sidecar(tmp_path / "never", env=keys.env(url)).exits()
    finally:
        postgres.resume()
    no_traceback(out)
    assert code == 2 and "never reached the fleet store" in out, out
    kill_leftovers()


def test_a_store_that_comes_back_with_a_newer_schema_gets_nothing(
        postgres: Postgres, tmp_path: Path) -> None:
    """PostgreSQL stops and comes back migrated by a newer sidecar (schema version 99):
    the shipper, which re-checks after every outage, ships nothing into it and says why
    (store_refused, the reason in `problem`); records wait in the outbox. Back to a
    schema it knows, everything ships, once. In-process: the sidecar's own open_store,
    fleet and Shipper, a real PostgreSQL stopped and restarted."""
    from audit.store import NewRecord
    from sidecar.auditing import Shipper, current_fleet, open_store
    from tests.fleet.test_switch_to_fleet import _drop_fleet, _settings

    url = postgres.database()
    config = _settings(tmp_path / "pod", fleet_secrets(tmp_path / "secrets"), url)
    store = open_store(config)
    fleet = current_fleet(config)
    shipper = Shipper(store, fleet, interval=0.05, retry=0.2)
    try:
        first = store.append([NewRecord(tenant="acme", decision="ALLOW", retain_until=1e10)])
        _wait(lambda: _shipped(url, set(first)) == (1, 1), "shipped while up")
        # What a newer sidecar's migration leaves; this one sees it after the outage.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (99, 0)")
        postgres.pause()
        try:
            _wait(lambda: not shipper.up, "the shipper saw the outage")
            later = store.append([NewRecord(tenant="acme", decision="ALLOW",
                                            retain_until=1e10) for _ in range(3)])
        finally:
            postgres.resume()
        _wait(lambda: "schema version 99" in shipper.problem, "the newer schema refused")
        assert not shipper.up and not fleet.central.ready
        time.sleep(0.5)
        assert _shipped(url, set(later)) == (0, 0)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = 99")
        _wait(lambda: _shipped(url, set(later)) == (3, 3), "shipped once it is known", 30)
        assert shipper.up and not shipper.problem
    finally:
        shipper.close(drain=0)
        store.close()
        _drop_fleet(config)
