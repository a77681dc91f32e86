"""What watches the calls a server answers: metrics, call logs and traces.

Each of those is a :class:`CallObserver`, told of each call by two typed events:
:class:`CallStarted` when the call reaches the interceptor, :class:`CallEnded`
when it ends, built once from what the interceptor learned on the way (the
session, its peer, the error). The interceptor builds them only when at least
one observer is configured, so that a server that observes nothing pays nothing
per call. They see the protocol errors as raised (a SequenceError's kind, a
StoreUnavailable) as well as the status code the caller received, and every
call refused by the session checks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import grpc.aio

from peer_grpc.core.errors import PeerError
from peer_grpc.wire.rich_status import status_code_of

__all__ = [
    "SERVER_FAULTS",
    "CallEnded",
    "CallObserver",
    "CallStarted",
    "ObservedCall",
    "notify_ended",
    "notify_started",
    "status_code_of_ending",
]

log = logging.getLogger(__name__)

#: Codes that say the server failed the call rather than the caller erring
#: (OpenTelemetry's RPC conventions): traces mark these as errors, logs warn of them.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


@dataclass(frozen=True, slots=True, eq=False)  # compared by identity: one per call
class CallStarted:
    """A PeerService call reached the server; nothing about its session is known yet."""

    #: The method's name within PeerService, e.g. ``Ping``.
    method: str
    #: Whether the method streams its responses (WatchTask).
    streaming: bool
    #: :func:`time.perf_counter` when the call reached the interceptor.
    at: float


@dataclass(slots=True)
class CallEnded:
    """A PeerService call ended. Built once, when it ends; treat it as a value."""

    #: The method's name within PeerService, e.g. ``Ping``.
    method: str = ""
    #: Whether the method streams its responses (WatchTask).
    streaming: bool = False
    #: The session the call named (for a Handshake, the one it opened or resumed);
    #: empty for a sessionless call or one refused before its metadata was read.
    session_id: str = ""
    #: The peer that owns the session, once the call was admitted (or the one a
    #: Handshake claimed).
    peer_id: str = ""
    #: The status code the caller received.
    code: grpc.StatusCode = grpc.StatusCode.OK
    #: Seconds from the call's start to its end.
    duration: float = 0.0
    #: What ended it, if it did not succeed: a PeerError, an abort, a fault or a cancellation.
    error: BaseException | None = None
    #: The event that started the call: an observer that keeps something per call
    #: (a span) finds it by this.
    started: CallStarted | None = None


#: The name of :class:`CallEnded` before observers were told by typed events.
ObservedCall = CallEnded


def status_code_of_ending(
    error: BaseException | None, context: grpc.aio.ServicerContext
) -> grpc.StatusCode:
    """The status the client receives for a call that ended by ``error`` (None: OK)."""
    if error is None:
        return grpc.StatusCode.OK
    return _status_code(error, context)


def _status_code(error: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status the client receives for a call that ended by ``error``."""
    if isinstance(error, PeerError):
        return status_code_of(error)
    if isinstance(error, grpc.aio.AbortError):  # aborted with a status already set
        code = context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        # grpc cancels a call whose caller went away or whose deadline passed; a stream
        # cut off that way is closed at its `yield` (GeneratorExit).
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL  # the error interceptor answers any other fault so


class CallObserver(Protocol):
    """Something told of every PeerService call: when it starts and when it ends.

    Both are called on the event loop, in the call's own task, so they must be quick
    and must not block; an observer that raises is logged and the call goes on.
    """

    def call_started(self, call: CallStarted, context: grpc.aio.ServicerContext) -> None:
        """``call`` reached the server (nothing about its session is known yet)."""

    def call_ended(self, call: CallEnded) -> None:
        """``call`` ended; ``call.started`` is the event :meth:`call_started` was given."""


def notify_started(
    observers: Sequence[CallObserver], call: CallStarted, context: grpc.aio.ServicerContext
) -> None:
    """Tell every observer that ``call`` started; a failing observer does not fail the call."""
    for observer in observers:
        try:
            observer.call_started(call, context)
        except Exception:
            log.exception("call observer %s failed", type(observer).__name__)


def notify_ended(observers: Sequence[CallObserver], call: CallEnded) -> None:
    """Tell every observer that ``call`` ended; a failing observer does not fail the call."""
    for observer in observers:
        try:
            observer.call_ended(call)
        except Exception:
            log.exception("call observer %s failed", type(observer).__name__)
