"""Build and run the gRPC server: Guardrail service, health, reflection, graceful stop.

Start-up order matters to a pod: the port opens at once with health NOT_SERVING (so
probes get an answer), models load and warm up off the event loop, then health turns
SERVING. On SIGTERM health turns NOT_SERVING first, in-flight calls get
`shutdown_grace` seconds to finish, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
from sidecar.auditing import AuditWriter
from sidecar.config import Settings
from sidecar.errors import ConfigError
from sidecar.metrics import Metrics
from sidecar.policy.model import Policy
from sidecar.policy.reload import PolicyManager
from sidecar.pseudonyms import Pseudonymizer
from sidecar.runner import Runner
from sidecar.service.inspector import Inspector
from sidecar.streaming import StreamLimits
from sidecar.transport.handlers import add_service
from sidecar.transport.servicer import GuardrailServicer
from sidecar.transport.tls import bind

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Guardrail"].full_name


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped in grpc-stubs)
    servicer: GuardrailServicer
    runner: Runner
    address: str
    audit: AuditWriter | None = None
    pseudonyms: Pseudonymizer | None = None
    metrics: Metrics | None = None
    gateway: Any = None  # sidecar.gateway.app.Gateway, when gateway_listen is set

    async def mark_serving(self) -> None:
        self.servicer.ready = True
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        started = time.monotonic()
        await self.health.enter_graceful_shutdown()
        await self.servicer.drain(grace)  # every door's calls: they share the inspector
        if self.gateway is not None:
            await self.gateway.stop()
        await self.server.stop(max(0.0, grace - (time.monotonic() - started)))
        await self.runner.close()
        loop = asyncio.get_running_loop()
        if self.pseudonyms is not None:
            await loop.run_in_executor(None, self.pseudonyms.close)
        if self.audit is not None:  # flush, then a final signed checkpoint
            await loop.run_in_executor(None, self.audit.close)
        if self.metrics is not None:
            await loop.run_in_executor(None, self.metrics.close)


async def start_server(settings: Settings, runner: Runner,
                       policies: PolicyManager | None = None,
                       audit: AuditWriter | None = None,
                       pseudonyms: Pseudonymizer | None = None, *,
                       metrics: Metrics | None = None) -> RunningServer:
    """Bind `settings.listen` (port 0 picks a free port) and start serving, not yet ready."""
    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ])
    limits = StreamLimits(
        holdback=settings.stream_holdback_chars, min_release=settings.stream_min_release_chars,
        context=settings.stream_context_chars, max_bytes=settings.max_text_bytes)
    inspector = Inspector(runner, audit, pseudonyms, metrics, stream_limits=limits)
    servicer = GuardrailServicer(runner, policies, audit, pseudonyms, stream_limits=limits,
                                 stream_idle_timeout=settings.stream_idle_timeout,
                                 metrics=metrics, inspector=inspector)
    streams = servicer.streams  # what bounds a stream beyond StreamLimits
    streams.max_seconds = settings.stream_max_seconds
    streams.max_streams = settings.max_streams
    streams.max_held_bytes = settings.stream_held_bytes
    add_service(server, servicer, "Guardrail", max_bytes=settings.max_text_bytes,
                refused=servicer.refused_unread)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = bind(server, settings.listen, settings, "the guardrail")
    if settings.listen.startswith("unix:"):
        address = settings.listen
    else:
        address = f"{settings.listen.rpartition(':')[0]}:{port}"
    await server.start()
    if address.startswith("unix:"):
        os.chmod(address.removeprefix("unix:").removeprefix("//"), 0o660)
    running = RunningServer(server, health_servicer, servicer, runner, address, audit,
                            pseudonyms, metrics)
    if settings.gateway_listen:  # the HTTP doors, on the same inspector (and readiness)
        from sidecar.gateway.app import start_gateway

        try:
            running.gateway = await start_gateway(settings, inspector)
        except BaseException:
            await server.stop(0)
            raise
    if metrics is not None:
        metrics.watch(lambda: _gauges(running, policies))
    return running


def start_metrics(settings: Settings) -> Metrics | None:
    """The metrics endpoint, when `metrics_listen` is set (loopback unless allowed)."""
    if not settings.metrics_listen:
        return None
    if Settings.is_public_address(settings.metrics_listen) and not settings.allow_public_bind:
        raise ConfigError(f"refusing to serve metrics on {settings.metrics_listen}: it is "
                          "not a loopback address; use 127.0.0.1 or --allow-public-bind")
    metrics = Metrics()
    try:
        metrics.address = metrics.serve(settings.metrics_listen)
    except OSError as err:
        raise ConfigError(f"cannot serve metrics on {settings.metrics_listen}: "
                          f"{err.strerror or err}; set GUARDRAIL_METRICS_LISTEN to another "
                          "port, or to an empty value to turn metrics off") from None
    return metrics


def _gauges(running: RunningServer,
            policies: PolicyManager | None) -> list[tuple[str, str, str, float]]:
    """What the front process knows now: readiness, load, workers, queues, reloads."""
    load = running.runner.load()
    values = [
        ("gauge", "guardrail_ready", "1 once models are loaded and warm, 0 while draining",
         float(running.servicer.ready and not running.servicer.draining)),
        ("gauge", "guardrail_in_flight", "Calls being answered", running.servicer.in_flight),
        ("gauge", "guardrail_streams_open", "Streamed completions in progress",
         running.servicer.streams.open_streams),
        ("gauge", "guardrail_work_queue_depth", "Inspections waiting for or running on a "
         "worker", load.queued),
        ("gauge", "guardrail_workers", "Worker processes configured", load.workers),
        ("gauge", "guardrail_workers_alive", "Worker processes up and serving",
         load.workers_alive),
        ("counter", "guardrail_worker_restarts", "Worker processes that exited and were "
         "replaced", load.worker_restarts),
        ("counter", "guardrail_worker_batches", "Batches handed to worker processes",
         load.batches),
        ("counter", "guardrail_worker_batched_requests", "Requests in those batches (their "
         "ratio to guardrail_worker_batches is the mean batch)", load.batched_requests),
    ]
    if running.audit is not None:
        values.append(("gauge", "guardrail_audit_queue_depth", "Audit records waiting to be "
                       "committed", running.audit.queued))
        values.append(("counter", "guardrail_audit_commits", "Audit transactions committed "
                       "(records per commit: guardrail_audit_records_committed over this)",
                       running.audit.batches))
        values.append(("counter", "guardrail_audit_records_committed", "Audit records "
                       "committed", running.audit.committed))
        values.append(("counter", "guardrail_audit_write_failures", "Audit records that "
                       "could not be written (disk full, database damaged or deleted)",
                       running.audit.failures))
        shipper = running.audit.shipper
        if shipper is not None:  # fleet mode
            values += [
                ("gauge", "guardrail_store_up", "1 when the last shipping to the fleet store "
                 "succeeded", float(shipper.up)),
                ("gauge", "guardrail_outbox_records", "Audit records in the local outbox "
                 "(not yet shipped, or shipped and not yet pruned)",
                 running.audit.store.outbox_records),
                ("gauge", "guardrail_outbox_limit", "Outbox records past which records are "
                 "refused (on_error decides)", running.audit.store.outbox_limit or 0),
                ("counter", "guardrail_store_shipped_records", "Audit records shipped to the "
                 "fleet store", shipper.shipped),
                ("counter", "guardrail_store_ship_failures", "Shipping attempts that failed "
                 "(store unreachable)", shipper.failures),
                ("gauge", "guardrail_store_refused", "1 when the store refuses this chain "
                 "(rolled back or altered outbox; see the logs)", float(bool(shipper.problem))),
            ]
    if policies is not None:
        values += [
            ("counter", "guardrail_policy_reloads", "Policy changes applied",
             policies.applied),
            ("counter", "guardrail_policy_reload_failures", "Policy changes rejected "
             "(the previous revision kept serving)", policies.rejected),
            ("gauge", "guardrail_policies", "Policies being served",
             len(policies.current.policies)),
        ]
    return values


async def serve(settings: Settings, runner: Runner, policies: PolicyManager,
                audit: AuditWriter | None = None, *,
                stop_requested: Callable[[], bool] = lambda: False,
                started: float | None = None) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code. SIGHUP reloads policies.

    `stop_requested`: whether a SIGTERM came before this could handle it (while the
    caller compiled policies, with workers already loading): then it stops as for one
    that comes now. `started`: the `time.perf_counter()` the start began at, for the
    `serving` line's `ready_after_s` (default: now)."""
    started = time.perf_counter() if started is None else started
    metrics = start_metrics(settings)
    running = await start_server(settings, runner, policies, audit,
                                 open_pseudonymizer(settings, policies), metrics=metrics)
    log.info("listening", extra={"address": running.address})
    if running.gateway is not None:
        log.info("gateway listening", extra={"address": running.gateway.address})
    if metrics is not None:
        log.info("metrics listening", extra={"address": metrics.address})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if stop_requested():
        stop.set()
    # A reload runs in a thread; the swap itself runs on this loop (it drives the workers)
    # and the reload waits for it, so a snapshot is never pruned while still in use.
    policies.on_swap = lambda fresh, snapshot: asyncio.run_coroutine_threadsafe(
        runner.swap(fresh, snapshot), loop).result(timeout=120)
    warm: asyncio.Future[Any] = loop.run_in_executor(None, runner.start)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({warm, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if warm in done:
        try:
            warm.result()  # a model that fails to load fails the start, loudly
        except BaseException:
            await running.server.stop(0)
            raise
        await running.mark_serving()
        log.info("serving", extra={"address": running.address,
                                   "ready_after_s": round(time.perf_counter() - started, 3),
                                   "workers": getattr(runner, "size", 0),
                                   "policies": [p.name for p in policies.current.policies]})
        admin = None
        if settings.audit_admin_listen:
            from sidecar.transport.admin import start_admin_server

            admin = await start_admin_server(settings)
            log.info("audit admin service listening", extra={"address": admin[2]})
        watching = asyncio.ensure_future(policies.watch(stop))
        # In fleet mode retention is swept fleet-wide (`guardrail audit sweep --store`):
        # a pod's outbox is pruned by its shipper, never by a sweep.
        sweeping = asyncio.ensure_future(_sweep_periodically(settings, stop)) \
            if audit is not None and settings.audit_sweep_interval > 0 \
            and not settings.store else None
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(
            None, lambda: policies.reload(force=True)))
        await stop.wait()
        await watching
        if sweeping is not None:
            await sweeping
        if admin is not None:
            await admin[0].stop(settings.shutdown_grace)
            await loop.run_in_executor(None, admin[1].close)
    log.info("draining", extra={"grace_s": settings.shutdown_grace})
    await running.stop(settings.shutdown_grace)
    log.info("stopped")
    return 0


def open_pseudonymizer(settings: Settings, policies: PolicyManager) -> Pseudonymizer:
    """The pseudonym vault of the data directory (its own connection to the key store)."""
    from audit.vault import Vault
    from sidecar.auditing import current_fleet, open_store

    def policy_of(name: str) -> Policy | None:
        compiled = policies.current.by_name.get(name)
        return compiled.policy if compiled is not None else None

    if settings.store:  # fleet mode: one vault for every pod
        from audit.pgstore import CentralVault

        store = open_store(settings)
        return Pseudonymizer(CentralVault(current_fleet(settings).central, store), policy_of)
    return Pseudonymizer(Vault(open_store(settings)), policy_of)


async def _sweep_periodically(settings: Settings, stop: asyncio.Event) -> None:
    """Retention: delete expired records now and then (its own connection to the store)."""
    from sidecar.auditing import open_store

    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(None, open_store, settings)
    try:
        while not stop.is_set():
            try:
                report = await loop.run_in_executor(None, store.sweep)
                log.info("audit retention sweep", extra={"removed": report.removed,
                                                         "held": report.held})
            except Exception as err:
                log.error("audit retention sweep failed", extra={"error_type":
                                                                 type(err).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.audit_sweep_interval)
    finally:
        await loop.run_in_executor(None, store.close)
