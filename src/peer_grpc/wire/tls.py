"""TLS for the server and the client, and the caller's identity as the transport vouches
for it: the gRPC glue of :mod:`peer_grpc.core.identity`."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio

from peer_grpc.core.identity import Caller, client_address, identity_from_auth_context

__all__ = ["caller_of", "channel_credentials", "identity_of", "server_credentials"]


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the {what} {path}: {error.strerror or error}") from None


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str | None = None
) -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key (PEM files); with a client CA,
    mutual TLS: every client must present a certificate that CA issued.

    Raises:
        ValueError: a file cannot be read.
    """
    chain = _read(cert_file, "TLS certificate")
    key = _read(key_file, "TLS key")
    client_ca = _read(client_ca_file, "client CA") if client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS for a client: trust ``ca_file`` (else the system's roots), and present the
    certificate and key (PEM files) when the server asks for mutual TLS.

    Raises:
        ValueError: a file cannot be read, or only one of certificate and key is given.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA certificate") if ca_file else None,
        private_key=_read(key_file, "TLS key") if key_file else None,
        certificate_chain=_read(cert_file, "TLS certificate") if cert_file else None,
    )


def identity_of(context: grpc.aio.ServicerContext) -> str:
    """The call's verified client certificate identity; empty without mutual TLS."""
    return identity_from_auth_context(context.auth_context())


def caller_of(context: grpc.aio.ServicerContext) -> Caller:
    """Who makes the call: certificate identity and network address."""
    return Caller(identity=identity_of(context), address=client_address(context.peer() or ""))
