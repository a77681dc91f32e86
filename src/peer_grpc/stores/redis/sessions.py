"""The Redis session store: sessions shared by every server replica, surviving restarts.

Each step of :class:`~peer_grpc.stores.protocols.SessionStore` that changes a session
is one Lua script on that session's keys (see :mod:`peer_grpc.stores.redis.scripts`);
admitting a call is one round trip. Shared indexes and counters (the peer ->
session map, the sessions by state, the totals) live under another hash tag and
are updated by a second script after the session's own step. If that second step
is lost (Redis went away between the two), the sweep puts the indexes right.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections import deque
from collections.abc import Generator, Sequence
from typing import Any, cast

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from peer_grpc.core import window
from peer_grpc.core.errors import (
    SequenceError,
    SequenceErrorKind,
    SequenceExhausted,
    SessionExpired,
    SessionFenced,
    SessionLimitReached,
    SessionNotFound,
    SessionTerminated,
    StoreUnavailable,
)
from peer_grpc.core.retry import (
    DEFAULT_RETRY_CACHE,
    FORGOTTEN,
    NOT_RUN,
    CallEnd,
    CallKey,
    CallOutcome,
    decode_outcome,
    encode_outcome,
)
from peer_grpc.core.session import (
    SESSION_MACHINE,
    Session,
    SessionState,
    SessionStats,
    check_usable,
    identity_mismatch,
    short_id,
)
from peer_grpc.stores.memory.sessions import DEFAULT_ENDED_RETENTION
from peer_grpc.stores.protocols import Admission, SweepResult, WindowSnapshot
from peer_grpc.stores.redis import scripts
from peer_grpc.stores.redis.connection import (
    RedisClient,
    RedisOptions,
    connect,
    store_unavailable,
    translate_unavailable,
    unavailable_errors,
)
from peer_grpc.stores.redis.keys import (
    DEFAULT_KEY_PREFIX,
    IndexShard,
    RedisKeys,
    index_member,
    parse_index_member,
)
from peer_grpc.stores.redis.rate_limits import RedisTokenBuckets

__all__ = ["CLUSTER_WAIT_REFUSED", "OUTCOME_DELAY", "REPLICA_TTL", "RedisSessionStore"]

log = logging.getLogger(__name__)

_U32 = 0xFFFFFFFF
#: Settlements kept while Redis is away; beyond this the oldest are dropped (their
#: resends then wait until their deadline instead of getting the outcome).
_MAX_BACKLOG = 10_000
_NOT_RUN_MARK = b"NOT_RUN"
#: Seconds an outcome waits to ride on its session's next admission before it is
#: written on its own. A resend of the call meanwhile waits as long, at most.
OUTCOME_DELAY = 0.05
#: Seconds a replica counts as alive after it last said so: at its first admission and
#: at every :meth:`RedisSessionStore.check` (the server's store watch, every second).
#: A resend whose original call's replica is no longer alive gets NOT_RUN (run it
#: again) instead of waiting for an outcome that will never come.
REPLICA_TTL = 5.0
#: Seconds between looks at whether a waited-on call's replica still lives.
_LIVENESS_CHECK = 0.5
#: Why waiting for replicas is refused on a Redis Cluster.
CLUSTER_WAIT_REFUSED = (
    "--redis-wait-replicas needs one primary (redis:// or redis-sentinel://): on a "
    "Redis Cluster the WAIT cannot follow the admission onto its connection"
)
#: An outcome to write: session id, sequence, admission id, encoded outcome.
_Settlement = tuple[str, int, str, bytes]


class RedisSessionStore:
    """Sessions in Redis, for any number of server replicas.

    Args:
        client: a ``redis.asyncio`` client (see :meth:`from_url`); closed with the store.
            On a ``RedisCluster`` the session indexes are sharded (see
            :mod:`peer_grpc.stores.redis.keys`).
        key_prefix: the start of every key, so deployments can share a Redis.
        ended_retention: seconds ended sessions are remembered, as in memory.
        retry_cache_size: accepted calls per session remembered for resends.
        retry_after: seconds callers are told to wait while Redis is away.
        replica_ttl: seconds this replica counts as alive after :meth:`check` (or its
            first admission) said so; more than the interval between checks.
        wait_replicas: with N > 0, an admission counts only once N replicas of the
            Redis primary have it (Redis WAIT, in the admission's round trip), so that
            a failover to one of them cannot forget an accepted sequence. Not in time
            (``wait_timeout`` seconds), the call is answered UNAVAILABLE and marked not
            run: its resend runs it. Not on a Redis Cluster, whose client cannot send
            the WAIT to the admission's own connection.
        wait_timeout: how long an admission waits for its replicas.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        ended_retention: float = DEFAULT_ENDED_RETENTION,
        retry_cache_size: int = DEFAULT_RETRY_CACHE,
        retry_after: float = 1.0,
        replica_ttl: float = REPLICA_TTL,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
    ) -> None:
        if ended_retention < 0:
            raise ValueError("ended_retention must not be negative")
        if wait_replicas < 0 or wait_timeout <= 0:
            raise ValueError("wait_replicas must not be negative, wait_timeout must be positive")
        sharded = isinstance(client, RedisCluster)
        if wait_replicas and sharded:
            raise ValueError(CLUSTER_WAIT_REFUSED)
        self._redis = client
        self._keys = RedisKeys(key_prefix, sharded=sharded)
        self._retention = ended_retention
        self._cache_size = retry_cache_size
        self._retry_after = retry_after
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in scripts.__all__
            if not name.startswith("TASK_")
        }
        # Admitted calls whose outcome is still to be recorded: (session, sequence) -> admission.
        self._admissions: dict[tuple[str, int], str] = {}
        # Outcomes (or NOT_RUN marks) to write once Redis answers again.
        self._backlog: deque[_Settlement] = deque(maxlen=_MAX_BACKLOG)
        # Outcomes still to be written, by session (see record()).
        self._unsettled: dict[str, list[_Settlement]] = {}
        #: When each session's first unsettled outcome came (loop time), oldest first:
        #: a session leaves when its outcomes ride or are written, and comes back last.
        self._unsettled_since: dict[str, float] = {}
        self._settler: asyncio.TimerHandle | None = None
        self._settling: set[asyncio.Task[None]] = set()
        #: This store's replica: every admission names it, and it renews its liveness.
        self.replica_id = secrets.token_hex(6)
        self._announced = False
        self._replica_ttl_ms = int(replica_ttl * 1000)
        self._wait_replicas = wait_replicas
        self._wait_ms = max(int(wait_timeout * 1000), 1)

    @classmethod
    def from_url(
        cls, url: str, *, options: RedisOptions | None = None, **kwargs: Any
    ) -> RedisSessionStore:
        """A store on the Redis at ``url``; ``kwargs`` as for the constructor."""
        options = options or RedisOptions()
        return cls(connect(url, options), retry_after=options.retry_after, **kwargs)

    # --- SessionStore ---------------------------------------------------------------

    async def create(self, session: Session, max_live: int = 0) -> Session | None:
        now = session.created_at
        created = await self._script(
            "CREATE_SESSION",
            self._keys.session(session.session_id),
            [_time(now), _time(session.expires_at), _time(self._retention), *_fields(session)],
            "creating a session",
        )
        if not created:
            raise ValueError(f"session id collision: {short_id(session.session_id)}")
        if self._keys.sharded:
            previous_id = await self._index_created_sharded(session, max_live)
        else:
            previous_id = await self._index_created(session, max_live)
        if not previous_id:
            return None
        return await self._replace(previous_id, session.peer_id, now)

    async def _index_created(self, session: Session, max_live: int) -> str:
        """Index a new session and make it its peer's, in one step (one Redis); returns
        the peer's previous session id, or ''."""
        index = self._keys.session_index(session.session_id)
        indexed = await self._script(
            "INDEX_CREATED",
            [index.peers, *index.live_sets, index.stats],
            [
                session.peer_id,
                session.session_id,
                index_member(session.session_id, session.peer_id),
                _time(session.expires_at),
                max_live,
            ],
            "indexing a session",
        )
        if indexed[0] == b"FULL":
            await self._withdraw(session.session_id)
            raise SessionLimitReached(max_live)
        return str(indexed[1].decode())

    async def _index_created_sharded(self, session: Session, max_live: int) -> str:
        """As :meth:`_index_created`, across the shards of a Redis Cluster, where no one
        step sees every shard: the live sessions are counted before the session is
        indexed, and again after. Concurrent handshakes at the limit may then all be
        refused, but together they never pass it."""
        peer_index = self._keys.peer_index(session.peer_id)
        if max_live and await self._live_count(peer_index, session.peer_id) >= max_live:
            await self._withdraw(session.session_id)
            raise SessionLimitReached(max_live)
        index = self._keys.session_index(session.session_id)
        member = index_member(session.session_id, session.peer_id)
        await self._script(
            "INDEX_NEW",
            [index.live_sets[0], index.stats],
            [member, _time(session.expires_at)],
            "indexing a session",
        )
        if max_live and await self._live_count(peer_index, session.peer_id) > max_live:
            await self._script(
                "WITHDRAW_NEW",
                [*self._keys.session(session.session_id), index.live_sets[0], index.stats],
                [member],
                "withdrawing a session",
            )
            raise SessionLimitReached(max_live)
        previous: bytes = await self._script(
            "CLAIM_PEER",
            [peer_index.peers],
            [session.peer_id, session.session_id],
            "making the session its peer's",
        )
        return previous.decode()

    async def _live_count(self, peer_index: IndexShard, peer_id: str) -> int:
        """The live sessions in every shard; 0 if the peer has one to replace."""
        with self._unavailable("counting live sessions"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hexists(peer_index.peers, peer_id)
                for index in self._keys.shards:
                    for live_set in index.live_sets:
                        pipe.zcard(live_set)
                has_session, *counts = await pipe.execute()
        return 0 if has_session else sum(counts)

    async def _withdraw(self, session_id: str) -> None:
        """Delete a session just created that the indexes refused."""
        with self._unavailable("withdrawing a session"):
            await self._redis.delete(*self._keys.session(session_id))

    async def _replace(self, session_id: str, peer_id: str, now: float) -> Session | None:
        """End the peer's previous session; returns it as it was before."""
        reply = await self._script(
            "END_SESSION",
            self._keys.session(session_id),
            [_time(now), _time(self._retention), "replace"],
            "ending the replaced session",
        )
        if reply[0] == b"ENDED_NOW":
            await self._index_ended(session_id, peer_id, SessionState(int(reply[1])), now)
            return _decode(session_id, reply[2])
        return await self.get(session_id) if reply[0] == b"ENDED" else None

    async def get(self, session_id: str) -> Session | None:
        with self._unavailable("reading a session"):
            flat = cast(
                dict[bytes, bytes], await self._redis.hgetall(self._keys.session(session_id)[0])
            )
        return _decode_mapping(session_id, flat) if flat else None

    async def get_by_peer(self, peer_id: str) -> Session | None:
        with self._unavailable("looking up a peer's session"):
            peers = self._keys.peer_index(peer_id).peers
            session_id = cast(bytes | None, await self._redis.hget(peers, peer_id))
        if session_id is None:
            return None
        session = await self.get(session_id.decode())
        return session if session is not None and not session.state.is_final else None

    async def transition(self, session_id: str, target: SessionState, now: float) -> Session:
        sources = sorted(int(source) for source in SESSION_MACHINE.sources_of(target))
        reply = await self._script(
            "TRANSITION",
            self._keys.session(session_id),
            [int(target), _time(now), _time(self._retention), *sources],
            "changing a session's state",
        )
        if reply[0] == b"NOT_FOUND":
            raise SessionNotFound(f"no session {short_id(session_id)}")
        if reply[0] == b"INVALID":
            SESSION_MACHINE.check(SessionState(int(reply[1])), target)  # raises InvalidTransition
        session = _decode(session_id, reply[2])
        if target.is_final:
            await self._index_ended(session_id, session.peer_id, target, now)
        elif target is SessionState.ESTABLISHED:
            await self._index_established(session)
        return session

    async def touch(self, session_id: str, now: float, expires_at: float) -> Session:
        reply = await self._script(
            "TOUCH",
            self._keys.session(session_id),
            [_time(now), _time(expires_at), _time(self._retention)],
            "recording activity",
        )
        return self._touched(session_id, reply)

    @staticmethod
    def _touched(session_id: str, reply: Sequence[Any]) -> Session:
        """The session from a TOUCH or RESUME reply, or what its refusal means."""
        if reply[0] == b"NOT_FOUND":
            raise SessionNotFound(f"no session {short_id(session_id)}")
        if reply[0] == b"EXPIRED":
            raise SessionExpired(f"session {short_id(session_id)} expired")
        if reply[0] == b"TERMINATED":
            raise SessionTerminated(f"session {short_id(session_id)} was terminated")
        return _decode(session_id, reply[1])

    async def resume(
        self, session_id: str, now: float, expires_at: float, last_acknowledged: int
    ) -> Session:
        reply = await self._script(
            "RESUME",
            self._keys.session(session_id),
            [
                _time(now),
                _time(expires_at),
                _time(self._retention),
                last_acknowledged >> 32,
                last_acknowledged & _U32,
            ],
            "resuming a session",
        )
        return self._touched(session_id, reply)

    async def admit(
        self,
        session_id: str,
        sequence: int,
        key: CallKey,
        now: float,
        expires_at: float,
        identity: str = "",
    ) -> Admission:
        if not self._announced:
            with self._unavailable("announcing this replica"):
                await self._say_alive()
            self._announced = True
        admission = _new_admission(self.replica_id)
        keys = self._admit_keys(session_id)
        call_key = _call_key(key)
        riding = self._unsettled.pop(session_id, ())
        if riding:
            del self._unsettled_since[session_id]
        args: list[str | bytes | int] = [
            _time(now),
            _time(expires_at),
            _time(self._retention),
            sequence >> 32,
            sequence & _U32,
            str(sequence),
            call_key,
            admission,
            self._cache_size,
            identity,
        ]
        for _, earlier, earlier_admission, outcome in riding:
            args += [str(earlier), earlier_admission, outcome]
        try:
            if self._wait_replicas:
                reply, replicated = await self._admit_replicated(keys, args)
            else:
                reply, replicated = await self._scripts["ADMIT"](keys=keys, args=args), True
        except unavailable_errors as error:
            # The script may have run with its reply lost: once Redis is back, mark the
            # call as never served, so that a resend of it runs it instead of waiting.
            self._backlog.extend(riding)
            self._backlog.append((session_id, sequence, admission, _NOT_RUN_MARK))
            raise store_unavailable("admitting a call", error, self._retry_after) from error
        verdict = reply[0]
        if not replicated and verdict in (b"OK", b"RESEND"):
            # On the primary alone, which a failover may forget: the call does not run now.
            # A first admission is marked not run, so that a resend of it runs it.
            if verdict == b"OK":
                await self._write_settlements([(session_id, sequence, admission, _NOT_RUN_MARK)])
            raise StoreUnavailable(
                f"the call was not on {self._wait_replicas} Redis replicas within "
                f"{self._wait_ms} ms (--redis-wait-replicas); it did not run: send it again",
                self._retry_after,
            )
        if verdict == b"OK":
            session = _decode_admitted(session_id, reply[2])
            if reply[1]:  # a session from before the index member was kept with it
                await self._index_established(session)
            if self._cache_size:
                self._admissions[(session_id, sequence)] = admission
            return Admission(session)
        if verdict == b"RESEND":
            session = _decode_admitted(session_id, reply[2])
            return Admission(session, _Outcome(self, session_id, sequence, call_key, reply[1]))
        if verdict == b"FORBIDDEN":
            raise identity_mismatch(session_id)
        if verdict == b"FENCED":
            raise SessionFenced(
                f"session {short_id(session_id)}: the store (Redis) changed primary or "
                "restarted since it last vouched for the session, and may have lost its "
                "latest calls; resume the session with last_acknowledged, then send the "
                "call again: it did not run"
            )
        return await self._refuse(session_id, sequence, reply, now)

    async def _admit_replicated(
        self, keys: list[str], args: list[str | bytes | int], *, loaded: bool = False
    ) -> tuple[Any, bool]:
        """ADMIT, then WAIT for the replicas, in one round trip: the reply, and whether
        enough replicas have every write of the connection by then."""
        script = self._scripts["ADMIT"]
        # EVALSHA by hand: a Script in a pipeline asks Redis whether it has the script
        # first, a round trip of its own on every call.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self._wait_replicas, self._wait_ms)
            reply, acknowledged = await pipe.execute(raise_on_error=False)
        if isinstance(reply, redis.exceptions.NoScriptError) and not loaded:
            # A Redis that restarted, or a replica just promoted: it never ran it.
            await self._redis.script_load(script.script)
            return await self._admit_replicated(keys, args, loaded=True)
        for answer in (reply, acknowledged):
            if isinstance(answer, Exception):
                raise answer
        return reply, int(acknowledged) >= self._wait_replicas

    def _admit_keys(self, session_id: str) -> list[str]:
        """ADMIT's keys: the session's own three, its live indexes and its stats."""
        index = self._keys.session_index(session_id)
        return [*self._keys.session(session_id), *index.live_sets, index.stats]

    async def _refuse(
        self, session_id: str, sequence: int, reply: Sequence[Any], now: float
    ) -> Admission:
        """Raise what a refused admission means (the script counted sequence errors)."""
        verdict = reply[0]
        if verdict == b"SEQUENCE":
            highest = int(reply[3]) << 32 | int(reply[4])
            raise SequenceError(
                session_id,
                highest + 1,
                sequence,
                SequenceErrorKind[reply[1].decode()],
                outside_window=bool(reply[2]),
                replay_window=int(reply[5]),
            )
        if verdict == b"EXHAUSTED":
            raise SequenceExhausted(
                f"session {short_id(session_id)} used its last sequence number (2^64-1); "
                "sequences never wrap: terminate it and open a new session"
            )
        # Not usable: let the one rule say why, from the session as it stands.
        check_usable(await self.get(session_id), session_id, now)
        raise SessionNotFound(f"no session {short_id(session_id)}")  # it vanished meanwhile

    async def record(self, session_id: str, sequence: int, outcome: CallOutcome) -> None:
        admission = self._admissions.pop((session_id, sequence), None)
        if admission is None:
            return
        value = _NOT_RUN_MARK if _is_not_run(outcome) else encode_outcome(outcome)
        # Not written now, so that the answer does not wait for a second round trip: the
        # outcome rides on the session's next admission, or, if none comes within
        # OUTCOME_DELAY, goes in one pipeline with the other outcomes still waiting. A
        # resend that comes first waits for it.
        entries = self._unsettled.get(session_id)
        if entries is None:
            loop = asyncio.get_running_loop()
            self._unsettled[session_id] = entries = []
            self._unsettled_since[session_id] = loop.time()
            if self._settler is None:
                self._settler = loop.call_later(OUTCOME_DELAY, self._settle_later)
        entries.append((session_id, sequence, admission, value))

    def _settle_later(self) -> None:
        """Write the outcomes that waited OUTCOME_DELAY for their session's next call in
        vain; look again when the next oldest will have."""
        self._settler = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        batch: list[_Settlement] = []
        for session_id, since in self._unsettled_since.items():
            if now - since < OUTCOME_DELAY:
                self._settler = loop.call_later(OUTCOME_DELAY - (now - since), self._settle_later)
                break
            batch += self._unsettled.pop(session_id)
        for session_id in {entry[0] for entry in batch}:
            del self._unsettled_since[session_id]
        if batch:
            task = loop.create_task(self._write_settlements(batch))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle_waiting(self) -> None:
        """Write every outcome still waiting, in one pipeline."""
        batch = [entry for entries in self._unsettled.values() for entry in entries]
        self._unsettled.clear()
        self._unsettled_since.clear()
        await self._write_settlements(batch)

    async def _write_settlements(self, batch: list[_Settlement]) -> None:
        if not batch:
            return
        try:
            await self._settle_batch(batch)
        except unavailable_errors:
            # The callers have their answers; a resend gets one once Redis is back.
            log.warning("Redis unavailable: recording %d outcomes later", len(batch))
            self._backlog.extend(batch)

    async def _settle_batch(self, batch: list[_Settlement]) -> None:
        if len(batch) == 1:
            await self._settle(batch[0])
            return
        sha = self._scripts["SETTLE_CALL"].sha
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, sequence, admission, value in batch:
                calls_key = self._keys.session(session_id)[1]
                pipe.evalsha(sha, 1, calls_key, str(sequence), admission, value)
            results = await pipe.execute(raise_on_error=False)
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):  # NOSCRIPT after a restart of Redis, say
                await self._settle(entry)

    async def window(self, session_id: str) -> WindowSnapshot:
        with self._unavailable("reading a session's window"):
            fields = await self._redis.hmget(
                self._keys.session(session_id)[0], ["hi", "lo", "window", "ring"]
            )
        hi, lo, width, ring = cast(list[bytes], fields)
        if hi is None:
            raise SessionNotFound(f"no session {short_id(session_id)}")
        highest = int(hi) << 32 | int(lo)
        if not int(width):
            return WindowSnapshot(highest, b"")
        return WindowSnapshot(highest, window.window_bitmap(bytearray(ring), int(width), highest))

    async def next_send_sequence(self, session_id: str) -> int:
        sequence = await self._script(
            "NEXT_SEND", self._keys.session(session_id)[:1], [], "numbering a message"
        )
        if sequence is None:
            raise SessionNotFound(f"no session {short_id(session_id)}")
        return int(sequence)

    async def sweep(self, now: float, limit: int) -> SweepResult:
        expired = purged = work = 0
        for live_set, member in await self._due(now, limit, ended=False):
            work += 1
            expired += await self._expire_if_due(live_set, member, now)
        for ended_set, member in await self._due(now, max(limit - work, 0), ended=True):
            work += 1
            session_id, _ = parse_index_member(member)
            with self._unavailable("sweeping"):
                await self._redis.delete(*self._keys.session(session_id))
                purged += await self._redis.zrem(ended_set, member)
        return SweepResult(expired=expired, purged=purged, more=work >= limit)

    async def _due(self, now: float, limit: int, *, ended: bool) -> list[tuple[str, bytes]]:
        """Up to ``limit`` (set, member) pairs of every shard's live (or ended) sets whose
        score (a deadline) has come, read in one pipeline."""
        if limit <= 0:
            return []
        names = [
            name
            for index in self._keys.shards
            for name in (index.ended_sets if ended else index.live_sets)
        ]
        with self._unavailable("sweeping"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrangebyscore(name, "-inf", _time(now), start=0, num=limit)
                replies = cast(list[list[bytes]], await pipe.execute())
        due = [(name, member) for name, members in zip(names, replies, strict=True)
               for member in members]  # fmt: skip
        return due[:limit]

    async def _expire_if_due(self, live_set: str, member: bytes, now: float) -> int:
        """Expire one live session whose deadline (as last indexed) has come; 1 if it did."""
        session_id, peer_id = parse_index_member(member)
        reply = await self._script(
            "END_SESSION",
            self._keys.session(session_id),
            [_time(now), _time(self._retention), "due"],
            "sweeping",
        )
        verdict = reply[0]
        if verdict == b"LIVE":  # activity moved its deadline since
            with self._unavailable("sweeping"):
                await self._redis.zadd(live_set, {member: float(reply[1])}, xx=True)
            return 0
        if verdict == b"ENDED":  # ended, but the index step was lost: put it right
            await self._index_ended(session_id, peer_id, SessionState(int(reply[1])), now)
            return 0
        # Expired now, or vanished with its keys' TTL while nobody swept.
        await self._index_ended(session_id, peer_id, SessionState.EXPIRED, now)
        return 1

    async def stats(self) -> SessionStats:
        by_state = ("handshaking", "established", "terminated", "expired")
        with self._unavailable("reading statistics"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for index in self._keys.shards:
                    for live_or_ended in (*index.live_sets, *index.ended_sets):
                        pipe.zcard(live_or_ended)
                    pipe.hgetall(index.stats)
                replies = await pipe.execute()
        counts = dict.fromkeys(by_state, 0)
        totals: dict[str, int] = {}
        for shard in range(len(self._keys.shards)):
            *sizes, shard_totals = replies[shard * 5 : shard * 5 + 5]
            for state, size in zip(by_state, sizes, strict=True):
                counts[state] += size
            for name, value in shard_totals.items():
                totals[name.decode()] = totals.get(name.decode(), 0) + int(value)
        return SessionStats(
            **counts,
            created_total=totals.get("created_total", 0),
            expired_total=totals.get("expired_total", 0),
            terminated_total=totals.get("terminated_total", 0),
            sequence_errors_total=totals.get("sequence_errors_total", 0),
        )

    async def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers; then write what waited for it.

        The answer also renews this replica's liveness (see :data:`REPLICA_TTL`): the
        server checks every second, and other replicas then wait for the outcomes of
        its calls rather than answering resends NOT_RUN.
        """
        with self._unavailable("answering a health check"):
            await self._say_alive()
        while self._backlog:
            entry = self._backlog[0]
            with self._unavailable("recording outcomes"):
                await self._settle(entry)
            self._backlog.popleft()

    async def close(self) -> None:
        """Write the outcomes still waiting to be written, say this replica is gone, then
        close the Redis client."""
        if self._settler is not None:
            self._settler.cancel()
            self._settler = None
        with contextlib.suppress(*unavailable_errors):
            await self._settle_waiting()
        if self._settling:
            await asyncio.wait(self._settling, timeout=self._retry_after + 1)
        if self._announced:
            with contextlib.suppress(*unavailable_errors):
                await self._redis.delete(self._keys.replica(self.replica_id))
        await self._redis.aclose()

    async def _say_alive(self) -> None:
        await self._redis.set(self._keys.replica(self.replica_id), b"1", px=self._replica_ttl_ms)

    def token_buckets(self, scope: str, rate: float, burst: int) -> RedisTokenBuckets:
        """Token buckets on this store's Redis (handshake limits every replica shares)."""
        return RedisTokenBuckets(
            self._redis, self._keys, scope, rate, burst, retry_after=self._retry_after
        )

    async def replica_alive(self, replica_id: str) -> bool:
        """Whether the replica ``replica_id`` said it was alive within :data:`REPLICA_TTL`."""
        if replica_id == self.replica_id:
            return True
        with self._unavailable("asking whether a replica is alive"):
            return bool(await self._redis.exists(self._keys.replica(replica_id)))

    # --- helpers --------------------------------------------------------------------

    async def _settle(self, entry: _Settlement) -> None:
        session_id, sequence, admission, value = entry
        args: list[str | bytes] = [str(sequence), admission, value]
        await self._scripts["SETTLE_CALL"](keys=self._keys.session(session_id)[1:2], args=args)

    async def _index_established(self, session: Session) -> None:
        await self._index(
            "INDEX_ESTABLISHED",
            list(self._keys.session_index(session.session_id).live_sets),
            [index_member(session.session_id, session.peer_id), _time(session.expires_at)],
        )

    async def _index_ended(
        self, session_id: str, peer_id: str, final: SessionState, now: float
    ) -> None:
        index = self._keys.session_index(session_id)
        peer_index = self._keys.peer_index(peer_id)
        # The peer's entry goes in the same step when it lives in the same shard.
        peers = [peer_index.peers] if peer_index is index else []
        await self._index(
            "INDEX_ENDED",
            [*index.live_sets, index.state_set(final), index.stats, *peers],
            [
                index_member(session_id, peer_id),
                peer_id,
                session_id,
                _time(now + self._retention),
                final.name.lower(),
            ],
        )
        if not peers:
            await self._index("RELEASE_PEER", [peer_index.peers], [peer_id, session_id])

    async def _index(self, name: str, keys: list[str], args: list[Any]) -> None:
        """Update the shared indexes; if Redis went away, the sweep will put them right."""
        try:
            await self._scripts[name](keys=keys, args=args)
        except unavailable_errors:
            log.warning("Redis unavailable: %s deferred to the sweep", name)

    async def _script(self, name: str, keys: Sequence[str], args: list[Any], what: str) -> Any:
        script: AsyncScript = self._scripts[name]
        with self._unavailable(what):
            return await script(keys=list(keys), args=args)

    def _unavailable(self, what: str) -> Any:
        return translate_unavailable(what, self._retry_after)


class _Outcome:
    """The outcome of an accepted call, for a resend: known already, or awaited from Redis.

    An awaitable rather than a coroutine, so that one nobody awaits (a resent
    stream is refused at once) leaves nothing behind.
    """

    def __init__(
        self,
        store: RedisSessionStore,
        session_id: str,
        sequence: int,
        call_key: bytes,
        known: bytes,
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._calls = store._keys.session(session_id)[1]
        self._sequence = str(sequence)
        self._call_key = call_key
        self._known = known

    def __await__(self) -> Generator[Any, None, CallOutcome]:
        return self._wait().__await__()

    async def _wait(self) -> CallOutcome:
        value = self._known
        delay = 0.002
        store = self._store
        clock = asyncio.get_running_loop().time
        next_liveness_check = clock()
        while not value:  # the original still runs, here or on another replica
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            with store._unavailable("waiting for a call's outcome"):
                fields = await store._redis.hmget(
                    self._calls,
                    [self._sequence, f"{self._sequence}:o", f"{self._sequence}:a"],
                )
            key, value, admission = cast(list[bytes], fields)
            if key != self._call_key:
                return FORGOTTEN
            if value or not admission or clock() < next_liveness_check:
                continue
            next_liveness_check = clock() + _LIVENESS_CHECK
            if not await store.replica_alive(_replica_of(admission)):
                # Its replica died before recording how the call ended: mark it not run,
                # so that this resend is told to send it again, and that send runs it.
                dead = (self._session_id, int(self._sequence), admission.decode(), _NOT_RUN_MARK)
                with store._unavailable("recording a call whose replica died"):
                    await store._settle(dead)
        return NOT_RUN if value == _NOT_RUN_MARK else decode_outcome(value)


def _new_admission(replica_id: str) -> str:
    """A new admission id, naming the replica that admits: ``<replica>-<random>``."""
    return f"{replica_id}-{secrets.token_hex(8)}"


def _replica_of(admission: bytes) -> str:
    """The replica an admission id names (see :func:`_new_admission`)."""
    return admission.decode().partition("-")[0]


def _is_not_run(outcome: CallOutcome) -> bool:
    return outcome.end is CallEnd.NOT_RUN


def _time(seconds: float) -> str:
    """A time as Lua gets it: the exact decimal Python reads back."""
    return repr(float(seconds))


def _call_key(key: CallKey) -> bytes:
    return key.method.encode() + b"\0" + key.digest


def _fields(session: Session) -> list[Any]:
    highest = session.highest_accepted
    ring = bytes(window.new_ring(session.window)) if session.window else b""
    return [
        *("peer", session.peer_id),
        *("state", int(session.state)),
        *("ver", session.protocol_version),
        *("caps", json.dumps(list(session.capabilities))),
        *("created", _time(session.created_at)),
        *("last", _time(session.last_activity)),
        *("expires", _time(session.expires_at)),
        *("ended", _time(session.ended_at)),
        *("seqnum", session.sequence_num),
        *("hi", highest >> 32),
        *("lo", highest & _U32),
        *("window", session.window),
        *("token", session.token_hash),
        *("ring", ring),
        *("ident", session.identity),
        *("lifeend", _time(session.lifetime_ends_at)),
        # Its member in the shared indexes, which ADMIT moves at the first call.
        *("member", index_member(session.session_id, session.peer_id)),
    ]


def _decode_admitted(session_id: str, values: Sequence[bytes]) -> Session:
    """A session from an ADMIT reply: the values of the fields it names, in its order.

    Without its token hash, which no admitted call needs (resuming reads the whole
    session).
    """
    (state, expires, hi, lo, width, ident, lifeend, peer, ver, caps, created, last, ended,
     seqnum) = values  # fmt: skip
    return Session(
        session_id,
        peer.decode(),
        _STATES[state],
        ver.decode(),
        _capabilities(caps),
        float(created),
        float(last),
        float(expires),
        int(seqnum),
        float(ended),
        int(width),
        int(hi) << 32 | int(lo),
        b"",
        ident.decode() if ident else "",
        float(lifeend) if lifeend else 0.0,
    )


_STATES = {str(int(state)).encode(): state for state in SessionState} | {
    int(state): state for state in SessionState
}


@functools.lru_cache(maxsize=256)
def _capabilities(encoded: bytes) -> tuple[str, ...]:
    """A session's capabilities from their JSON; peers of one kind share a few lists."""
    return tuple(json.loads(encoded))


def _decode(session_id: str, flat: Sequence[bytes]) -> Session:
    """A session from a script's HGETALL reply (field, value, field, value, ...)."""
    return _decode_mapping(session_id, dict(zip(flat[::2], flat[1::2], strict=True)))


def _decode_mapping(session_id: str, fields: dict[bytes, bytes]) -> Session:
    highest = int(fields[b"hi"]) << 32 | int(fields[b"lo"])
    return Session(
        session_id=session_id,
        peer_id=fields[b"peer"].decode(),
        state=SessionState(int(fields[b"state"])),
        protocol_version=fields[b"ver"].decode(),
        capabilities=tuple(json.loads(fields[b"caps"])),
        created_at=float(fields[b"created"]),
        last_activity=float(fields[b"last"]),
        expires_at=float(fields[b"expires"]),
        sequence_num=int(fields[b"seqnum"]),
        ended_at=float(fields[b"ended"]),
        window=int(fields[b"window"]),
        highest_accepted=highest,
        token_hash=fields[b"token"],
        # Absent from sessions written before these fields existed.
        identity=fields.get(b"ident", b"").decode(),
        lifetime_ends_at=float(fields.get(b"lifeend", b"0")),
    )
