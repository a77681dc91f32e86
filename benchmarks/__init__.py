"""peer-grpc's benchmarks: what the session and sequence checks cost, against bare grpcio.

``make bench`` runs :mod:`benchmarks.__main__`, which writes ``BENCHMARKS.md`` and
``docs/benchmarks.png``. Servers and load generators run as separate processes on
loopback; every figure is also given as a ratio to a bare servicer measured in
the same run. Nothing here is imported by the product.
"""
