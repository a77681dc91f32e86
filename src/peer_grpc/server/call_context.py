"""The admitted call being served, handed from the interceptor to the servicer.

One context variable carries it: the session the call was admitted on, and what
a resend gets should the call be cut short after its effect.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

from google.protobuf.message import Message

from peer_grpc.core.errors import SessionRequired
from peer_grpc.core.session import Session

__all__ = [
    "AdmittedCall",
    "answer_if_interrupted",
    "bind_admitted",
    "bind_session",
    "current_session",
    "current_session_or_none",
    "unbind_admitted",
    "unbind_session",
]


class AdmittedCall:
    """A call the interceptor admitted: its session, and what a resend of it gets if
    it is cut short (its caller gone) after its effect."""

    __slots__ = ("if_interrupted", "sequence", "session")

    def __init__(self, session: Session, sequence: int = 0) -> None:
        self.session = session
        #: The sequence the call was admitted with.
        self.sequence = sequence
        #: Made only when needed, since most calls are not cut short.
        self.if_interrupted: Callable[[], Message] | None = None

    def effect_done(self) -> bytes | None:
        """The response a resend gets if the call's effect is known to be done, else None."""
        made = self.if_interrupted
        # An empty response tells a resend nothing: it counts as not done.
        return (made().SerializeToString() or None) if made is not None else None


_admitted: ContextVar[AdmittedCall | None] = ContextVar("peer_grpc_admitted", default=None)


def current_session() -> Session:
    """The session the interceptors validated for this call.

    Raises:
        SessionRequired: the call carried no session (a sessionless Ping or Status).
    """
    call = _admitted.get()
    if call is None:
        raise SessionRequired("this call needs a session")
    return call.session


def current_session_or_none() -> Session | None:
    """The call's validated session, or None on a sessionless call."""
    call = _admitted.get()
    return call.session if call is not None else None


def bind_admitted(call: AdmittedCall) -> Token[AdmittedCall | None]:
    """Make ``call`` the current one; undo with :func:`unbind_admitted`."""
    return _admitted.set(call)


def unbind_admitted(token: Token[AdmittedCall | None]) -> None:
    """Restore what was bound before :func:`bind_admitted` returned ``token``."""
    _admitted.reset(token)


def bind_session(session: Session | None) -> Token[AdmittedCall | None]:
    """Serve the current call on ``session``, or on none (tests of servicers without
    the interceptor); undo with :func:`unbind_session`."""
    return _admitted.set(AdmittedCall(session) if session is not None else None)


def unbind_session(token: Token[AdmittedCall | None]) -> None:
    """Restore what was bound before :func:`bind_session` returned ``token``."""
    _admitted.reset(token)


def answer_if_interrupted(response: Callable[[], Message]) -> None:
    """Name the response a resend of this call gets if the call is cut short from now on
    (``response`` makes it, when it is needed).

    A method whose effect is done before it answers (DelegateTask: the task exists)
    calls this, so that a caller whose connection broke learns what happened by
    sending the call again, instead of being told its effect is unknown.
    """
    call = _admitted.get()
    if call is not None:
        call.if_interrupted = response
