"""Structured logs: one event per line, as text or JSON (``serve --log-format``).

Events carry their facts as fields besides the message, from a fixed list
(:data:`EVENT_FIELDS`): a log pipeline filters on ``method`` or ``code`` without
parsing sentences. Session ids appear only as prefixes (``short_id``) and tokens
never: whoever reads the logs must not be able to take over a session.

With ``serve --log-calls`` every PeerService call is one event (:class:`CallLog`),
logged by ``peer_grpc.calls``::

    {"time": "2026-11-26T07:41:02.113Z", "level": "INFO", "logger": "peer_grpc.calls",
     "message": "Ping OK 0.4ms", "event": "call", "method": "Ping", "code": "OK",
     "duration_ms": 0.41, "session": "3f9a6c1e...", "peer": "billing"}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

import grpc
import grpc.aio

from peer_grpc.core.session import short_id
from peer_grpc.observability.calls import SERVER_FAULTS, CallEnded, CallStarted

__all__ = ["EVENT_FIELDS", "LOG_FORMATS", "CallLog", "JsonFormatter", "TextFormatter"]

#: The ``--log-format`` choices.
LOG_FORMATS = ("text", "json")
#: The structured fields an event may carry (pass them as ``extra=``), in output order.
EVENT_FIELDS = (
    "event",
    "method",
    "code",
    "duration_ms",
    "session",
    "peer",
    "worker",
    "count",
)
#: Server faults that are bugs, not outages or slowness: their call events are errors.
_BUGS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = record.__dict__
    return {name: fields[name] for name in EVENT_FIELDS if name in fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the
    event's fields, and the traceback of an exception if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``; a traceback stays on the lines after."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = _fields_of(record)
        fields.pop("event", None)  # the message says what happened
        if fields:
            line += " " + " ".join(f"{name}={value}" for name, value in fields.items())
        return line


def _utc_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure_logging(
    level: str = "INFO",
    log_format: str = "text",
    *,
    worker: int | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Send this process's logs to ``stream`` (stderr) in ``log_format``, one event per line.

    ``worker`` (``serve --workers``) is added to every event, so that the lines of
    several worker processes can be told apart.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_WorkerField(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class _WorkerField(logging.Filter):
    def __init__(self, worker: int) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._worker
        return True


class CallLog:
    """Logs every PeerService call as one event (a :class:`CallObserver`).

    Successes and the caller's errors are INFO; the server's faults are WARNING
    (UNAVAILABLE while the store is down, say), or ERROR for a bug (INTERNAL, whose
    traceback the error interceptor logs too).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger if logger is not None else logging.getLogger("peer_grpc.calls")

    def call_started(self, call: CallStarted, context: grpc.aio.ServicerContext) -> None:
        """Nothing to log until the call ends."""

    def call_ended(self, call: CallEnded) -> None:
        """Log the call's method, code, duration, session prefix and peer."""
        code = call.code
        level = (
            logging.ERROR
            if code in _BUGS
            else logging.WARNING
            if code in SERVER_FAULTS
            else logging.INFO
        )
        if not self._log.isEnabledFor(level):
            return
        milliseconds = round(call.duration * 1000, 3)
        self._log.log(
            level,
            "%s %s %.1fms",
            call.method,
            call.code.name,
            milliseconds,
            extra={
                "event": "call",
                "method": call.method,
                "code": call.code.name,
                "duration_ms": milliseconds,
                "session": short_id(call.session_id) if call.session_id else "",
                "peer": call.peer_id,
            },
        )
