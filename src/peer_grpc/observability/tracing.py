"""OpenTelemetry traces of PeerService calls: the optional extra ``peer-grpc[otel]``.

Off by default. ``serve --otel`` (or ``PeerServer(tracer_provider=...)``) makes a
SERVER span per call, named ``peer.v1.PeerService/<Method>``, a child of the
trace the caller propagated in its metadata (W3C ``traceparent``), with the
attributes of OpenTelemetry's RPC conventions plus the session's prefix and peer.
Task handlers run inside the span of the call that delegated them.

Spans are made here rather than by opentelemetry-instrumentation-grpc: its aio
interceptor does not see statuses sent with ``abort_with_status``, which is how
every rich error of this server leaves, so it would report them all as OK.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from peer_grpc._version import __version__
from peer_grpc.core.session import short_id
from peer_grpc.observability.calls import SERVER_FAULTS, CallEnded, CallStarted
from peer_grpc.wire.contract import SERVICE_NAME

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import TracerProvider as AnyTracerProvider

__all__ = ["OTEL_MISSING", "CallTracing", "tracer_provider_from_env"]

#: What to tell someone who asks for traces without the extra installed.
OTEL_MISSING = "tracing needs the otel extra: pip install 'peer-grpc[otel]'"


class CallTracing:
    """Makes a span of every PeerService call (a :class:`CallObserver`).

    Raises:
        RuntimeError: the ``otel`` extra is not installed.
    """

    def __init__(self, tracer_provider: AnyTracerProvider | None = None) -> None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError as error:
            raise RuntimeError(OTEL_MISSING) from error
        self._tracer = trace.get_tracer("peer_grpc", __version__, tracer_provider)
        self._trace = trace
        self._context = context
        self._propagate = propagate
        #: The span of each call in flight, and the context token to detach at its end.
        self._open: dict[CallStarted, tuple[Any, Any]] = {}

    def call_started(self, call: CallStarted, context: grpc.aio.ServicerContext) -> None:
        """Open the call's span under the caller's trace, and make it current."""
        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        span = self._tracer.start_span(
            f"{SERVICE_NAME}/{call.method}",
            context=self._propagate.extract(carrier),
            kind=self._trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": SERVICE_NAME,
                "rpc.method": call.method,
            },
        )
        token = None
        if not call.streaming:
            # A unary call starts and ends in one context; a stream is stepped from
            # several, where a context attached at the start could not be detached.
            token = self._context.attach(self._trace.set_span_in_context(span))
        self._open[call] = (span, token)

    def call_ended(self, call: CallEnded) -> None:
        """Close the call's span with its status code and session."""
        opened = self._open.pop(call.started, None) if call.started is not None else None
        if opened is None:
            return
        span, token = opened
        if token is not None:
            self._context.detach(token)
        attributes: dict[str, Any] = {"rpc.grpc.status_code": call.code.value[0]}
        if call.session_id:
            attributes["peer.session_id_prefix"] = short_id(call.session_id)
        if call.peer_id:
            attributes["peer.peer_id"] = call.peer_id
        span.set_attributes(attributes)
        if call.code in SERVER_FAULTS:  # the caller's mistakes are not the server's errors
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, call.code.name))
        span.end()


def tracer_provider_from_env() -> TracerProvider:
    """An SDK tracer provider configured by OpenTelemetry's standard variables.

    ``OTEL_TRACES_EXPORTER``: ``otlp`` (the default: OTLP over gRPC, to
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, http://localhost:4317 unless set),
    ``console`` (spans as JSON on stdout) or ``none``. ``OTEL_SERVICE_NAME`` names
    the service (``peer-grpc`` unless it or ``OTEL_RESOURCE_ATTRIBUTES`` does);
    every process gets a ``service.instance.id`` of its own.
    Call its ``shutdown()`` on exit, to send the spans still queued.

    Raises:
        RuntimeError: the ``otel`` extra is not installed.
        ValueError: ``OTEL_TRACES_EXPORTER`` names an exporter this does not know.
    """
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError as error:
        raise RuntimeError(OTEL_MISSING) from error
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    exporter: SpanExporter | None = None
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            raise RuntimeError(OTEL_MISSING) from error
        exporter = OTLPSpanExporter()
    elif exporter_name != "none":
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter_name!r}: use otlp, console or none")
    # Each process is an instance of its own (serve --workers runs several); the
    # variables, which Resource.create reads, name the service unless they do not.
    attributes = {"service.instance.id": f"{socket.gethostname()}-{os.getpid()}"}
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = "peer-grpc"
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
