"""Why a server could not be reached, in words a person can act on.

gRPC reports a failed connection as UNAVAILABLE with the transport's own words
("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed
to connect to remote host: Connection refused"). :func:`connection_failure` keeps
the part that says what failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from peer_grpc.core.errors import PeerError, RemoteError

__all__ = ["ConnectionFailure", "ServerUnreachable", "connection_failure"]


@dataclass(frozen=True, slots=True)
class ConnectionFailure:
    """Why a connection could not be set up."""

    #: What failed, briefly: ``connection refused``, ``TLS handshake failed: ...``.
    cause: str
    #: Whether waiting cannot help: a TLS mismatch stays one, a refused port may open.
    lasting: bool


_SETUP_CLOSED_PLAINTEXT = (
    "the server closed the connection during set-up (does it speak TLS? try --tls-ca)"
)
_SETUP_CLOSED_TLS = (
    "the server closed the connection during the TLS handshake (does it require a "
    "client certificate? try --tls-cert and --tls-key)"
)

#: Words of the transport (lower case) -> what they mean and whether it lasts; first match wins.
_CAUSES: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("connection refused",), "connection refused", False),
    (
        ("certificate required", "certificate_required", "peer did not return a certificate"),
        "the server requires a client certificate (--tls-cert and --tls-key)",
        True,
    ),
    (
        ("wrong_version_number", "wrong version number"),
        "TLS handshake failed: the server does not speak TLS (leave out --tls-ca)",
        True,
    ),
    (
        ("certificate verify failed", "certificate_verify_failed"),
        "TLS handshake failed: the server's certificate is not trusted (check --tls-ca)",
        True,
    ),
    (("handshake failed", "ssl_error"), "TLS handshake failed", True),
    (("dns resolution failed", "name resolution"), "cannot resolve the host name", False),
    (("no route to host", "network is unreachable"), "no route to the host", False),
    (("deadline exceeded", "timeout", "timed out"), "no answer", False),
)


def connection_failure(details: str, *, tls: bool) -> ConnectionFailure:
    """What a transport failure's ``details`` say went wrong, on a TLS channel or not."""
    lowered = details.lower()
    for words, cause, lasting in _CAUSES:
        if any(word in lowered for word in words):
            return ConnectionFailure(cause, lasting)
    if any(word in lowered for word in ("socket closed", "connection reset", "end of tcp")):
        # A protocol mismatch: plaintext to a TLS port, or TLS without the certificate
        # the server requires (TLS 1.3 tells the client only by closing).
        return ConnectionFailure(_SETUP_CLOSED_TLS if tls else _SETUP_CLOSED_PLAINTEXT, True)
    return ConnectionFailure(details.rsplit("last error: ", 1)[-1] or "no answer", False)


class ServerUnreachable(RemoteError):
    """The client could not set up a connection to the server within its connect timeout.

    ``cause`` says why, briefly (``connection refused``, ``TLS handshake failed``, ...).
    """

    def __init__(self, target: str, cause: str, code: str = "UNAVAILABLE") -> None:
        # Not RemoteError's "CODE: message": the cause already says what failed.
        PeerError.__init__(self, f"cannot reach {target}: {cause}")
        self.code = code
        self.reason = code
        self.target = target
        self.cause = cause
