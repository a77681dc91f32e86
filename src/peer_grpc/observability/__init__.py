"""What watches a server's calls: call observers, Prometheus metrics, logs and traces."""

from peer_grpc.observability.calls import CallObserver, ObservedCall

__all__ = ["CallObserver", "ObservedCall"]
