"""Prometheus metrics, served on their own loopback port (GUARDRAIL_METRICS_LISTEN).

Everything is observed in the server process, from verdicts and refusals: workers are
separate processes, and their stage timings travel back in `Verdict.stage_seconds`.
State that already lives elsewhere (queue depths, workers alive, reload counts) is read
at scrape time through callbacks, so the core keeps no metric objects of its own.

Labels are closed sets the policy files define (policy names, entity types, rule ids)
or the code does (direction, decision, stage, status): never text, tenants' users,
subject ids or request ids, so no label can carry content or grow without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.types import Verdict

# Latency buckets from 0.5 ms to 10 s: an inspection is a few ms, a cold NER pass 100s.
LATENCY = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
           0.512, 1.024, 2.048, 4.096, 10.0)
# Characters per prompt or completion: the drift signal (a prompt that doubles in length
# costs twice as much, and may be a sign of a new prompt-stuffing pattern).
LENGTH = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)

# The statuses a refused inspection is answered with (sidecar.transport.status).
REFUSAL_STATUSES = ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED",
                    "FAILED_PRECONDITION", "UNAVAILABLE", "INTERNAL")

# Read at scrape time: (kind "gauge" or "counter", name, help, value).
Gauges = Callable[[], Iterable[tuple[str, str, str, float]]]


class Metrics:
    """The sidecar's metrics, in a registry of their own (tests may build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # CPU, RSS, open fds of the front
        r = self.registry
        self.requests = Counter("guardrail_requests", "Inspections answered, by outcome",
                                ["policy", "direction", "decision"], registry=r)
        self.refusals = Counter("guardrail_refusals", "Calls answered with an error status",
                                ["direction", "status"], registry=r)
        self.findings = Counter("guardrail_findings", "PII findings, by entity type",
                                ["policy", "direction", "entity_type", "action"], registry=r)
        self.violations = Counter("guardrail_violations", "Rule violations, by rule id",
                                  ["policy", "direction", "rule"], registry=r)
        self.latency = Histogram("guardrail_request_seconds", "Time to answer an inspection",
                                 ["direction"], buckets=LATENCY, registry=r)
        self.stages = Histogram("guardrail_stage_seconds", "Time in each pipeline stage",
                                ["stage"], buckets=LATENCY, registry=r)
        self.lengths = Histogram("guardrail_text_chars", "Characters per inspected request",
                                 ["direction"], buckets=LENGTH, registry=r)
        self.audit_write = Histogram("guardrail_audit_write_seconds",
                                     "Time from handing a record to the writer until it "
                                     "is committed", buckets=LATENCY, registry=r)
        self.streams = Counter("guardrail_streams", "Streamed completions, by how they ended",
                               ["outcome"], registry=r)
        # Series whose labels are known in advance start at 0, so they are on the page
        # before their first event (a dashboard's rate() and an alert's absent() need
        # them; outside trial: refusals and streams appeared only once something failed).
        for direction in ("prompt", "completion"):
            for status in REFUSAL_STATUSES:
                self.refusals.labels(direction, status)
        for outcome in ("complete", "blocked", "abandoned", "failed"):
            self.streams.labels(outcome)
        self._gauges: list[Gauges] = []
        self.registry.register(_Callbacks(self._gauges))
        self.address = ""  # where /metrics is served, once it is
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- what the servicer reports ------------------------------------------------------

    def inspected(self, direction: str, verdict: Verdict, seconds: float,
                  chars: int) -> None:
        policy = verdict.policy
        self.requests.labels(policy, direction, verdict.decision.name.lower()).inc()
        for finding in verdict.findings:
            self.findings.labels(policy, direction, finding.entity_type, finding.action).inc()
        for violation in verdict.violations:
            self.violations.labels(policy, direction, violation.rule_id).inc()
        self.latency.labels(direction).observe(seconds)
        self.lengths.labels(direction).observe(chars)

    def staged(self, verdict: Verdict) -> None:
        """Stage timings of one pipeline pass (a unary call, or one window of a stream)."""
        for stage, seconds in verdict.stage_seconds.items():
            self.stages.labels(stage).observe(seconds)

    def refused(self, direction: str, status: str) -> None:
        self.refusals.labels(direction, status).inc()

    def watch(self, gauges: Gauges) -> None:
        """Add values read at scrape time: `gauges()` yields (kind, name, help, value)."""
        self._gauges.append(gauges)

    # -- the HTTP endpoint --------------------------------------------------------------

    def serve(self, listen: str) -> str:
        """Serve /metrics on `listen` ("HOST:PORT", port 0 picks one); the address bound."""
        from prometheus_client import start_http_server

        host, _, port = listen.rpartition(":")
        self._server, self._thread = start_http_server(int(port), host.strip("[]"),
                                                       registry=self.registry)
        return f"{host}:{self._server.server_port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Callbacks(Collector):
    def __init__(self, sources: list[Gauges]) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self.sources:
            for kind, name, help_text, value in source():
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(name, help_text, value=value)

    def describe(self) -> Iterable[Metric]:
        return []  # values come at scrape time; nothing to check at registration
