"""What watches a server's calls: call observers, Prometheus metrics, logs and traces."""

from peer_grpc.observability.calls import CallEnded, CallObserver, CallStarted, ObservedCall

__all__ = ["CallEnded", "CallObserver", "CallStarted", "ObservedCall"]
