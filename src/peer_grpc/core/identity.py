"""Who is calling: the client certificate's identity, and the peer ids it may claim.

No gRPC here: the caller's interceptor hands in the auth context as a mapping.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from peer_grpc.core.errors import PeerIdNotAllowed

__all__ = [
    "ANY_PEER_ID",
    "Caller",
    "PeerIdPolicy",
    "client_address",
    "identity_from_auth_context",
]

#: In an identity map, the entry that lets an identity claim any peer id.
ANY_PEER_ID = "*"

# Where gRPC's auth context keeps a verified client certificate's names, in the
# order an identity is taken from them: URI SAN, DNS SAN, common name.
_IDENTITY_PROPERTIES = ("peer_uri", "peer_dns", "x509_common_name")


@dataclass(frozen=True, slots=True)
class Caller:
    """The client of one call, as the transport vouches for it."""

    #: The verified client certificate's identity; empty without mutual TLS.
    identity: str
    #: The client's network address without its port, e.g. ``ipv4:127.0.0.1``.
    address: str

    @property
    def rate_key(self) -> str:
        """Whom per-client limits count against: the identity, else the address."""
        return f"id:{self.identity}" if self.identity else f"addr:{self.address}"


def identity_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> str:
    """The identity of a verified client certificate: its first URI SAN, else its first
    DNS SAN, else its common name; empty when the call has no client certificate."""
    for name in _IDENTITY_PROPERTIES:
        values = auth_context.get(name)
        if values:
            return values[0].decode("utf-8", "replace")
    return ""


def client_address(peer: str) -> str:
    """A gRPC peer string (``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``) without the port."""
    host, sep, port = peer.rpartition(":")
    if sep and port.isdigit() and host not in ("ipv4", "ipv6", "unix"):
        return host
    return peer


class PeerIdPolicy:
    """Which peer ids each certificate identity may claim at the Handshake.

    An identity may always claim the peer id equal to itself; an identity map
    may allow it more (or :data:`ANY_PEER_ID`). Without mutual TLS no call has an
    identity, and any peer id may be claimed: nothing binds it.

    Args:
        allowed: identity -> the peer ids it may claim besides its own.
        require_identity: refuse callers without an identity (under mutual TLS: a
            certificate that names none, with no URI or DNS SAN and no common name).
    """

    def __init__(
        self,
        allowed: Mapping[str, Collection[str]] | None = None,
        *,
        require_identity: bool = False,
    ) -> None:
        self._allowed = {identity: frozenset(ids) for identity, ids in (allowed or {}).items()}
        self.require_identity = require_identity

    @classmethod
    def from_file(cls, path: str | Path, *, require_identity: bool = True) -> PeerIdPolicy:
        """Read an identity map: a JSON object of identity -> list of peer ids.

        Raises:
            ValueError: the file is not such an object (the message says where).
        """
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"identity map {path}: {error}") from None
        if not isinstance(loaded, dict):
            raise ValueError(
                f"identity map {path}: must be a JSON object of identity -> [peer ids]"
            )
        for identity, peer_ids in loaded.items():
            if not (isinstance(peer_ids, list) and all(isinstance(p, str) for p in peer_ids)):
                raise ValueError(f"identity map {path}: {identity!r} must map to a list of strings")
        return cls(loaded, require_identity=require_identity)

    def may_claim(self, identity: str, peer_id: str) -> bool:
        """Whether a caller with ``identity`` may open a session as ``peer_id``."""
        if not identity:
            return not self.require_identity
        if peer_id == identity:
            return True
        allowed = self._allowed.get(identity, frozenset())
        return peer_id in allowed or ANY_PEER_ID in allowed

    def check_claim(self, identity: str, peer_id: str) -> None:
        """Raise PeerIdNotAllowed unless ``identity`` may claim ``peer_id``."""
        if not identity and self.require_identity:
            raise PeerIdNotAllowed(
                "the client certificate names no identity (no URI or DNS SAN, no common "
                "name), so it may claim no peer_id"
            )
        if not self.may_claim(identity, peer_id):
            raise PeerIdNotAllowed(
                f"the client certificate {identity!r} may not claim peer_id {peer_id!r}; "
                "claim your certificate's identity or ask for an identity map entry"
            )
