"""The validated session of the call being served, handed from interceptors to servicers."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass

from google.protobuf.message import Message

from peer_grpc.core.errors import SessionRequired
from peer_grpc.core.metadata import SessionCredentials
from peer_grpc.core.session import Session
from peer_grpc.observability.calls import CallFacts

__all__ = [
    "NOT_PARSED",
    "CallRecord",
    "answer_if_interrupted",
    "bind_call_facts",
    "bind_call_record",
    "bind_credentials",
    "bind_session",
    "current_call_facts",
    "current_credentials",
    "current_session",
    "current_session_or_none",
    "unbind_call_facts",
    "unbind_call_record",
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


@dataclass(slots=True)
class CallRecord:
    """What the server will remember of an admitted call, to answer resends of it."""

    #: The serialized response of a unary call that finished.
    response: bytes = b""
    #: What a resend gets if the call is cut short (its caller gone) after its effect:
    #: made only then, since most calls are not cut short.
    if_interrupted: Callable[[], Message] | None = None


_call_record: ContextVar[CallRecord | None] = ContextVar("peer_grpc_call_record", default=None)


def answer_if_interrupted(response: Callable[[], Message]) -> None:
    """Name the response a resend of this call gets if the call is cut short from now on
    (``response`` makes it, when it is needed).

    A method whose effect is done before it answers (DelegateTask: the task exists)
    calls this, so that a caller whose connection broke learns what happened by
    sending the call again, instead of being told its effect is unknown.
    """
    record = _call_record.get()
    if record is not None:
        record.if_interrupted = response


def bind_call_record(record: CallRecord) -> Token[CallRecord | None]:
    """Make ``record`` the current call's; undo with :func:`unbind_call_record`."""
    return _call_record.set(record)


def unbind_call_record(token: Token[CallRecord | None]) -> None:
    """Restore what was bound before :func:`bind_call_record` returned ``token``."""
    _call_record.reset(token)


_call_facts: ContextVar[CallFacts | None] = ContextVar("peer_grpc_call_facts", default=None)


def current_call_facts() -> CallFacts | None:
    """The facts of the call being served, or None when no one observes calls."""
    return _call_facts.get()


def bind_call_facts(facts: CallFacts) -> Token[CallFacts | None]:
    """Make ``facts`` the current call's; undo with :func:`unbind_call_facts`."""
    return _call_facts.set(facts)


def unbind_call_facts(token: Token[CallFacts | None]) -> None:
    """Restore what was bound before :func:`bind_call_facts` returned ``token``."""
    _call_facts.reset(token)
