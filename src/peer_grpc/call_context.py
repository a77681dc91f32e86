"""The validated session of the call being served, handed from interceptors to servicers."""

from __future__ import annotations

from contextvars import ContextVar, Token

from peer_grpc.errors import SessionRequired
from peer_grpc.metadata import SessionCredentials
from peer_grpc.session import Session

__all__ = [
    "NOT_PARSED",
    "bind_credentials",
    "bind_session",
    "current_credentials",
    "current_session",
    "current_session_or_none",
    "unbind_credentials",
    "unbind_session",
]

_session: ContextVar[Session | None] = ContextVar("peer_grpc_session", default=None)
#: What the credentials are before the metadata interceptor has looked: not "none sent".
NOT_PARSED = SessionCredentials("", 0)
_credentials: ContextVar[SessionCredentials | None] = ContextVar(
    "peer_grpc_credentials", default=NOT_PARSED
)


def current_session() -> Session:
    """The session the interceptors validated for this call.

    Raises:
        SessionRequired: the call carried no session (a sessionless Ping or Status).
    """
    session = _session.get()
    if session is None:
        raise SessionRequired("this call needs a session")
    return session


def current_session_or_none() -> Session | None:
    """The call's validated session, or None on a sessionless call."""
    return _session.get()


def bind_session(session: Session | None) -> Token[Session | None]:
    """Make ``session`` the current call's session; undo with :func:`unbind_session`."""
    return _session.set(session)


def unbind_session(token: Token[Session | None]) -> None:
    """Restore what was bound before :func:`bind_session` returned ``token``."""
    _session.reset(token)


def current_credentials() -> SessionCredentials | None:
    """The session metadata the current call carried, once parsed; None if it carried none.

    :data:`NOT_PARSED` when no metadata interceptor ran for this call.
    """
    return _credentials.get()


def bind_credentials(
    credentials: SessionCredentials | None,
) -> Token[SessionCredentials | None]:
    """Make ``credentials`` the current call's; undo with :func:`unbind_credentials`."""
    return _credentials.set(credentials)


def unbind_credentials(token: Token[SessionCredentials | None]) -> None:
    """Restore what was bound before :func:`bind_credentials` returned ``token``."""
    _credentials.reset(token)
