"""`guardrail health --detail`: what the gauges say about the audit and the fleet store.

The gRPC health status answers one question, "does it serve?", and must keep answering
SERVING while PostgreSQL is down (inspections go on into the outbox): a probe that
failed then would restart every pod of the fleet for an outage they ride through. How
far the outbox has filled, and whether the store is reachable or refuses this chain, is
what an operator wants next; the metrics port already has it, so this reads it from
there (loopback HTTP, as a Prometheus scrape would) rather than adding an RPC.
"""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^(guardrail_[a-z_]+) ([-+0-9.eE]+|NaN|[-+]Inf)$", re.M)


def describe(metrics_listen: str | None, timeout: float) -> list[str]:
    """Lines for an operator, never raising: a metrics port that is off or silent says so."""
    import urllib.error
    import urllib.request

    if not metrics_listen:
        return ["detail: metrics are off (GUARDRAIL_METRICS_LISTEN is empty)"]
    try:
        with urllib.request.urlopen(f"http://{metrics_listen}/metrics",
                                    timeout=timeout) as page:
            text = page.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError) as err:
        reason = getattr(err, "reason", None) or type(err).__name__
        return [f"detail: cannot read the metrics at {metrics_listen}: {reason}"]
    return lines(text)


def lines(text: str) -> list[str]:
    """The detail lines from a Prometheus text page."""
    # Counters are exposed as NAME_total: keyed here by NAME, like the gauges.
    gauges = {m[1].removesuffix("_total"): float(m[2]) for m in _SAMPLE.finditer(text)}
    out = []
    if "guardrail_audit_queue_depth" in gauges:
        out.append(f"audit: {gauges['guardrail_audit_queue_depth']:.0f} records waiting, "
                   f"{gauges.get('guardrail_audit_write_failures', 0):.0f} write failures")
    else:
        out.append("audit: off")
    if "guardrail_store_up" not in gauges:
        return out  # not fleet mode
    up = gauges["guardrail_store_up"] == 1
    held = gauges.get("guardrail_outbox_records", 0)
    limit = gauges.get("guardrail_outbox_limit", 0)
    full = bool(limit) and held >= limit
    out.append(f"store: {'up' if up else 'DOWN (shipping fails; records wait in the outbox)'}"
               f", {gauges.get('guardrail_store_shipped_records', 0):.0f} records shipped")
    out.append(f"outbox: {held:.0f} of {limit:.0f} records"
               + (" - FULL: new records are refused and on_error decides" if full else ""))
    if gauges.get("guardrail_store_refused", 0):
        out.append("store: REFUSES this chain (see the logs: a rolled-back or altered "
                   "outbox, a newer schema, another index key)")
    return out
