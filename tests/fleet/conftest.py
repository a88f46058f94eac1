"""A real PostgreSQL server for the fleet tests (scripts/pg.sh), started once per session
on a Unix socket in a temporary directory and stopped at the end, failures included.
Each test gets an empty database of its own."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

PG = REPO / "scripts" / "pg.sh"


@dataclass
class Postgres:
    directory: Path
    url: str  # the maintenance database

    def database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.replace("/guardrail?", f"/{name}?")

    def pause(self) -> None:
        subprocess.run([str(PG), "pause", str(self.directory)], check=True, timeout=120)

    def resume(self) -> None:
        subprocess.run([str(PG), "resume", str(self.directory)], check=True, timeout=120)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    # Under /tmp: a Unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="guardrail-pg-"))
    started = subprocess.run([str(PG), "start", str(directory)], capture_output=True,
                             text=True, timeout=600, check=False)
    if started.returncode != 0:
        subprocess.run([str(PG), "stop", str(directory)], check=False, timeout=120)
        raise RuntimeError(f"scripts/pg.sh start failed: {started.stderr[-2000:]}")
    try:
        yield Postgres(directory, started.stdout.strip())
    finally:
        subprocess.run([str(PG), "stop", str(directory)], check=False, timeout=120)


@pytest.fixture
def store_url(postgres: Postgres) -> str:
    return postgres.database()


@dataclass(frozen=True)
class FleetSecrets:
    """What a fleet's pods share from their Secrets: the KEK, the signing key, and the
    `hash` action's and routing tags' keys (one a file, one base64, as each may be)."""

    kek: str
    signing_key: Path
    public_key: str
    hash_key_file: Path
    tags_key: str

    def env(self, url: str, **more: str) -> dict[str, str]:
        # Pods sign every second (5 s in production): tests wait for checkpoints to ship.
        return {"GUARDRAIL_STORE": url, "GUARDRAIL_AUDIT_KEK": self.kek,
                "GUARDRAIL_AUDIT_CHECKPOINT_INTERVAL": "1",
                "GUARDRAIL_AUDIT_SIGNING_KEY_FILE": str(self.signing_key),
                "GUARDRAIL_HASH_KEY_FILE": str(self.hash_key_file),
                "GUARDRAIL_TAGS_KEY": self.tags_key, **more}


def fleet_secrets(directory: Path) -> FleetSecrets:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.chain import Signer

    directory.mkdir(parents=True, exist_ok=True)
    raw = secrets.token_bytes(32)
    key = directory / "signing.key"
    key.write_bytes(raw)
    key.chmod(0o600)
    public = Signer(Ed25519PrivateKey.from_private_bytes(raw)).public_hex()
    hash_key = directory / "hash.key"
    hash_key.write_bytes(secrets.token_bytes(32))
    # As Kubernetes mounts a Secret file (0440), where that is what it would be: root-owned.
    hash_key.chmod(0o440 if os.geteuid() == 0 else 0o600)
    return FleetSecrets(base64.b64encode(secrets.token_bytes(32)).decode(), key, public,
                        hash_key, base64.b64encode(secrets.token_bytes(32)).decode())


@pytest.fixture
def fleet_keys(tmp_path: Path) -> FleetSecrets:
    return fleet_secrets(tmp_path / "secrets")
