"""The `guardrail` command.

    guardrail serve  [--listen ADDR] [--policies DIR] [--data-dir DIR]   run the sidecar
    guardrail inspect [--tenant T] [--app A] [--completion] < text        one verdict, as JSON
    guardrail policy check [DIR]                                          validate policy files
    guardrail policy test [DIR]                                           run *.tests.yaml cases
    guardrail policy status [--listen ADDR]                               what a sidecar serves
    guardrail audit verify | erase | export | sweep | hold | public-key    the audit trail
    guardrail store migrate --store postgresql://...                      fleet store schema
    guardrail health [--listen ADDR]                                      probe a running sidecar
    guardrail kube-inject [-f FILE] [--mode single|fleet]                 inject into manifests

Every flag also reads from the environment (GUARDRAIL_LISTEN, GUARDRAIL_POLICIES, ...).
Exit codes: 0 success, 1 a check failed (invalid policy, not serving, a tampered trail,
an erasure under legal hold), 2 bad usage or configuration, 3 an audit check that passed
but is unauthenticated (no pinned public key). Errors are one line each, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sidecar import __version__
from sidecar.config import Settings
from sidecar.errors import ConfigError, GuardrailError, PolicyError
from sidecar.wellformed import has_surrogates

if TYPE_CHECKING:
    from sidecar.workers import WorkerPool

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    # Every guardrail process is one core's worth of work (a worker, the front with
    # `--workers 0`, `inspect`, `policy test`): spaCy's NER multiplies matrices with
    # numpy's OpenBLAS (sidecar.pii.nlp.matmul_with_numpy), which otherwise starts a
    # thread per core that spins between a prompt's small products (outside trial:
    # 18 CPU-ms a request with --workers 0 against 11 with one thread). Read when numpy
    # loads, which importing this module does not do. An operator's own setting is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    stray = _not_utf8(args)
    if stray:
        print(f"error: {stray}: not valid UTF-8 (stray bytes in the argument); it would be "
              "recorded or sent as text", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except PolicyError as err:
        for issue in err.issues:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_FAILED
    except GuardrailError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.Error as err:  # the audit database failed under a command
        print(f"error: audit database: {err}; see README, 'When the audit database is "
              "damaged'", file=sys.stderr)
        return EXIT_FAILED
    except ConnectionError as err:  # the fleet store is unreachable or failed
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `guardrail audit export | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: value for name in ("listen", "policies", "data_dir", "spacy_model", "log_level",
                                 "allow_public_bind", "workers", "metrics_listen",
                                 "tls_cert_file", "tls_key_file", "tls_client_ca_file",
                                 "store", "gateway_listen", "upstream")
        if (value := getattr(args, name, None)) is not None
    }
    if getattr(args, "upstream_region", None):
        regions = {}
        for item in args.upstream_region:
            region, sep, url = item.partition("=")
            if not sep:
                raise ConfigError(f"--upstream-region: expected REGION=URL, got {region!r}")
            regions[region] = url
        overrides["upstream_regions"] = regions
    try:
        return Settings(**overrides)
    except ValidationError as err:
        problems = "; ".join(f"{_where(e['loc'], overrides)}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


def _where(location: tuple[Any, ...], overrides: dict[str, Any]) -> str:
    """A bad setting as the operator wrote it: `long_text_chars (GUARDRAIL_LONG_TEXT_CHARS)`
    or `listen (--listen)`, so the message names what to change (outside trial 13: only
    the field's name, which appears nowhere an operator sets it)."""
    name = ".".join(map(str, location)) or "settings"
    field = str(location[0]) if location else ""
    if field in overrides:
        return f"{name} (--{field.replace('_', '-')})"
    variable = f"GUARDRAIL_{field.upper()}"
    return f"{name} ({variable})" if field and variable in os.environ else name


def _serve(args: argparse.Namespace) -> int:
    from sidecar import logs
    from sidecar.pipeline import Limits, Pipeline, resources_from
    from sidecar.policy.reload import PolicyManager
    from sidecar.runner import InlineRunner, Runner, worker_count
    from sidecar.transport.server import serve

    started = time.perf_counter()  # `ready_after_s` counts from here: workers start early
    settings = _settings(args)
    logs.configure(settings.log_level)
    # Workers start while this process is still compiling (below): a SIGTERM then must
    # not kill it outright and leave them loading. It is noted and `serve` stops at
    # once, shutting the workers down as for a SIGTERM while serving. (SIGINT raises
    # KeyboardInterrupt, which the except below also sees.)
    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))
    limits = Limits.from_settings(settings)
    pool: WorkerPool | None = None  # once the snapshot exists

    def spawn_workers(snapshot: Path) -> None:
        # Workers compile the snapshot, never the live directory; they start loading
        # spaCy now, while this process compiles the same snapshot and opens the trail.
        nonlocal pool
        if count := worker_count(settings):
            from sidecar.workers import WorkerPool

            pool = WorkerPool(settings.model_copy(update={"policies": snapshot}), limits, count)
            pool.spawn()

    audit = None
    try:
        manager = PolicyManager(settings.policies, settings.data_dir, resources_from(settings),
                                on_snapshot=spawn_workers)
        pipeline = Pipeline(manager.current, limits)
        if settings.audit:
            from sidecar.auditing import AuditWriter, open_store, policy_change_record

            audit = AuditWriter(open_store(settings), lambda name: (
                manager.current.by_name[name].policy if name in manager.current.by_name
                else None), checkpoint_interval=settings.audit_checkpoint_interval)

            def record_change(name: str, old: str, new: str, file_hash: str) -> None:
                assert audit is not None
                audit.record_event(policy_change_record(name, old, new, file_hash))

            manager.on_change = record_change
            if settings.store:  # fleet mode: the local trail is an outbox, shipped from now on
                from sidecar.auditing import current_fleet

                audit.start_shipping(current_fleet(settings))
    except BaseException:
        if pool is not None:  # a start that fails leaves no worker behind
            pool.terminate()
        raise
    runner: Runner = pool if pool is not None else InlineRunner(pipeline, settings.max_queue)
    return asyncio.run(serve(settings, runner, manager, audit,
                             stop_requested=lambda: bool(stop_requested), started=started))


def _inspect(args: argparse.Namespace) -> int:
    from sidecar import logs
    from sidecar.pipeline import Pipeline
    from sidecar.pseudonyms import finish_locally
    from sidecar.types import Direction, Inspection

    settings = _settings(args)
    logs.configure("WARNING")
    text = sys.stdin.read()
    pipeline = Pipeline.from_settings(settings)
    direction = Direction.COMPLETION if args.completion else Direction.PROMPT
    inspection = Inspection.of_text(
        text, direction, tenant=args.tenant, app=args.app, request_id=args.request_id,
        user_region=args.user_region, target_region=args.target_region,
        output_schema=args.output_schema, explain=args.explain)
    # One request, no conversation: pseudonyms hold within this text only.
    verdict = finish_locally(inspection, pipeline.run(inspection))
    out: dict[str, Any] = {
        "decision": verdict.decision.name,
        "text": verdict.text,
        # `explanation` only with --explain (it is None otherwise).
        "findings": [{k: v for k, v in dataclasses.asdict(f).items()
                      if k != "explanation" or v is not None} for f in verdict.findings],
        "violations": [dataclasses.asdict(v) for v in verdict.violations],
        "schema_errors": [dataclasses.asdict(e) for e in verdict.schema_errors],
        "routing_tags": verdict.routing_tags,
        "policy": verdict.policy,
        "policy_revision": verdict.policy_revision,
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return EXIT_OK


def _policy_check(args: argparse.Namespace) -> int:
    from sidecar.policy.files import located
    from sidecar.policy.store import compile_directory
    from sidecar.types import StageResources

    settings = _settings(args)
    directory = Path(args.directory) if args.directory else settings.policies
    # Checking needs no real key and loads no model: it never touches the data directory.
    try:
        policies = compile_directory(directory, StageResources(
            settings.spacy_model, b"\0" * 32, b"\0" * 32))
    except PolicyError as err:  # files named as the user gave the directory
        raise PolicyError(located(err.issues, directory)) from None
    for compiled in policies.policies:
        scope = "default" if compiled.policy.is_default else "match"
        print(f"ok: {directory / compiled.file}: {compiled.name} ({scope}) revision "
              f"{compiled.revision[:12]}")
    return EXIT_OK


def _policy_test(args: argparse.Namespace) -> int:
    from sidecar import logs
    from sidecar.pipeline import Limits, Pipeline
    from sidecar.policy.files import located
    from sidecar.policy.store import compile_directory
    from sidecar.policy.testing import load_case_files, run_case
    from sidecar.types import StageResources

    settings = _settings(args)
    logs.configure("WARNING")
    directory = Path(args.directory) if args.directory else settings.policies
    zero = b"\0" * 32  # fixed keys: hash outputs and tag signatures are reproducible
    try:
        pipeline = Pipeline(compile_directory(directory, StageResources(settings.spacy_model,
                                                                        zero, zero)),
                            Limits.from_settings(settings))
        files = load_case_files(directory)
    except PolicyError as err:  # files named as the user gave the directory
        raise PolicyError(located(err.issues, directory)) from None
    if not files:
        print(f"error: no *.tests.yaml files in {directory}", file=sys.stderr)
        return EXIT_FAILED
    passed = failed = 0
    for name, cases in files:
        for case in cases.tests:
            problems = run_case(pipeline, case)
            if problems:
                failed += 1
                print(f"FAIL {name}: {case.name}")
                for problem in problems:
                    print("  " + problem.replace("\n", "\n  "))
            else:
                passed += 1
                if args.verbose:
                    print(f"PASS {name}: {case.name}")
    print(f"{passed} passed, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def _policy_status(args: argparse.Namespace) -> int:
    import datetime

    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    settings = _settings(args)
    with _channel(settings, args) as channel:
        try:
            stub = pb_grpc.GuardrailStub(channel)  # type: ignore[no-untyped-call]
            reply = stub.PolicyStatus(pb.PolicyStatusRequest(),
                                      timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"error: cannot get policy status from {settings.listen}: "
                  f"{err.code().name}", file=sys.stderr)
            return EXIT_FAILED

    def when(ms: int) -> str:
        if not ms:
            return "-"
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")

    print(f"{'policy':24s} {'revision':12s} {'mode':8s} {'loaded at':20s} source")
    for policy in reply.policies:
        name = policy.name + (" (default)" if policy.is_default else "")
        print(f"{name:24s} {policy.revision[:12]:12s} {policy.mode:8s} "
              f"{when(policy.loaded_at_unix_ms):20s} {policy.source}")
        if policy.last_error:
            print(f"  last error: {policy.last_error}")
    print(f"last reload attempt {when(reply.last_attempt_unix_ms)}, "
          f"last applied {when(reply.last_applied_unix_ms)}")
    for error in reply.errors:
        where = f"{error.file}:{error.line}" if error.line else error.file
        print(f"rejected: {where}: {error.path + ': ' if error.path else ''}{error.reason}",
              file=sys.stderr)
    return EXIT_FAILED if reply.errors else EXIT_OK


def _audit_store(args: argparse.Namespace) -> Any:
    from sidecar import logs
    from sidecar.auditing import open_store

    settings = _settings(args)
    logs.configure("WARNING")
    if settings.store:  # the whole fleet's trail, in PostgreSQL
        from sidecar.auditing import open_fleet_store

        return open_fleet_store(settings)
    if not (Path(settings.data_dir) / "audit" / "audit.db").exists():
        raise ConfigError(f"no audit trail in {settings.data_dir} (nothing was served there)")
    return open_store(settings)


EXIT_UNAUTHENTICATED = 3  # the trail is consistent, but nothing pinned says whose it is


def _actor(args: argparse.Namespace) -> str:
    """Who does it: --actor, or the OS user (said on stderr, so nobody is named silently)."""
    if getattr(args, "actor", None):
        return str(args.actor)
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        user = f"uid:{os.getuid()}"
    print(f"actor: {user} (the OS user; --actor NAME to record someone else)",
          file=sys.stderr)
    return user


def _pinned_keys(args: argparse.Namespace) -> list[str] | None:
    """The trusted checkpoint/manifest keys: --public-key (repeatable), --public-key-file,
    GUARDRAIL_AUDIT_PUBLIC_KEY (hex, comma-separated), GUARDRAIL_AUDIT_PUBLIC_KEY_FILE."""
    from audit.chain import normalize_public_key

    given: list[tuple[str, str]] = [("--public-key", key) for key in args.public_key or []]
    files = [("--public-key-file", path) for path in args.public_key_file or []]
    if not given and not files:
        env = os.environ.get("GUARDRAIL_AUDIT_PUBLIC_KEY", "")
        given = [("GUARDRAIL_AUDIT_PUBLIC_KEY", key) for key in env.split(",") if key.strip()]
        if os.environ.get("GUARDRAIL_AUDIT_PUBLIC_KEY_FILE"):
            files = [("GUARDRAIL_AUDIT_PUBLIC_KEY_FILE",
                      os.environ["GUARDRAIL_AUDIT_PUBLIC_KEY_FILE"])]
    for where, path in files:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"{where}: cannot read {path}: {err.strerror}") from None
        given += [(f"{where} {path}", line) for line in text.split() if line]
    keys = []
    for where, key in given:
        try:
            keys.append(normalize_public_key(key))
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return keys or None


def _unauthenticated(args: argparse.Namespace, what: str) -> int:
    """No pinned key: say so loudly; fail unless --insecure-any-key."""
    print(f"UNAUTHENTICATED: no pinned public key, so {what} proves only that the file is "
          "consistent with itself: anyone who can write it can re-sign it with a key of "
          "their own. Pin the trail's key (`guardrail audit public-key`, kept where the "
          "sidecar cannot change it): --public-key HEX, --public-key-file FILE or "
          "GUARDRAIL_AUDIT_PUBLIC_KEY.", file=sys.stderr)
    return EXIT_OK if args.insecure_any_key else EXIT_UNAUTHENTICATED


def _audit_public_key(args: argparse.Namespace) -> int:
    from audit.chain import public_key_of
    from sidecar.auditing import SIGNING_KEY_FILE

    settings = _settings(args)
    if settings.store:  # every chain in the store, and the key it is registered with
        store = _audit_store(args)
        for chain_id, key in store.chains():
            print(f"{key} {chain_id}")
        return EXIT_OK
    path = Path(settings.data_dir) / "keys" / SIGNING_KEY_FILE
    try:
        print(public_key_of(path))
    except FileNotFoundError:
        raise ConfigError(f"no audit signing key at {path} (nothing was served there)"
                          ) from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the audit signing key {path}: "
                          f"{getattr(err, 'strerror', None) or type(err).__name__}") from None
    return EXIT_OK


def _expected_head(args: argparse.Namespace) -> tuple[int, int, str] | None:
    """--expect-head N:SEQ:HASH (or GUARDRAIL_AUDIT_EXPECT_HEAD), as `audit head` prints."""
    import re

    text = args.expect_head or os.environ.get("GUARDRAIL_AUDIT_EXPECT_HEAD", "")
    if not text.strip():
        return None
    match = re.fullmatch(r"\s*#?(\d{1,18}):(\d{1,18}):([0-9a-fA-F]{64})\s*", text)
    if match is None:
        raise ConfigError("--expect-head: expected N:SEQ:HASH as `guardrail audit head` "
                          "prints it (checkpoint number, sequence number, 64 hex digits)")
    return int(match[1]), int(match[2]), match[3].lower()


def _audit_verify(args: argparse.Namespace) -> int:
    import tempfile

    from audit.store import snapshot

    pinned = _pinned_keys(args)
    expect = _expected_head(args)
    settings = _settings(args)
    if settings.store:
        if expect is not None:
            raise ConfigError("--expect-head checks one data directory's trail; with "
                              "--store, the store's anchors play that role")
        result = _audit_store(args).verify(pinned)
    else:
        from sidecar import logs
        from sidecar.auditing import open_store

        logs.configure("WARNING")
        directory = Path(settings.data_dir) / "audit"
        if not (directory / "audit.db").exists():
            raise ConfigError(f"no audit trail in {settings.data_dir} (nothing was served "
                              "there)")
        # A private copy: verifying never changes a byte of the evidence (README).
        with tempfile.TemporaryDirectory(prefix="guardrail-verify-") as private:
            snapshot(directory, Path(private) / "audit")
            store = open_store(settings, snapshot=Path(private) / "audit")
            try:
                result = store.verify(pinned, expect_head=expect, anchor_path=Path(
                    args.anchor) if args.anchor else None)
            finally:
                store.db.close()
                store.keys.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if not result.ok:
        seq = "-" if result.first_bad_seq is None else result.first_bad_seq
        print(f"FAILED at record seq={seq} id={result.first_bad_id or '-'}: "
              f"{result.reason} ({result.checked} records checked)", file=sys.stderr)
        for problem in result.problems[1:10]:
            print(f"  also {problem.describe()}", file=sys.stderr)
        if len(result.problems) > 10:
            print(f"  ... {len(result.problems) - 10} more", file=sys.stderr)
        return EXIT_FAILED
    anchored = "anchored" if result.anchored else "empty, nothing anchored yet"
    print(f"ok: {result.checked} records verify; head seq {result.head_seq}, signed through "
          f"seq {result.signed_seq}; {anchored}"
          f"{'; at or beyond the recorded head' if expect is not None else ''}")
    if result.unsigned and args.strict:
        print(f"FAILED: {result.unsigned} record(s) after the newest signed checkpoint "
              "(--strict)", file=sys.stderr)
        return EXIT_FAILED
    if result.warnings and args.strict:
        print("FAILED: the head anchor was reset (--strict): the trail was accepted as it "
              "was, not proven complete", file=sys.stderr)
        return EXIT_FAILED
    if pinned is None:
        return _unauthenticated(args, "this verification")
    return EXIT_OK


def _audit_head(args: argparse.Namespace) -> int:
    """The newest checkpoint as N:SEQ:HASH: record it where the pod cannot write, and
    give it back to `verify --expect-head` (a rollback below it then fails)."""
    import tempfile

    from audit.store import snapshot
    from sidecar.auditing import open_store

    settings = _settings(args)
    if settings.store:
        raise ConfigError("audit head works on one data directory; with --store, the "
                          "store keeps each chain's anchor")
    directory = Path(settings.data_dir) / "audit"
    if not (directory / "audit.db").exists():
        raise ConfigError(f"no audit trail in {settings.data_dir} (nothing was served there)")
    with tempfile.TemporaryDirectory(prefix="guardrail-head-") as private:
        snapshot(directory, Path(private) / "audit")
        store = open_store(settings, snapshot=Path(private) / "audit")
        try:
            row = store.db.conn.execute(
                "SELECT n, seq, hash FROM checkpoints WHERE n IS NOT NULL "
                "ORDER BY n DESC LIMIT 1").fetchone()
        finally:
            store.db.close()
            store.keys.close()
    if row is None:
        print("error: no checkpoint yet (nothing was signed)", file=sys.stderr)
        return EXIT_FAILED
    print(f"{row[0]}:{row[1]}:{row[2]}")
    print("record this line outside the pod; `guardrail audit verify --expect-head "
          "LINE` then fails on a trail rolled back below it", file=sys.stderr)
    return EXIT_OK


def _audit_erase(args: argparse.Namespace) -> int:
    from audit.store import LegalHoldError

    if not args.subject.strip():
        raise ConfigError("erase: --subject must not be empty")
    if args.override_hold and not (args.reason or "").strip():
        raise ConfigError("--override-hold needs --reason (it is recorded in the trail)")
    store = _audit_store(args)
    try:
        receipt = store.erase(args.subject, actor=_actor(args), reason=args.reason or "",
                              override_hold=args.override_hold)
    except LegalHoldError as err:
        print(f"error: {err} (--override-hold --reason TEXT)", file=sys.stderr)
        return EXIT_FAILED
    json.dump(dataclasses.asdict(receipt), sys.stdout, indent=2)
    print()
    return EXIT_OK


def _decision(value: str) -> str:
    from audit.export import DECISIONS

    if value.upper() not in DECISIONS:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} is not a decision: one of {', '.join(DECISIONS)} (any case)")
    return value.upper()


def _instant(value: str) -> float:
    """An RFC 3339 time with a zone (Z or an offset); a zone-less time is refused, not
    guessed as local time."""
    import datetime

    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} is not an RFC 3339 time such as 2026-11-22T08:00:00Z") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} has no time zone: add Z for UTC or an offset such as +01:00")
    return parsed.timestamp()


def _private_output(path: str) -> Any:
    """A file only its owner can read (exports may hold decrypted payloads): created
    0600 by open(2) itself; an existing file is made 0600 before a byte is written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}") from None
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", newline="", encoding="utf-8")


def _audit_export(args: argparse.Namespace) -> int:
    import csv

    from audit.export import COLUMNS, rows

    if args.since is not None and args.until is not None and args.since >= args.until:
        raise ConfigError("--since must be before --until")
    if args.subject is not None and not args.subject.strip():
        raise ConfigError("export: --subject must not be empty")
    actor = _actor(args) if args.include_payload else ""
    store = _audit_store(args)
    # Both files open before anything is recorded: an export that cannot be written
    # (no such directory, -o DIRECTORY) must not sign a checkpoint and move the anchor.
    out = _private_output(args.output) if args.output else sys.stdout
    manifest_out = _private_output(args.output + ".manifest.json") if args.output else None
    checkpoint = store.checkpoint(extra="export")
    selected = rows(store, tenant=args.tenant or "", app=args.app or "",
                    decision=args.decision or "", policy=args.policy or "",
                    subject_id=args.subject or "", since=args.since,
                    until=args.until, include_payload=args.include_payload)
    writer = csv.writer(out) if args.format == "csv" else None
    if writer is not None:
        writer.writerow([*COLUMNS, *(["payload"] if args.include_payload else [])])
    count = 0
    for row in selected:
        if writer is not None:
            writer.writerow([_cell(json.dumps(v) if isinstance(v, dict | list) else v)
                             for v in row.values()])
        else:
            out.write(_json_line(row) + "\n")
        count += 1
    filters = {k: v for k, v in vars(args).items()
               if k in ("tenant", "app", "decision", "policy", "format",
                        "include_payload") and v}
    for name in ("since", "until"):
        if getattr(args, name) is not None:
            filters[name] = _rfc3339(getattr(args, name))
    if args.subject:
        filters["subject_ref"] = store.subject_ref(args.subject)
    if args.include_payload:  # who read decrypted personal data, why, and how much
        store.record_access(actor, args.reason or "",
                            {k: str(v) for k, v in filters.items()}, count)
    if out is not sys.stdout:
        out.close()
        from audit.export import manifest_for

        manifest = manifest_for(Path(args.output), filters, count, checkpoint, store.signer)
        assert manifest_out is not None
        with manifest_out:
            manifest_out.write(json.dumps(manifest, indent=2) + "\n")
        print(f"exported {count} records to {args.output}, manifest "
              f"{args.output}.manifest.json", file=sys.stderr)
    else:
        print(f"exported {count} records (use -o FILE for a signed manifest)", file=sys.stderr)
    return EXIT_OK


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ TAB or CR
    (tenant and app names are chosen by clients: `=HYPERLINK(...)`) gets a leading
    single quote, as OWASP advises against CSV injection. JSON Lines stay exact."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _rfc3339(instant: float) -> str:
    from audit.export import rfc3339

    return rfc3339(instant)


def _audit_verify_export(args: argparse.Namespace) -> int:
    from audit.anchor import loads
    from audit.export import verify_export

    pinned = _pinned_keys(args)
    path = Path(args.file)
    manifest_path = Path(args.manifest) if args.manifest else Path(args.file + ".manifest.json")
    try:
        manifest = loads(manifest_path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read manifest {manifest_path}: {err.strerror}") from None
    except ValueError:
        raise ConfigError(f"manifest {manifest_path} is not JSON") from None
    try:
        problem = verify_export(path, manifest, pinned)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    if problem:
        print(f"FAILED: {path}: {problem}", file=sys.stderr)
        return EXIT_FAILED
    checkpoint = manifest.get("checkpoint")
    seq = checkpoint.get("seq") if isinstance(checkpoint, dict) else None
    print(f"ok: {path}: {_shown(manifest.get('records'))} records, signed by "
          f"{_shown(manifest.get('public_key'))[:16]}… against checkpoint seq {_shown(seq)}")
    # What the signature covers, not only that it holds: an export filtered to one
    # tenant, subject or time range verifies as well as a whole one (outside trial).
    filters = manifest.get("filters")
    filters = filters if isinstance(filters, dict) else {}
    shown = [f"{name}={_shown(value)}" for name, value in sorted(filters.items())
             if name not in ("format", "include_payload")]
    print(f"  covers: {', '.join(shown) if shown else 'every record (no filters)'}"
          f"{'; with decrypted payloads' if filters.get('include_payload') else ''}")
    named = manifest.get("file")
    print(f"  format {_shown(filters.get('format', 'jsonl'))}; file {_shown(named)}")
    if named != path.name:
        print(f"WARNING: the manifest names file {_shown(named)!r}, not {_shown(path.name)!r} "
              "(renamed, or another export's manifest)", file=sys.stderr)
    if pinned is None:
        return _unauthenticated(args, "this check")
    return EXIT_OK


def _shown(value: object) -> str:
    """A manifest's value as safe terminal text: control characters escaped (the
    filters hold names a client chose)."""
    text = str(value)
    return text if text.isprintable() else json.dumps(text)[1:-1]


def _audit_rotate_kek(args: argparse.Namespace) -> int:
    from audit.crypto import AuditKeyError, Kek

    try:
        new = Kek.from_file(Path(args.new_kek_file))
    except AuditKeyError as err:
        raise ConfigError(str(err)) from None
    if _settings(args).store:  # a rerun finds the fleet's index key under the new KEK
        from sidecar import logs
        from sidecar.auditing import open_fleet_store

        logs.configure("WARNING")
        store = open_fleet_store(_settings(args), rotating_to=new)
    else:
        store = _audit_store(args)
    old_id = store.kek.id
    try:
        count = store.rotate_kek(new, actor=_actor(args), reason=args.reason or "")
    except AuditKeyError as err:
        raise ConfigError(str(err)) from None
    if _settings(args).store:
        print(f"re-wrapped {count} data keys and the index key in the fleet store from KEK "
              f"{old_id} to KEK {new.id}. Roll the pods out with the new KEK now (until "
              "then they write with keys of their own), rerun this once every pod runs "
              "with it, then destroy the old KEK.")
        return EXIT_OK
    print(f"re-wrapped {count} data keys from KEK {old_id} to KEK {new.id}. Point "
          "GUARDRAIL_AUDIT_KEK_FILE at the new file and restart the sidecar (rerun this if it "
          "wrote keys meanwhile), then destroy the old KEK: copies of audit-keys.db made "
          "before can only be opened with it.")
    return EXIT_OK


def _audit_sweep(args: argparse.Namespace) -> int:
    report = _audit_store(args).sweep(actor=_actor(args))
    print(f"removed {report.removed} expired records; kept {report.held} under legal hold; "
          f"checkpoint at seq {report.checkpoint_seq}")
    return EXIT_OK


def _audit_reset_anchor(args: argparse.Namespace) -> int:
    if _settings(args).store:
        raise ConfigError(
            "audit reset-anchor works on one data directory; with --store there is no "
            "anchor to reset: the store keeps each chain's anchor and takes a pod's chain "
            "only in order, so a pod whose outbox was rolled back or replaced is refused "
            "(verify --store names it) and keeps its unshipped records in its outbox: "
            "keep that data directory as evidence and restart the pod on an empty one "
            "(and a new GUARDRAIL_INSTANCE_ID, if it sets one), which starts a new chain. "
            "See README 'Fleet mode'")
    if not args.reason.strip():
        raise ConfigError("reset-anchor: --reason must not be empty (it is recorded)")
    store = _audit_store(args)
    seq, _ = store.reset_anchor(_actor(args), args.reason)
    print(f"head anchor reset to seq {seq}; the reset is recorded in the trail")
    return EXIT_OK


def _audit_hold(args: argparse.Namespace) -> int:
    if args.hold_action == "add":
        if bool(args.subject) == bool(args.tenant):
            raise ConfigError("hold add: give exactly one of --subject or --tenant")
        if not (args.subject or args.tenant).strip():
            raise ConfigError("hold add: the subject or tenant must not be blank")
        if not args.reason.strip():
            raise ConfigError("hold add: --reason must not be empty")
    if args.hold_action == "release" and not (args.reason or "").strip():
        raise ConfigError("hold release: --reason is required (ending a hold lets "
                          "erasures and sweeps through; the reason is recorded)")
    store = _audit_store(args)
    if args.hold_action == "add":
        scope, ref = ("subject", args.subject) if args.subject else ("tenant", args.tenant)
        print(f"hold {store.hold(scope, ref, args.reason, _actor(args))} added")
    elif args.hold_action == "release":
        if not store.release(args.id, _actor(args), args.reason or ""):
            print(f"error: no active hold {args.id}", file=sys.stderr)
            return EXIT_FAILED
        print(f"hold {args.id} released")
    else:
        for hold in store.holds():
            state = "released" if hold["released"] else "active"
            print(f"{hold['id']:5d} {state:9s} {hold['scope']:8s} {hold['ref'][:24]:24s} "
                  f"{hold['actor'] or '-':12s} {hold['reason']}")
    return EXIT_OK


def _store_migrate(args: argparse.Namespace) -> int:
    from audit.pgstore import migrate, redact_url

    settings = _settings(args)
    if not settings.store:
        raise ConfigError("store migrate: give --store postgresql://... or GUARDRAIL_STORE")
    applied = migrate(settings.store)
    print(f"{redact_url(settings.store)}: applied migrations {applied}" if applied else
          f"{redact_url(settings.store)}: schema up to date")
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = _settings(args)
    with _channel(settings, args) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"not serving: {err.code().name}", file=sys.stderr)
            return EXIT_FAILED
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    if args.detail:
        from sidecar.health_detail import describe

        for line in describe(settings.metrics_listen, args.timeout):
            print(line)
    return EXIT_OK if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardrail", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"guardrail {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, server: bool = False) -> None:
        p.add_argument("--policies", type=Path, help="policy directory (GUARDRAIL_POLICIES)")
        p.add_argument("--data-dir", type=Path, help="keys and data (GUARDRAIL_DATA_DIR)")
        p.add_argument("--spacy-model", help="installed spaCy model (GUARDRAIL_SPACY_MODEL)")
        if server:
            _server_flags(p)

    serve = commands.add_parser("serve", help="run the sidecar")
    common(serve, server=True)
    serve.set_defaults(handler=_serve)

    inspect = commands.add_parser("inspect", help="inspect stdin once, print the verdict")
    common(inspect)
    inspect.add_argument("--tenant", default="")
    inspect.add_argument("--app", default="")
    inspect.add_argument("--request-id", default="cli")
    inspect.add_argument("--completion", action="store_true", help="inspect as a completion")
    inspect.add_argument("--user-region", default="")
    inspect.add_argument("--target-region", default="")
    inspect.add_argument("--output-schema", default="", help="schema id (completions only)")
    inspect.add_argument("--explain", action="store_true",
                         help="say why each PII finding was made: recognizer, pattern or "
                              "model, base score, context words, checksum")
    inspect.set_defaults(handler=_inspect)

    policy = commands.add_parser("policy", help="policy tools").add_subparsers(metavar="ACTION")
    check = policy.add_parser("check", help="validate a policy directory")
    check.add_argument("directory", nargs="?", help="defaults to GUARDRAIL_POLICIES or policies/")
    check.add_argument("--spacy-model", help=argparse.SUPPRESS)
    check.set_defaults(handler=_policy_check)

    tests = policy.add_parser("test", help="run the *.tests.yaml cases against the policies")
    tests.add_argument("directory", nargs="?", help="defaults to GUARDRAIL_POLICIES or policies/")
    tests.add_argument("--spacy-model", help=argparse.SUPPRESS)
    tests.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    tests.set_defaults(handler=_policy_test)

    status = policy.add_parser("status", help="revisions serving in a running sidecar; "
                                              "exit 1 when the latest edit was rejected")
    status.add_argument("--listen", help="HOST:PORT or unix:PATH (GUARDRAIL_LISTEN)")
    status.add_argument("--timeout", type=float, default=3.0)
    _client_tls_flags(status)
    status.set_defaults(handler=_policy_status)

    _add_tool_commands(commands)

    probe = commands.add_parser("health", help="ask a running sidecar whether it serves")
    probe.add_argument("--listen", help="HOST:PORT or unix:PATH (GUARDRAIL_LISTEN)")
    probe.add_argument("--timeout", type=float, default=3.0)
    probe.add_argument("--detail", action="store_true",
                       help="also say how the audit and, in fleet mode, the store and the "
                            "outbox are doing (from the metrics port); the exit code still "
                            "says only whether it serves")
    probe.add_argument("--metrics-listen", help="its metrics HOST:PORT, for --detail "
                                                "(GUARDRAIL_METRICS_LISTEN)")
    _client_tls_flags(probe)
    probe.set_defaults(handler=_health)
    return parser


def _server_flags(p: argparse.ArgumentParser) -> None:
    """What only `serve` takes: where to listen, TLS, metrics, workers, the fleet store."""
    p.add_argument("--listen", help="HOST:PORT or unix:PATH (GUARDRAIL_LISTEN)")
    p.add_argument("--allow-public-bind", action="store_true", default=None,
                   help="permit a non-loopback listen address")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    p.add_argument("--tls-cert", dest="tls_cert_file", type=Path,
                   help="PEM certificate chain: serve TLS (GUARDRAIL_TLS_CERT_FILE)")
    p.add_argument("--tls-key", dest="tls_key_file", type=Path,
                   help="its private key, mode 0600 (GUARDRAIL_TLS_KEY_FILE)")
    p.add_argument("--tls-client-ca", dest="tls_client_ca_file", type=Path,
                   help="require client certificates signed by this CA "
                        "(GUARDRAIL_TLS_CLIENT_CA_FILE)")
    p.add_argument("--metrics-listen",
                   help="HOST:PORT for Prometheus metrics, '' for none "
                        "(GUARDRAIL_METRICS_LISTEN)")
    p.add_argument("--workers", type=int,
                   help="worker processes; default one per usable CPU, 0 for inline "
                        "(GUARDRAIL_WORKERS)")
    p.add_argument("--store", help="fleet mode: postgresql://... URL of the shared "
                                   "store (GUARDRAIL_STORE)")
    p.add_argument("--gateway-listen", help="HOST:PORT for the OpenAI-compatible gateway "
                   "and LiteLLM's guardrail API; off unless set (GUARDRAIL_GATEWAY_LISTEN)")
    p.add_argument("--upstream", help="the gateway's model API, e.g. "
                   "https://api.openai.com/v1 (GUARDRAIL_UPSTREAM)")
    p.add_argument("--upstream-region", action="append", metavar="REGION=URL",
                   help="an upstream for one region, for residency routing; repeatable "
                        "(GUARDRAIL_UPSTREAM_REGIONS, a JSON object)")


def _add_store_commands(commands: Any) -> None:
    store = commands.add_parser("store", help="the fleet store (PostgreSQL)").add_subparsers(
        metavar="ACTION")
    migrate = store.add_parser("migrate", help="apply the store's schema migrations (pods "
                                               "also do at start; safe to run at once)")
    migrate.add_argument("--store", help="postgresql://... URL (GUARDRAIL_STORE)")
    migrate.set_defaults(handler=_store_migrate)


def _client_tls_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", type=Path, help="reach a TLS sidecar: the CA that signed "
                   "its certificate (default: GUARDRAIL_TLS_CERT_FILE, if set)")
    p.add_argument("--tls-client-cert", type=Path, help="client certificate (mutual TLS)")
    p.add_argument("--tls-client-key", type=Path, help="its private key")
    p.add_argument("--tls-server-name", help="the name in the sidecar's certificate, when "
                   "it is not the host dialled")


def _channel(settings: Settings, args: argparse.Namespace) -> Any:
    """A channel to the sidecar at `settings.listen`, over TLS when it serves TLS."""
    import grpc

    from sidecar.client import Tls, _credentials, _options

    ca = args.tls_ca or settings.tls_cert_file
    if ca is None:
        return grpc.insecure_channel(settings.listen)
    tls = Tls(ca, args.tls_client_cert, args.tls_client_key, args.tls_server_name)
    return grpc.secure_channel(settings.listen, _credentials(tls), _options(tls))


def _add_audit_commands(commands: Any) -> None:
    audit_parser = commands.add_parser("audit", help="the audit trail")
    audit = audit_parser.add_subparsers(metavar="ACTION")

    def audit_common(p: argparse.ArgumentParser, *, actor: bool = False) -> None:
        p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                       help="keys and data (GUARDRAIL_DATA_DIR)")
        p.add_argument("--store", default=argparse.SUPPRESS,
                       help="the fleet store, postgresql://... (GUARDRAIL_STORE): every "
                            "pod's chain")
        if actor:
            p.add_argument("--actor", default=argparse.SUPPRESS,
                           help="who does this, recorded in the trail (default: the OS user)")

    def pinning(p: argparse.ArgumentParser) -> None:
        p.add_argument("--public-key", action="append", metavar="HEX",
                       help="pinned Ed25519 public key (repeatable; GUARDRAIL_AUDIT_PUBLIC_KEY)")
        p.add_argument("--public-key-file", action="append", metavar="FILE",
                       help="a file holding pinned keys (GUARDRAIL_AUDIT_PUBLIC_KEY_FILE)")
        p.add_argument("--insecure-any-key", action="store_true",
                       help="exit 0 without a pinned key (the result is unauthenticated)")

    audit_common(audit_parser, actor=True)  # `audit --data-dir D verify` works too
    public_key = audit.add_parser("public-key", help="print the checkpoint signing public key "
                                                     "(pin it where the sidecar cannot write)")
    audit_common(public_key)
    public_key.set_defaults(handler=_audit_public_key)
    verify = audit.add_parser("verify", help="check the chain, the signed checkpoints and the "
                                             "head anchor; exit 1 naming the first problem")
    audit_common(verify)
    pinning(verify)
    verify.add_argument("--anchor", help="the head anchor file (default: "
                                         "DATA_DIR/keys/audit-anchor.json)")
    verify.add_argument("--strict", action="store_true",
                        help="fail when records after the newest checkpoint are unsigned, "
                             "or the head anchor was ever reset")
    verify.add_argument("--expect-head", metavar="N:SEQ:HASH",
                        help="a head printed by `audit head` and kept outside the pod: fail "
                             "unless the trail still holds it (GUARDRAIL_AUDIT_EXPECT_HEAD)")
    verify.set_defaults(handler=_audit_verify)
    head = audit.add_parser("head", help="print the newest checkpoint as N:SEQ:HASH, to keep "
                                         "outside the pod for verify --expect-head")
    audit_common(head)
    head.set_defaults(handler=_audit_head)
    erase = audit.add_parser("erase", help="GDPR erasure: crypto-shred a data subject "
                                           "(refused under a legal hold)")
    audit_common(erase, actor=True)
    erase.add_argument("--subject", required=True, help="the subject id the app sent")
    erase.add_argument("--reason", help="why (a request number); recorded")
    erase.add_argument("--override-hold", action="store_true",
                       help="erase despite a legal hold (needs --reason; recorded)")
    erase.set_defaults(handler=_audit_erase)
    _add_audit_export_commands(audit, audit_common, pinning)
    rotate = audit.add_parser("rotate-kek", help="re-wrap every data key under a new KEK")
    audit_common(rotate, actor=True)
    rotate.add_argument("--new-kek-file", required=True, help="0600 file, 32 base64 bytes")
    rotate.add_argument("--reason", help="why; recorded")
    rotate.set_defaults(handler=_audit_rotate_kek)

    sweep = audit.add_parser("sweep", help="delete expired records not under a legal hold")
    audit_common(sweep, actor=True)
    sweep.set_defaults(handler=_audit_sweep)
    reset = audit.add_parser("reset-anchor", help="accept the trail as it is (after a "
                                                  "restore or a loss); recorded")
    audit_common(reset, actor=True)
    reset.add_argument("--reason", required=True, help="why; recorded")
    reset.set_defaults(handler=_audit_reset_anchor)

    _add_audit_hold_commands(audit, audit_common)
    _add_store_commands(commands)


# Arguments that name files: Linux paths are bytes, and Python keeps a path's stray
# bytes as lone surrogates, which `open` takes back. Every other text argument is
# recorded (a reason, an actor) or sent (a tenant, a filter) as UTF-8.
_PATH_ARGUMENTS = frozenset({"directory", "output", "file", "manifest", "anchor", "filename",
                             "public_key_file", "new_kek_file"})


def _not_utf8(args: argparse.Namespace) -> str:
    """The first text argument that is not valid UTF-8, as its option; "" when none.

    Outside trial 10: `audit erase --reason` with a stray byte was chained into the trail
    for good, and from then on every JSON Lines export holding that event died half
    written."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if name not in _PATH_ARGUMENTS and any(isinstance(text, str) and has_surrogates(text)
                                               for text in values):
            return name if name in ("directory", "file") else "--" + name.replace("_", "-")
    return ""


def _json_line(row: dict[str, Any]) -> str:
    """A record as one JSON line; with \\u escapes where it holds text that is not valid
    Unicode (written to the trail before such text was refused), so the export never
    dies half written."""
    line = json.dumps(row, ensure_ascii=False)
    return json.dumps(row) if has_surrogates(line) else line


def _add_audit_export_commands(audit: Any, audit_common: Any, pinning: Any) -> None:
    export = audit.add_parser("export", help="records as JSON lines or CSV (metadata only "
                                             "unless --include-payload)")
    audit_common(export, actor=True)
    for name in ("tenant", "app", "policy", "subject"):
        export.add_argument(f"--{name}")
    export.add_argument("--reason", help="why (a request number); with --include-payload it "
                                         "is recorded in the trail with the actor")
    export.add_argument("--decision", type=_decision,
                        help="ALLOW, MODIFY, BLOCK, or an event's (ERASED, ADDED, ...); "
                             "any case")
    export.add_argument("--since", type=_instant, help="RFC 3339 time with a zone "
                                                       "(2026-11-22T08:00:00Z), inclusive")
    export.add_argument("--until", type=_instant, help="RFC 3339 time with a zone, exclusive")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--include-payload", action="store_true",
                        help="decrypt payloads (needs the KEK); with --subject: a GDPR "
                             "Art. 15 access export")
    export.add_argument("-o", "--output", help="file, created 0600 (default stdout)")
    export.set_defaults(handler=_audit_export)

    verify_export = audit.add_parser("verify-export", help="check an export file against its "
                                                           "signed manifest, offline")
    verify_export.add_argument("file")
    verify_export.add_argument("--manifest", help="default FILE.manifest.json")
    pinning(verify_export)
    verify_export.set_defaults(handler=_audit_verify_export)


def _hold_id(value: str) -> int:
    """A hold id as the stores keep them (SQLite's and PostgreSQL's 64-bit integers):
    a larger one was an OverflowError traceback (outside trial), now exit 2."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {value[:40]!r}") from None
    if not -(2 ** 63) <= number < 2 ** 63:
        raise argparse.ArgumentTypeError(f"{value[:40]} is not a hold id (out of range; "
                                         "see hold list)")
    return number


def _add_audit_hold_commands(audit: Any, audit_common: Any) -> None:
    hold = audit.add_parser("hold", help="legal holds: add, release, list")
    audit_common(hold, actor=True)
    actions = hold.add_subparsers(dest="hold_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="hold a subject's or a tenant's records")
    audit_common(add, actor=True)
    add.add_argument("--subject", help="hold everything about this subject id")
    add.add_argument("--tenant", help="hold everything of this tenant")
    add.add_argument("--reason", required=True, help="why (a case number); recorded")
    release = actions.add_parser("release", help="end a hold")
    audit_common(release, actor=True)
    release.add_argument("id", type=_hold_id, help="the hold's id (see hold list)")
    release.add_argument("--reason", required=True, help="why; recorded")
    listing = actions.add_parser("list", help="every hold, active or released")
    audit_common(listing)
    hold.set_defaults(handler=_audit_hold)


def _add_tool_commands(commands: Any) -> None:
    """Commands that need no running sidecar: the audit trail, kube-inject."""
    _add_audit_commands(commands)  # and `store`, the fleet's
    _add_kube_inject_command(commands)


def _kube_inject(args: argparse.Namespace) -> int:
    """YAML in (a file or stdin), YAML out; a refusal is one line and exit 2."""
    from sidecar.kubeinject import MAX_INPUT_BYTES, InjectError, Options, inject_text

    chosen = {name: value for name in ("mode", "image", "kek_secret", "store_secret",
                                       "signing_key_secret", "shared_keys_secret",
                                       "policies_configmap",
                                       "data_claim", "data_size", "outbox_size")
              if (value := getattr(args, name)) is not None}
    options = Options(**chosen)
    source = args.filename or "-"
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(source, "rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read {source}: {err.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InjectError(f"{source}: larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InjectError(f"{source}: not UTF-8 text (byte {err.start})") from None
    output, notes = inject_text(text, options)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output:
        try:
            Path(args.output).write_text(output)
        except OSError as err:
            raise ConfigError(f"cannot write {args.output}: {err.strerror}") from None
    else:
        sys.stdout.write(output)
    return EXIT_OK


def _add_kube_inject_command(commands: Any) -> None:
    inject = commands.add_parser(
        "kube-inject", help="add the sidecar to Deployment, StatefulSet and Pod manifests",
        description="Like istioctl kube-inject: reads manifests (a file or stdin), writes "
                    "them back with the guardrail as a native sidecar. Idempotent.")
    inject.add_argument("-f", "--filename", help="manifest file, '-' for stdin (default)")
    inject.add_argument("-o", "--output", help="write here instead of stdout")
    inject.add_argument("--mode", choices=["single", "fleet"],
                        help="single (default): SQLite on a PersistentVolumeClaim; fleet: "
                             "GUARDRAIL_STORE from a Secret, an emptyDir outbox")
    inject.add_argument("--image", help="the sidecar image (default guardrail-sidecar:"
                                        f"{__version__})")
    inject.add_argument("--kek-secret", help="Secret holding the audit KEK under key 'kek' "
                                             "(default guardrail-audit-kek)")
    inject.add_argument("--store-secret", help="fleet: Secret holding the postgresql:// URL "
                                               "under key 'url' (default guardrail-store)")
    inject.add_argument("--signing-key-secret", help="fleet: Secret holding the checkpoint "
                        "signing key (32 raw bytes) under key 'signing-key' (default "
                        "guardrail-audit-signing-key)")
    inject.add_argument("--shared-keys-secret", help="fleet: Secret holding the keys every "
                        "replica shares, under 'hash-key' and 'tags-key' (32+ raw bytes "
                        "each; default guardrail-shared-keys)")
    inject.add_argument("--policies-configmap", help="ConfigMap of policy files (default "
                                                     "guardrail-policies)")
    inject.add_argument("--data-claim", help="single, Pod or Deployment: the claim for the "
                                             "trail (default NAME-guardrail)")
    inject.add_argument("--data-size", help="single, StatefulSet: each replica's claim "
                                            "size (default 5Gi)")
    inject.add_argument("--outbox-size", help="fleet: the emptyDir outbox's size limit "
                                              "(default 1Gi)")
    inject.set_defaults(handler=_kube_inject)
