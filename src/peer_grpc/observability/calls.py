"""What watches the calls a server answers: metrics, call logs and traces.

Each of those is a :class:`CallObserver`. The server puts an observing link in its
interceptor chain only when at least one is configured, so that a server that
observes nothing pays nothing per call. The link sits just inside the error
interceptor: it sees the protocol errors as raised (a SequenceError's kind, a
StoreUnavailable) before they become statuses, and every call refused by the
session checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio

from peer_grpc.core.errors import PeerError
from peer_grpc.wire.rich_status import status_code_of

__all__ = [
    "SERVER_FAULTS",
    "CallFacts",
    "CallObserver",
    "ObservedCall",
    "notify_ended",
    "notify_started",
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


@dataclass(slots=True)
class CallFacts:
    """What the interceptors learn about a call, for its metrics, log event and span.

    Bound only while something observes calls (see :mod:`peer_grpc.observability`),
    so that an unobserved call pays one context-variable read for it.
    """

    #: The session the call named in its metadata; empty for a Handshake or sessionless call.
    session_id: str = ""
    #: The peer that owns the session, once the call was admitted (or the Handshake's).
    peer_id: str = ""


@dataclass(slots=True)
class ObservedCall(CallFacts):
    """One PeerService call as the observers see it."""

    #: The method's name within PeerService, e.g. ``Ping``.
    method: str = ""
    #: Whether the method streams its responses (WatchTask).
    streaming: bool = False
    #: :func:`time.perf_counter` when the call reached the interceptors.
    started: float = 0.0
    #: Seconds from :attr:`started` to the call's end; set when it ends.
    duration: float = 0.0
    #: How the call ended.
    code: grpc.StatusCode = grpc.StatusCode.OK
    #: What ended it, if it did not succeed: a PeerError, an abort, a fault or a cancellation.
    error: BaseException | None = None
    #: The tracing observer's span for the call (None without tracing).
    span: Any = None

    def ended(self, error: BaseException | None, context: grpc.aio.ServicerContext) -> None:
        """Record that the call ended, successfully or by ``error``."""
        self.duration = time.perf_counter() - self.started
        if error is not None:
            self.error = error
            self.code = _status_code(error, context)

    def forget(self) -> None:
        """Drop what only the observers needed: the facts stay bound in the context of
        tasks the call started (a delegated task's), which can outlive it by far."""
        self.error = self.span = None


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

    def call_started(self, call: ObservedCall, context: grpc.aio.ServicerContext) -> None:
        """``call`` reached the server (nothing about its session is known yet)."""

    def call_ended(self, call: ObservedCall) -> None:
        """``call`` ended; its code, duration, error and session facts are set."""


def notify_started(
    observers: Sequence[CallObserver], call: ObservedCall, context: grpc.aio.ServicerContext
) -> None:
    """Tell every observer that ``call`` started; a failing observer does not fail the call."""
    for observer in observers:
        try:
            observer.call_started(call, context)
        except Exception:
            log.exception("call observer %s failed", type(observer).__name__)


def notify_ended(observers: Sequence[CallObserver], call: ObservedCall) -> None:
    """Tell every observer that ``call`` ended; a failing observer does not fail the call."""
    for observer in observers:
        try:
            observer.call_ended(call)
        except Exception:
            log.exception("call observer %s failed", type(observer).__name__)
