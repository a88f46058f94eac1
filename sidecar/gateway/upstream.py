"""The model API behind the gateway: which one (residency), and what is sent to it.

Residency that routes: with a region map (`upstream_regions`), a request whose
verdict carries an `allowed_regions` tag goes to the first configured region the tag
allows (patterns such as `eu-*` or `*`, as in policies), and is refused when none
does; a request without the tag goes to the default `upstream`. Without a region map
every request goes to `upstream`.

Headers: the caller's are forwarded (Authorization, OpenAI-Organization,
OpenAI-Project, ...), except hop-by-hop ones, ours (`x-guardrail-*`, which carry the
subject and conversation ids) and those the body rewrite invalidates. None is ever
logged or audited.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

from sidecar.errors import InvalidRequest
from sidecar.gateway.http import HEADER_PREFIX

_DROPPED = frozenset({"host", "content-length", "content-encoding", "transfer-encoding",
                      "connection", "keep-alive", "proxy-authorization", "proxy-connection",
                      "te", "trailer", "upgrade", "accept-encoding", "expect"})
# Upstream answer headers not passed back (the gateway writes its own body).
_NOT_RETURNED = frozenset({"content-length", "content-encoding", "transfer-encoding",
                           "connection", "keep-alive", "content-type", "server", "date"})


class NoUpstream(InvalidRequest):
    """No configured upstream is in the request's allowed regions (a refusal, not a fault)."""


class Upstreams:
    def __init__(self, default: str | None, regions: Mapping[str, str]) -> None:
        self.default = default.rstrip("/") if default else None
        self.regions = {region: url.rstrip("/") for region, url in regions.items()}

    def choose(self, tags: Mapping[str, str]) -> tuple[str, str]:
        """(base URL, region or "") for a verdict's routing tags."""
        allowed = [p.strip().lower() for p in tags.get("allowed_regions", "").split(",")
                   if p.strip()]
        if self.regions and allowed:
            for region, url in self.regions.items():
                if any(fnmatch.fnmatchcase(region.lower(), pattern) for pattern in allowed):
                    return url, region
            raise NoUpstream(f"residency: no upstream is configured in the allowed regions "
                             f"({tags.get('allowed_regions')}; rule "
                             f"{tags.get('residency_rule', '-')})")
        if self.default is None:
            if self.regions and not allowed:
                raise NoUpstream("residency: the policy set no allowed_regions and no "
                                 "default upstream is configured")
            raise InvalidRequest("no upstream is configured (--upstream)")
        return self.default, ""


def forward_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in _DROPPED or lower.startswith(HEADER_PREFIX):
            continue
        out.add(name, value)
    out["Content-Type"] = "application/json"
    return out


def returned_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """The upstream answer's headers worth passing back (request ids, rate limits)."""
    return {name: value for name, value in headers.items()
            if name.lower() not in _NOT_RETURNED}
