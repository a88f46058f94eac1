"""Binding the gRPC ports: loopback or a Unix socket in the clear, anything else over TLS.

A guardrail reachable from outside the pod in plaintext would hand prompts to anyone on
the network, so a public bind needs both `--allow-public-bind` and a certificate; a
client CA turns on mutual TLS (callers must present a certificate it signed).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from sidecar.config import Settings
from sidecar.errors import ConfigError
from sidecar.keys import read_private_file


def bind(server: grpc.aio.Server, listen: str, settings: Settings, what: str) -> int:
    """Add `listen` to `server` as the settings allow; the port bound (0 for a socket)."""
    if settings.is_public_address(listen):
        if not settings.allow_public_bind:
            raise ConfigError(f"refusing to serve {what} on {listen}: it is not a loopback "
                              "address; use 127.0.0.1, a unix: socket, or "
                              "--allow-public-bind with TLS")
        if not settings.tls:
            raise ConfigError(f"refusing to serve {what} on {listen} without TLS: set "
                              "GUARDRAIL_TLS_CERT_FILE and GUARDRAIL_TLS_KEY_FILE")
    try:
        credentials = server_credentials(settings)
        if credentials is None:
            return server.add_insecure_port(listen)
        return server.add_secure_port(listen, credentials)
    except RuntimeError as err:
        raise ConfigError(f"cannot listen on {listen}: {err}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    chain = _read(settings.tls_cert_file, "TLS certificate")
    key = read_private_file(settings.tls_key_file, "TLS key")
    client_ca = None
    if settings.tls_client_ca_file is not None:
        client_ca = _read(settings.tls_client_ca_file, "TLS client CA")
    _check_pem(chain, "CERTIFICATE", settings.tls_cert_file)
    _check_pem(key, "PRIVATE KEY", settings.tls_key_file)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def channel_credentials(ca: Path, cert: Path | None = None,
                        key: Path | None = None) -> grpc.ChannelCredentials:
    """Credentials for a client of a TLS sidecar (the probe, `sidecar.client`)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "TLS CA"),
        private_key=read_private_file(key, "TLS client key") if key else None,
        certificate_chain=_read(cert, "TLS client certificate") if cert else None)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None


def _check_pem(data: bytes, kind: str, path: Path) -> None:
    """grpc would only fail at the first handshake: check the files at start instead."""
    if b"-----BEGIN " not in data or kind.encode() not in data:
        raise ConfigError(f"{path} holds no PEM {kind.lower()}")
