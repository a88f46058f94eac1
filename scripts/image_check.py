"""`make image-check`: the image, run the way an operator runs it, proven end to end.

    python scripts/image_check.py [--image guardrail-sidecar:dev]

Runs the built image with no network (`--network none`), a read-only root filesystem,
a tmpfs on /tmp (shared by two containers, as a pod's memory-backed emptyDir is: so
mounted on the host, which needs root), a Docker volume for the data directory, and the
gRPC API on a Unix socket in a directory mounted from the host. The checkpoint signing
key comes the way `kube-inject --mode fleet` brings it: a Secret-like file (root-owned,
0440, group 10001, as the kubelet mounts it), read where it is mounted. Then:

1. waits for Docker's own HEALTHCHECK (the image's `guardrail health`) to say `healthy`;
2. sends real inspections through the socket from the host (the Python client) and checks
   each verdict: personal data replaced, a leaked credential blocked, a plain text allowed;
3. `docker stop` (SIGTERM): the sidecar drains and exits 0;
4. `guardrail audit verify --strict`, pinned to the public half of that key (computed on
   the host, outside anything the container wrote), run from the image on the volume:
   every record verifies, one per inspection, and the newest is covered by a signed
   checkpoint (so the final checkpoint was written on the way out).

Containers, volumes and host directories are removed at the end, pass or fail. Exit 0 when
every step passed, 1 otherwise, with the step that failed and the container's log tail
(logs never hold request text). Needs a Docker engine and the project's .venv (the client).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOCKET_DIR = "/run/guardrail"
DATA_DIR = "/var/lib/guardrail"
UID = 10001
# (text, expected decision, what must not come back): what an app sends, and what it gets.
CASES = [
    ("Please write to jane.doe@example.com about the refund.", "MODIFY",
     "jane.doe@example.com"),
    ("Deploy with aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY now",
     "BLOCK", ""),
    ("What are your opening hours on Saturday?", "ALLOW", ""),
]


class CheckFailed(Exception):
    """A step of the check did not hold."""


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise CheckFailed(f"docker {args[0]} exited {done.returncode}: "
                          f"{done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def step(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)


def wait_healthy(name: str, started: float, limit: float) -> float:
    """Poll Docker's health status (set by the image's HEALTHCHECK) until `healthy`."""
    since = time.monotonic()
    status = ""
    while time.monotonic() - since < limit:
        state = docker("inspect", "--format",
                       "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                       name)
        running, _, status = state.partition(" ")
        if running != "running":
            raise CheckFailed(f"the container stopped before it was healthy ({running})")
        if status == "healthy":
            return time.monotonic() - since
        if status == "unhealthy":
            break
        time.sleep(1)
    raise CheckFailed(f"Docker's health status is {status or 'missing'!r} after "
                      f"{time.monotonic() - since:.0f} s")


def inspect_through_socket(socket_path: Path) -> int:
    """Send CASES through the Unix socket from the host; check every verdict."""
    from sidecar.client import GuardrailClient

    client = GuardrailClient(f"unix:{socket_path}", tenant="acme", app="image-check",
                             timeout=30.0)
    try:
        for number, (text, expected, gone) in enumerate(CASES, 1):
            result = client.inspect_prompt(text, subject_id=f"subject-{number}")
            if result.decision != expected:
                raise CheckFailed(f"case {number}: decision {result.decision}, "
                                  f"expected {expected}")
            if gone and gone in result.text:
                raise CheckFailed(f"case {number}: the personal data came back unredacted")
            if not result.audit_id:
                raise CheckFailed(f"case {number}: no audit record id in the answer")
    finally:
        client.close()
    return len(CASES)


def run_guardrail(image: str, volume: str, kek: str,
                  *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `guardrail` command from the image against the data volume, offline."""
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only",
         "--tmpfs", "/tmp:rw,size=16m", "-v", f"{volume}:{DATA_DIR}",
         "-e", f"GUARDRAIL_AUDIT_KEK={kek}", "--entrypoint", "guardrail", image, *args],
        capture_output=True, text=True, timeout=120, check=False)


def signing_key_secret(directory: Path) -> str:
    """A signing key as the kubelet mounts a Secret with fsGroup: root-owned, 0440, group
    10001. Returns its public half (hex), computed here, outside the container."""
    from audit.chain import public_key_of
    from sidecar.kubeinject import SIGNING_KEY

    path = directory / SIGNING_KEY
    path.write_bytes(secrets.token_bytes(32))
    os.chown(path, 0, UID)
    path.chmod(0o440)
    directory.chmod(0o755)
    return public_key_of(path)


def check(image: str, health_limit: float) -> None:
    from sidecar.kubeinject import SIGNING_DIR, SIGNING_KEY

    started = time.monotonic()
    suffix = secrets.token_hex(4)
    name, volume = f"guardrail-check-{suffix}", f"guardrail-check-{suffix}"
    # A short path: a Unix socket path has a 108-byte limit.
    host_dir = Path(tempfile.mkdtemp(prefix="grc-", dir="/tmp"))
    secret_dir = Path(tempfile.mkdtemp(prefix="grc-secret-", dir="/tmp"))
    tmp_dir = Path(tempfile.mkdtemp(prefix="grc-tmp-", dir="/tmp"))
    os.chown(host_dir, UID, UID)
    host_dir.chmod(0o750)
    kek = base64.b64encode(secrets.token_bytes(32)).decode()
    docker("volume", "create", volume)
    try:
        # What the kubelet makes of an emptyDir with medium: Memory: a tmpfs on the host,
        # shared by the pod's containers (a Docker tmpfs is private to one container).
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=1777", "tmpfs",
                        str(tmp_dir)], check=True, capture_output=True)
        public_key = signing_key_secret(secret_dir)
        docker("run", "--detach", "--name", name, "--network", "none", "--read-only",
               "-v", f"{tmp_dir}:/tmp", "--stop-timeout", "30",
               "-v", f"{secret_dir}:{SIGNING_DIR}:ro",
               "-v", f"{volume}:{DATA_DIR}", "-v", f"{host_dir}:{SOCKET_DIR}",
               "-e", f"GUARDRAIL_LISTEN=unix:{SOCKET_DIR}/guardrail.sock",
               "-e", f"GUARDRAIL_AUDIT_SIGNING_KEY_FILE={SIGNING_DIR}/{SIGNING_KEY}",
               "-e", f"GUARDRAIL_AUDIT_KEK={kek}", image)
        step(f"started {name}: --network none --read-only, tmpfs /tmp, volume {volume}, "
             f"socket in {host_dir}", started)
        took = wait_healthy(name, started, health_limit)
        step(f"Docker health status: healthy ({took:.1f} s after start)", started)

        sent = inspect_through_socket(host_dir / "guardrail.sock")
        step(f"{sent} inspections through the Unix socket from the host: verdicts as "
             "expected (MODIFY, BLOCK, ALLOW)", started)

        before = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60)
        code = docker("inspect", "--format", "{{.State.ExitCode}}", name)
        if code != "0":
            raise CheckFailed(f"docker stop: the sidecar exited {code}, expected 0")
        step(f"docker stop: drained and exited 0 in {time.monotonic() - before:.1f} s",
             started)

        verify = run_guardrail(image, volume, kek, "audit", "verify", "--strict",
                               "--public-key", public_key)
        if verify.returncode != 0:
            raise CheckFailed(f"audit verify exited {verify.returncode}: "
                              f"{verify.stderr.strip()[-500:]}")
        counted = re.search(r"ok: (\d+) records verify", verify.stdout)
        if counted is None or int(counted.group(1)) < sent:
            raise CheckFailed(f"audit verify: expected at least {sent} records: "
                              f"{verify.stdout.strip()}")
        step(f"audit verify --strict (pinned key) on the volume: {verify.stdout.strip()}",
             started)
    except CheckFailed:
        logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True,
                              text=True, check=False)
        print("container log tail:\n" + (logs.stdout + logs.stderr)[-4000:], file=sys.stderr)
        raise
    finally:
        docker("rm", "--force", name, check=False)
        docker("volume", "rm", "--force", volume, check=False)
        subprocess.run(["umount", str(tmp_dir)], check=False, capture_output=True)
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(secret_dir, ignore_errors=True)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image))
    step(f"image-check passed: {image}, {size / 1e6:.0f} MB", started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="guardrail-sidecar:dev")
    parser.add_argument("--health-timeout", type=float, default=180.0,
                        help="seconds to wait for Docker's status `healthy`")
    args = parser.parse_args(argv)
    if shutil.which("docker") is None:
        print("error: no docker command (apt-get install docker.io, then start dockerd)",
              file=sys.stderr)
        return 2
    try:
        check(args.image, args.health_timeout)
    except (CheckFailed, subprocess.TimeoutExpired, subprocess.CalledProcessError) as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
