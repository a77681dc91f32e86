# peer-grpc: the server as a container image.
#
#   docker build -t peer-grpc .
#   docker run --rm -p 127.0.0.1:50051:50051 -p 127.0.0.1:9090:9090 peer-grpc
#
# Every `peer-grpc serve` option can be set with its PEER_GRPC_<OPTION> variable
# (docker run -e PEER_GRPC_STORE=redis://redis:6379/0 ...); docs/deploy.md lists them.
# tests/test_deploy.py checks this file against the CLI, pyproject.toml and deploy/.

# The Python of both stages; it must satisfy pyproject's requires-python.
ARG PYTHON_VERSION=3.11

# ---- builder: the sdist and the wheel, built from pyproject.toml as a release builds them
FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN pip install "build>=1.0"
WORKDIR /src
# What the sdist needs: the project's metadata, the readme it names, and the package
# (with the generated code under src/peer_grpc/_proto, which is checked in).
COPY pyproject.toml README.md ./
COPY src ./src
# The wheel is built from the sdist, so that the image carries exactly what a release does.
RUN python -m build --outdir /dist .

# ---- runtime: the wheel and its runtime dependencies, nothing else
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# Runtime extras to install with the wheel, e.g. --build-arg EXTRAS=otel for `serve --otel`.
ARG EXTRAS=""
# The wheel and its runtime dependencies only: no [dev] extras. --only-binary: every
# dependency comes as a wheel, so no compiler is needed (or present).
COPY --from=builder /dist/ /tmp/dist/
RUN wheel="$(echo /tmp/dist/peer_grpc-*.whl)" \
    && pip install --only-binary=:all: "${wheel}${EXTRAS:+[${EXTRAS}]}" \
    && rm -rf /tmp/dist \
    && groupadd --system --gid 10001 peer \
    && useradd --system --uid 10001 --gid peer --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin peer
COPY deploy/healthcheck.py /usr/local/bin/peer-grpc-healthcheck

# The working directory is on the import path of `serve --tasks MODULE:ATTRIBUTE`:
# mount or copy a module of task handlers here.
WORKDIR /app

# The installed code was compiled to bytecode as root; nothing is written at run time.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Settings as variables rather than flags, so that `docker run -e` and compose can
# override each of them (a flag would win over its variable).
# - host 0.0.0.0: reachable from outside the container;
# - metrics: Prometheus text on http://<container>:9090/metrics;
# - logs: one JSON object per line on stderr.
ENV PEER_GRPC_HOST=0.0.0.0 \
    PEER_GRPC_PORT=50051 \
    PEER_GRPC_METRICS_PORT=9090 \
    PEER_GRPC_LOG_FORMAT=json

# gRPC, then metrics.
EXPOSE 50051 9090

USER 10001:10001

# The gRPC health service (grpc.health.v1.Health) for peer.v1.PeerService on
# 127.0.0.1:$PEER_GRPC_PORT: SERVING, else unhealthy (NOT_SERVING while Redis does
# not answer, or during shutdown). It answers within 3 s.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/bin/peer-grpc-healthcheck"]

# `serve` stops gracefully on SIGTERM (docker stop): it refuses new work, gives calls
# in flight --shutdown-grace seconds (PEER_GRPC_SHUTDOWN_GRACE, default 5) and exits 0.
# Keep docker's stop timeout (10 s by default) above that grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["peer-grpc"]
CMD ["serve"]
