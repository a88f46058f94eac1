"""Three `guardrail serve` processes ("pods", separate data directories) sharing one real
PostgreSQL store, reached over real gRPC, and the compliance CLI run against the store."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from tests.faults import Sidecar, guardrail, kill_leftovers, no_traceback
from tests.fleet.conftest import FleetSecrets, Postgres, fleet_secrets

PSEUDO = {"tenant": "pseudo"}


def _wait_shipped(url: str, ids: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            found = {r[0] for r in conn.execute("SELECT id FROM records WHERE id = ANY(%s)",
                                                (list(ids),))}
        if found == ids:
            return
        time.sleep(0.2)
    raise AssertionError(f"{len(ids - found)} of {len(ids)} records never reached the store")


def _wait_signed(url: str, timeout: float = 60) -> None:
    """Until every chain's newest record is under a signed checkpoint in the store.

    A pod signs its head every checkpoint interval (1 s in these tests) and ships the
    checkpoint after it, so a verify run seconds after the last write may meet records no
    checkpoint covers yet, which it cannot tell from deleted checkpoints: in a full suite on two
    loaded cores this test's verify once ran before two new chains' first checkpoints
    had shipped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            unsigned = conn.execute(
                "SELECT r.chain_id FROM (SELECT chain_id, MAX(seq) AS seq FROM records "
                "GROUP BY chain_id) r LEFT JOIN (SELECT chain_id, MAX(seq) AS seq FROM "
                "checkpoints GROUP BY chain_id) c ON c.chain_id = r.chain_id "
                "WHERE c.seq IS NULL OR c.seq < r.seq").fetchall()
        if not unsigned:
            return
        time.sleep(0.5)
    raise AssertionError(f"chains never signed in the store: {unsigned}")


class Fleet:
    def __init__(self, work: Path, url: str, keys: FleetSecrets, size: int = 3) -> None:
        self.work, self.url, self.keys = work, url, keys
        self.pods = [Sidecar(work / f"pod{n}", env=keys.env(url)) for n in range(size)]
        for pod in self.pods:
            pod.serving()

    def stop(self) -> None:
        """SIGTERM every pod at once, then wait for each: they drain side by side (a
        drain takes seconds: the final checkpoint, the last shipment)."""
        for pod in self.pods:
            if pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)
        for pod in self.pods:
            pod.stop()

    def cli(self, *args: str) -> tuple[int, str, str]:
        done = guardrail(*args, "--store", self.url, "--data-dir", str(self.work / "admin"),
                         env=self.keys.env(self.url))
        no_traceback(done.stdout + done.stderr)
        return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def fleet(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("fleet")
    running = Fleet(work, postgres.database(), fleet_secrets(work / "secrets"))
    try:
        yield running
    finally:
        running.stop()
        kill_leftovers()


def test_a_conversation_alternating_pods_restores_on_each(fleet: Fleet) -> None:
    a, b, c = fleet.pods
    first = a.prompt("John Smith wrote to us.", conversation_id="alt-1", **PSEUDO)
    assert first.text == "<PERSON_1> wrote to us."
    second = b.prompt("Ask Mary Jones to call John Smith.", conversation_id="alt-1", **PSEUDO)
    assert second.text == "Ask <PERSON_2> to call <PERSON_1>."
    assert c.stub is not None
    back = c.stub.InspectCompletion(pb.InspectRequest(
        text="<PERSON_2> will call <PERSON_1>.", conversation_id="alt-1", **PSEUDO), timeout=30)
    assert back.text == "Mary Jones will call John Smith."


def test_one_erasure_makes_the_subject_unreadable_everywhere(fleet: Fleet) -> None:
    before = {pod.prompt(f"note {n} from the subject", subject_id="erase-me",
                         tenant="acme").audit_id for n, pod in enumerate(fleet.pods)}
    _wait_shipped(fleet.url, before)
    code, out, err = fleet.cli("audit", "erase", "--subject", "erase-me", "--actor", "dpo",
                               "--reason", "GDPR request 12")
    assert code == 0, err
    receipt = json.loads(out)
    assert receipt["records_affected"] == 3
    with psycopg.connect(fleet.url) as conn:
        old_keys = {r[0] for r in conn.execute(
            "SELECT dek_id FROM records WHERE id = ANY(%s)", (list(before),))}
        assert conn.execute("SELECT COUNT(*) FROM data_keys WHERE dek_id = ANY(%s) AND "
                            "wrapped IS NOT NULL", (list(old_keys),)).fetchone()[0] == 0
    # Every pod writes new records of the subject with a new key, never the old one.
    time.sleep(0.5)  # NOTIFY is immediate; the cache bound is store_key_cache_seconds
    after = {pod.prompt("a later note", subject_id="erase-me", tenant="acme").audit_id
             for pod in fleet.pods}
    _wait_shipped(fleet.url, after)
    with psycopg.connect(fleet.url) as conn:
        new_keys = {r[0] for r in conn.execute(
            "SELECT dek_id FROM records WHERE id = ANY(%s)", (list(after),))}
    assert new_keys and not new_keys & old_keys
    code, out, err = fleet.cli("audit", "export", "--subject", "erase-me", "--include-payload")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    payloads = {row["id"]: row["payload"] for row in rows}
    assert all(payloads[i] is None for i in before)
    assert all(payloads[i] is not None for i in after)


def test_a_fleet_export_holds_every_pod_and_verifies_offline(fleet: Fleet) -> None:
    ids = {pod.prompt(f"export check {n}", tenant="acme").audit_id
           for n, pod in enumerate(fleet.pods)}
    _wait_shipped(fleet.url, ids)
    out_file = fleet.work / "export.jsonl"
    code, _, err = fleet.cli("audit", "export", "-o", str(out_file))
    assert code == 0, err
    exported = {json.loads(line)["id"] for line in out_file.read_text().splitlines()}
    assert ids <= exported
    checked = guardrail("audit", "verify-export", str(out_file), "--public-key",
                        fleet.keys.public_key)
    assert checked.returncode == 0, checked.stderr
    out_file.write_text(out_file.read_text().replace("export check 1", "export check X") + "\n")
    assert guardrail("audit", "verify-export", str(out_file), "--public-key",
                     fleet.keys.public_key).returncode == 1
    _wait_signed(fleet.url)
    code, out, err = fleet.cli("audit", "verify", "--public-key", fleet.keys.public_key)
    assert code == 0, err
    assert out.startswith("ok:")


def test_store_down_under_load_fails_nothing_loses_nothing(fleet: Fleet,
                                                          postgres: Postgres) -> None:
    """PostgreSQL stopped for 4 s under load (four of the shippers' 1 s retries, and
    every pod's outbox growing meanwhile): every inspection is answered (the outbox takes
    it), everything ships once it is back, nothing twice, every chain verifies."""
    answered: list[str] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def client(pod: Sidecar, n: int) -> None:
        while not stop.is_set():
            try:
                answered.append(pod.prompt(f"load {n} for Ann Lee", subject_id=f"u{n % 5}",
                                           tenant="acme").audit_id)
            except Exception as err:
                failed.append(err)

    threads = [threading.Thread(target=client, args=(pod, n))
               for n, pod in enumerate(fleet.pods)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    postgres.pause()
    try:
        time.sleep(4)
    finally:
        postgres.resume()
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failed, failed[:3]
    assert len(answered) > 30
    _wait_shipped(fleet.url, set(answered), timeout=90)
    with psycopg.connect(fleet.url) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM records WHERE id = "
                            "ANY(%s)", (answered,)).fetchone() == (len(answered),
                                                                   len(answered))
    code, _, err = fleet.cli("audit", "verify", "--public-key", fleet.keys.public_key)
    assert code == 0, err


def test_a_pod_killed_mid_shipping_ships_its_outbox_on_restart(fleet: Fleet,
                                                               postgres: Postgres) -> None:
    pod = fleet.pods[0]
    postgres.pause()  # nothing ships: the records wait in this pod's outbox
    try:
        waiting = {pod.prompt(f"before the kill {n}", tenant="acme").audit_id
                   for n in range(20)}
    finally:
        postgres.resume()
    pod.process.send_signal(signal.SIGKILL)
    pod.process.wait(timeout=30)
    data = fleet.work / "pod0"
    restarted = Sidecar(data, env=fleet.keys.env(fleet.url)).serving()
    fleet.pods[0] = restarted
    _wait_shipped(fleet.url, waiting)
    code, _, err = fleet.cli("audit", "verify", "--public-key", fleet.keys.public_key)
    assert code == 0, err


def test_verify_names_a_chain_with_a_gap_or_a_truncated_end(fleet: Fleet) -> None:
    ids = {fleet.pods[1].prompt(f"gap {n}", tenant="acme").audit_id for n in range(3)}
    _wait_shipped(fleet.url, ids)
    with psycopg.connect(fleet.url) as conn:
        chain_id, seq = conn.execute("SELECT chain_id, MIN(seq) FROM records WHERE id = "
                                     "ANY(%s) GROUP BY chain_id", (list(ids),)).fetchone()
        conn.execute("DELETE FROM records WHERE chain_id = %s AND seq = %s", (chain_id, seq))
    code, _, err = fleet.cli("audit", "verify", "--public-key", fleet.keys.public_key)
    assert code == 1
    assert f"chain {chain_id}: records {seq}-{seq} are missing" in err
    with psycopg.connect(fleet.url) as conn:  # now its newest records, unsigned or not
        conn.execute("DELETE FROM records WHERE chain_id = %s AND seq > %s", (chain_id, seq))
    code, _, err = fleet.cli("audit", "verify", "--public-key", fleet.keys.public_key)
    assert code == 1
    assert f"chain {chain_id}: records {seq}-" in err
