"""The Redis connection the Redis stores share, and what its failures mean to callers."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from peer_grpc.core.errors import StoreUnavailable

__all__ = [
    "CLUSTER_SCHEMES",
    "REDIS_URL_SCHEMES",
    "SENTINEL_SCHEMES",
    "ClusterAddress",
    "RedisClient",
    "RedisOptions",
    "SentinelAddress",
    "check_store_url",
    "connect",
    "parse_cluster_url",
    "parse_sentinel_url",
    "store_unavailable",
    "translate_unavailable",
    "unavailable_errors",
]

#: Failures after which Redis may answer again: the call is worth sending again.
#: A replica promoted by a failover answers READONLY until clients follow it.
unavailable_errors: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (LOADING)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
    # A slot whose primary died and whose replica is not promoted yet, seen by the
    # cluster client until its retries run out; a cluster none of whose nodes answers;
    # and redirections that went on for longer than the client's retries.
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
    redis.exceptions.ClusterError,
)

#: What the stores talk to: one Redis (directly or through Sentinel), or a Redis Cluster.
RedisClient = redis.asyncio.Redis | RedisCluster


#: A primary with replicas, found through Sentinel (TLS to the primary: ``rediss-``).
SENTINEL_SCHEMES = ("redis-sentinel://", "rediss-sentinel://")
#: A Redis Cluster, found through any of its nodes (TLS: ``rediss-``).
CLUSTER_SCHEMES = ("redis-cluster://", "rediss-cluster://")
#: Every kind of Redis URL the stores take.
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
#: The port Sentinel listens on unless a URL names another.
_SENTINEL_PORT = 26379
#: The port of a Redis Cluster node unless a URL names another.
_REDIS_PORT = 6379


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """Where the Sentinels are, and which primary to ask them for (a Sentinel URL)."""

    sentinels: tuple[tuple[str, int], ...]
    #: The name the Sentinels monitor the primary under (``sentinel monitor <name> ...``).
    service: str
    db: int = 0
    #: The primary's credentials (the Sentinels are asked without them).
    username: str | None = None
    password: str | None = None
    #: TLS to the primary (``rediss-sentinel://``).
    tls: bool = False


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where to find a Redis Cluster (a cluster URL): the nodes to ask for the rest."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    #: TLS to every node (``rediss-cluster://``).
    tls: bool = False


def parse_cluster_url(url: str) -> ClusterAddress:
    """``redis-cluster://[[user]:password@]host[:port][,host[:port]...]``.

    Any reachable node will do: the client learns the others, and which slots each
    serves, from it. Naming several lets the client start while one is down.

    Raises:
        ValueError: not such a URL, saying what is wrong.
    """
    scheme, username, password, hosts, path = _parts(url, CLUSTER_SCHEMES, "Redis Cluster")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"{url!r}: a Redis Cluster has only database 0")
    return ClusterAddress(
        nodes=tuple(_host_and_port(host, url, _REDIS_PORT) for host in hosts.split(",")),
        username=username,
        password=password,
        tls=scheme == "rediss-cluster",
    )


def _parts(
    url: str, schemes: tuple[str, ...], kind: str
) -> tuple[str, str | None, str | None, str, str]:
    """``scheme://[[user]:password@]hosts[/path]`` as (scheme, user, password, hosts,
    path), absent credentials None; ValueError unless the scheme is one of ``schemes``."""
    scheme, _, rest = url.partition("://")
    if f"{scheme}://" not in schemes:
        raise ValueError(f"not a {kind} URL ({' or '.join(schemes)}): {url!r}")
    location, _, path = rest.partition("/")
    credentials, _, hosts = location.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    unquote = urllib.parse.unquote
    return scheme, unquote(username) or None, unquote(password) or None, hosts, path


def parse_sentinel_url(url: str) -> SentinelAddress:
    """``redis-sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``.

    Raises:
        ValueError: not such a URL, saying what is wrong.
    """
    scheme, username, password, hosts, path = _parts(url, SENTINEL_SCHEMES, "Sentinel")
    sentinels = tuple(_host_and_port(host, url, _SENTINEL_PORT) for host in hosts.split(","))
    service, _, db = path.partition("/")
    if not service:
        raise ValueError(f"{url!r} names no service: add /<name the Sentinels monitor>")
    if db and not db.isdigit():
        raise ValueError(f"{url!r}: the database after the service must be a number")
    return SentinelAddress(
        sentinels=sentinels,
        service=urllib.parse.unquote(service),
        db=int(db or 0),
        username=username,
        password=password,
        tls=scheme == "rediss-sentinel",
    )


def _host_and_port(text: str, url: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6 address]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a name, an IPv4 address, or a bare IPv6 address: the default port
        host, port = text, ""
    port = port or str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{url!r}: {text!r} is not a host:port")
    return host, int(port)


def check_store_url(url: str) -> None:
    """Raise ValueError, saying why, unless ``url`` is a Redis URL the stores take."""
    if not url.startswith(REDIS_URL_SCHEMES):
        raise ValueError(f"not a Redis URL: it must start with {', '.join(REDIS_URL_SCHEMES)}")
    if url.startswith(SENTINEL_SCHEMES):
        parse_sentinel_url(url)
    elif url.startswith(CLUSTER_SCHEMES):
        parse_cluster_url(url)
    else:
        redis.asyncio.connection.parse_url(url)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """How the stores talk to Redis."""

    #: Seconds a command may take before it counts as failed (and the call gets UNAVAILABLE).
    command_timeout: float = 1.0
    #: Seconds to open a connection.
    connect_timeout: float = 1.0
    #: Times redis-py sends a command again after a connection error or timeout, even
    #: when the first send ran. Safe for every script here: each recognises its own
    #: earlier effect (an admission id, a task's own snapshot) and answers as before.
    retries: int = 2
    #: The first and the longest wait between those tries, and between reconnects.
    backoff_base: float = 0.05
    backoff_cap: float = 0.5
    #: Seconds a caller is told to wait before trying again while Redis is away.
    retry_after: float = 1.0


def connect(url: str, options: RedisOptions | None = None) -> RedisClient:
    """A client for ``url`` (any of :data:`REDIS_URL_SCHEMES`) with bounded timeouts and
    retries; it connects lazily and reconnects by itself.

    Through Sentinel, it asks the Sentinels for the primary on every new connection,
    so that after a failover it follows the promoted replica. On a Redis Cluster it
    sends each command to the primary of its key's slot, and learns the cluster's
    new shape when a node answers MOVED or stops answering.
    """
    options = options or RedisOptions()
    settings: dict[str, Any] = {
        "socket_timeout": options.command_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "retry": Retry(
            ExponentialWithJitterBackoff(cap=options.backoff_cap, base=options.backoff_base),
            options.retries,
        ),
        "retry_on_error": list(unavailable_errors),
        "health_check_interval": 0,
    }
    if url.startswith(CLUSTER_SCHEMES):
        return _cluster_client(parse_cluster_url(url), settings)
    if not url.startswith(SENTINEL_SCHEMES):
        return redis.asyncio.Redis.from_url(url, **settings)
    address = parse_sentinel_url(url)
    sentinel = Sentinel(
        address.sentinels,
        sentinel_kwargs={
            "socket_timeout": options.command_timeout,
            "socket_connect_timeout": options.connect_timeout,
        },
    )
    client: _SentinelsPrimary = sentinel.master_for(
        address.service,
        redis_class=_SentinelsPrimary,
        db=address.db,
        username=address.username,
        password=address.password,
        ssl=address.tls,
        **settings,
    )
    client.watched_by = sentinel
    return client


def _cluster_client(address: ClusterAddress, settings: dict[str, Any]) -> RedisCluster:
    # The retry settings serve the cluster client as a whole: after MOVED, or a node
    # that stopped answering, it reads the slots again before the next try.
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
        username=address.username,
        password=address.password,
        ssl=address.tls,
        **settings,
    )


class _SentinelsPrimary(redis.asyncio.Redis):
    """A client of the primary the Sentinels name; closing it closes their clients too."""

    #: The Sentinels that name the primary.
    watched_by: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.watched_by is not None:
            for client in self.watched_by.sentinels:
                await client.aclose()


def store_unavailable(what: str, error: Exception, retry_after: float) -> StoreUnavailable:
    """The error a caller gets when Redis failed with ``error`` while the server was ``what``."""
    return StoreUnavailable(
        f"the store (Redis) did not answer while {what} ({type(error).__name__}); "
        "try again shortly",
        retry_after,
    )


@contextlib.contextmanager
def translate_unavailable(what: str, retry_after: float) -> Iterator[None]:
    """Raise :class:`StoreUnavailable` for a Redis that cannot answer ``what``."""
    try:
        yield
    except unavailable_errors as error:
        raise store_unavailable(what, error, retry_after) from error
