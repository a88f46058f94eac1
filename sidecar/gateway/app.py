"""The HTTP server of the front doors: one aiohttp application on `gateway_listen`.

Loopback by default; a public address needs `allow_public_bind` and TLS (the gRPC
port's certificate and key; with `tls_client_ca_file`, clients must present a
certificate it signed), as for gRPC. No access log: request lines may carry query
strings, and the gateway logs its own line per call without them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from aiohttp import web

from sidecar.config import MIB, Settings
from sidecar.errors import ConfigError
from sidecar.gateway.litellm import LiteLLMGuardrail
from sidecar.gateway.openai import OpenAIGateway
from sidecar.gateway.upstream import Upstreams
from sidecar.pipeline import resources_from
from sidecar.service.inspector import Inspector


@dataclass
class Gateway:
    runner: web.AppRunner
    address: str  # HOST:PORT actually bound

    async def stop(self) -> None:
        await self.runner.cleanup()


def build_app(inspector: Inspector, settings: Settings) -> web.Application:
    # JSON escapes and the fields around the text: room above the text limit, which
    # the pipeline enforces precisely on the texts themselves.
    app = web.Application(client_max_size=settings.max_text_bytes * 2 + MIB)
    openai = OpenAIGateway(inspector, Upstreams(settings.upstream, settings.upstream_regions),
                           settings.upstream_timeout,
                           resources_from(settings).hash_key)  # the fleet's shared key
    app.add_routes(openai.routes())
    app.add_routes(LiteLLMGuardrail(inspector).routes())
    app.on_cleanup.append(openai.close)
    return app


def _ssl(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    assert settings.tls_cert_file is not None
    assert settings.tls_key_file is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(settings.tls_client_ca_file)
    return context


async def start_gateway(settings: Settings, inspector: Inspector) -> Gateway:
    """Serve the HTTP doors on `settings.gateway_listen` (port 0 picks a free port)."""
    listen = settings.gateway_listen
    assert listen is not None
    if Settings.is_public_address(listen):
        if not settings.allow_public_bind:
            raise ConfigError(f"refusing to serve the gateway on {listen}: it is not a "
                              "loopback address; use 127.0.0.1 or --allow-public-bind")
        if not settings.tls:
            raise ConfigError(f"refusing to serve the gateway on {listen} without TLS: "
                              "set --tls-cert and --tls-key")
    if settings.upstream is None and not settings.upstream_regions:
        raise ConfigError("the gateway needs an upstream: set --upstream URL "
                          "(GUARDRAIL_UPSTREAM) or GUARDRAIL_UPSTREAM_REGIONS")
    # handler_cancellation: a client that hangs up cancels its handler, as gRPC cancels
    # a call, so its inspection stops (sidecar.abandon) and a prompt nobody waits for is
    # not sent to the model. aiohttp leaves it off by default (since 3.9): the handler
    # ran on, a worker inspected a megabyte for nobody and the model was called anyway.
    # Streams' `finally` still audits what a relay had already shown (ChatRelay.run).
    # auto_decompress off: `json_body` decodes gzip and deflate itself, so that a body
    # that does not decode, or a coding aiohttp cannot read (br, zstd), is the gateway's
    # JSON 400 or 415 rather than a 500 or aiohttp's plain-text 400.
    runner = web.AppRunner(build_app(inspector, settings), access_log=None,
                           handle_signals=False, handler_cancellation=True,
                           auto_decompress=False)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=_ssl(settings))
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ConfigError(f"cannot serve the gateway on {listen}: "
                          f"{err.strerror or err}") from None
    bound = runner.addresses[0]
    return Gateway(runner, f"{host}:{bound[1]}")
