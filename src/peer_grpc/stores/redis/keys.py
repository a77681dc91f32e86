"""Where the Redis stores keep what: the key layout, in one place.

Every key starts with a prefix (``peer-grpc`` unless configured), so that several
deployments can share one Redis. The part in braces is the Redis Cluster hash
tag: keys with the same tag live in the same slot, which is what lets one Lua
script touch all of them atomically.

Per session (tag ``{s:<session id>}``; one script admits a call on all three)::

    <prefix>:{s:<id>}:session   HASH  the session: peer, state, times, the highest
                                      accepted sequence as two 32-bit halves (hi, lo),
                                      the server's seqnum, window width and ring, and
                                      the replication id of the primary that last
                                      vouched for it (epoch; see the scripts' fence)
    <prefix>:{s:<id>}:calls     HASH  the retry record: <seq> -> method and digest,
                                      <seq>:a -> the admission's id, <seq>:o -> outcome
    <prefix>:{s:<id>}:order     LIST  the remembered sequences, oldest first

All three carry a PEXPIRE of (idle deadline - now + ended retention), renewed by
every admitted call, so a session nobody sweeps still vanishes by itself.

Tasks and their queue (tag ``{tasks}``: every task script works in this one slot,
so that a task is stored, counted and enqueued in one atomic step)::

    <prefix>:{tasks}:task:<id>    STREAM the task's snapshots, entry id <version>-0,
                                         so watchers XREAD what follows theirs; about the
                                         latest 64 are kept (progress reports add one
                                         each) (fields: see
                                         :mod:`peer_grpc.stores.redis.task_queue`)
    <prefix>:{tasks}:queue        STREAM the queue: one entry (task id, payload) per task
                                         waiting or running; consumer group ``runners``,
                                         whose pending entries are the running tasks' leases
    <prefix>:{tasks}:wake         STREAM a short stream idle runners block on: an entry
                                         whenever a task waits unclaimed
    <prefix>:{tasks}:counts       HASH   queued, running, and max_running as the front
                                         ends last set it (the limit every runner obeys)
    <prefix>:{tasks}:open:<sid>   SET    a session's unfinished tasks
    <prefix>:{tasks}:owned:<peer> ZSET   the peer's task ids, scored by ordinal (ListTasks)
    <prefix>:{tasks}:ordinal      STRING the last task ordinal handed out
    <prefix>:{tasks}:ended        ZSET   finished task ids, scored by when to forget them

Per rate-limited key (tag ``{b:<scope>:<hash of the key>}``)::

    <prefix>:{b:<scope>:<hash>}:bucket  HASH  a token bucket: tokens, updated; gone once full

Per replica (tag ``{r:<replica id>}``)::

    <prefix>:{r:<id>}:alive     STRING present while the replica lives: it renews the
                                       key's TTL every second; admissions name their replica

Indexes and counters of the sessions (tag ``{global}`` on one Redis; one script
updates them together)::

    <prefix>:{global}:peers          HASH  peer id -> its live session id
    <prefix>:{global}:handshaking    ZSET  live sessions in INITIAL or HANDSHAKE_SENT
    <prefix>:{global}:established    ZSET  live ESTABLISHED sessions
    <prefix>:{global}:terminated     ZSET  ended sessions kept for their retention
    <prefix>:{global}:expired        ZSET  likewise
    <prefix>:{global}:stats          HASH  created/expired/terminated/sequence_errors totals

Members of the session ZSETs are ``["<session id>","<peer id>"]`` (JSON), scored
by the idle deadline as it was when last looked at (live sets) or by when to
forget the session (ended sets); the sweep corrects live scores lazily. Activity
writes outside the session's own keys only as the admission script's side steps:
a session's first call moves it from ``handshaking`` to ``established``, and a
refused sequence counts in ``stats``, in the same round trip (issue 17). Sessions
keep their member in a ``member`` field of their hash for the first of these.
Members of ``tasks-ended`` are ``["<task id>","<peer id>"]``.

On a Redis Cluster (``sharded``), where a script may touch one slot only, those
indexes are split into :data:`SHARDS` shards, each under a hash tag of its own,
``{shard:<n>}``, and a session's own keys move into its shard so that the admission
and its side steps stay one script in one slot::

    <prefix>:{shard:<n>}:s:<id>:session|calls|order   as above, n = shard of the id
    <prefix>:{shard:<n>}:handshaking|established|terminated|expired|stats
    <prefix>:{shard:<n>}:peers       HASH  for the peers whose id falls in shard n

A session's shard is the CRC-32 of its id modulo :data:`SHARDS`, so every replica
finds it from the id alone; a peer's entry in ``peers`` lives in the shard of the
peer id. Statistics and the sweep read every shard (one pipeline each). The task
keys keep their one ``{tasks}`` slot on a cluster too: task traffic goes to one
primary.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field

from peer_grpc.core.session import SessionState

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "SHARDS",
    "IndexShard",
    "RedisKeys",
    "index_member",
    "parse_index_member",
]

#: The prefix of every key when none is configured.
DEFAULT_KEY_PREFIX = "peer-grpc"
#: The shards of the session indexes on a Redis Cluster. Fixed: every replica must
#: agree. Enough to spread over many primaries; few enough that statistics and the
#: sweep, which read every shard, stay cheap.
SHARDS = 64


@dataclass(frozen=True, slots=True)
class IndexShard:
    """The session indexes and counters of one shard (all of them on one Redis)."""

    tag: str

    @property
    def peers(self) -> str:
        return f"{self.tag}:peers"

    @property
    def stats(self) -> str:
        return f"{self.tag}:stats"

    @property
    def live_sets(self) -> tuple[str, str]:
        """The ZSETs of live sessions: handshaking, established."""
        return f"{self.tag}:handshaking", f"{self.tag}:established"

    @property
    def ended_sets(self) -> tuple[str, str]:
        """The ZSETs of ended sessions: terminated, expired."""
        return f"{self.tag}:terminated", f"{self.tag}:expired"

    def state_set(self, state: SessionState) -> str:
        """The ZSET that holds sessions in ``state``."""
        if state in (SessionState.INITIAL, SessionState.HANDSHAKE_SENT):
            return f"{self.tag}:handshaking"
        return f"{self.tag}:{state.name.lower()}"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Builds every key the Redis stores use (see the module's docstring).

    ``sharded`` spreads the session indexes over :data:`SHARDS` hash tags, for a
    Redis Cluster; without it they live under one (the layout on one Redis).
    """

    prefix: str = DEFAULT_KEY_PREFIX
    sharded: bool = False
    #: Every index shard, in shard order.
    shards: tuple[IndexShard, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = (
            [f"{self.prefix}:{{shard:{n}}}" for n in range(SHARDS)]
            if self.sharded
            else [f"{self.prefix}:{{global}}"]
        )
        object.__setattr__(self, "shards", tuple(IndexShard(tag) for tag in tags))

    def session(self, session_id: str) -> tuple[str, str, str]:
        """The session's hash, retry record and its order, in that order."""
        if self.sharded:
            tag = f"{self.shards[_shard(session_id)].tag}:s:{session_id}"
        else:
            tag = f"{self.prefix}:{{s:{session_id}}}"
        return f"{tag}:session", f"{tag}:calls", f"{tag}:order"

    def session_index(self, session_id: str) -> IndexShard:
        """The index shard that holds the session (and shares its slot when sharded)."""
        return self.shards[_shard(session_id)] if self.sharded else self.shards[0]

    def peer_index(self, peer_id: str) -> IndexShard:
        """The index shard whose ``peers`` hash holds the peer's entry."""
        return self.shards[_shard(peer_id)] if self.sharded else self.shards[0]

    @property
    def tasks(self) -> str:
        """The start of every task key; the queue scripts build the rest from it."""
        return f"{self.prefix}:{{tasks}}:"

    def task(self, task_id: str) -> str:
        return f"{self.tasks}task:{task_id}"

    @property
    def task_counts(self) -> str:
        return f"{self.tasks}counts"

    @property
    def task_queue(self) -> str:
        return f"{self.tasks}queue"

    @property
    def task_wake(self) -> str:
        return f"{self.tasks}wake"

    def replica(self, replica_id: str) -> str:
        return f"{self.prefix}:{{r:{replica_id}}}:alive"

    def token_bucket(self, scope: str, key: str) -> str:
        # Hashed: a peer id or an address may hold the braces of a hash tag.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.prefix}:{{b:{scope}:{digest}}}:bucket"

    def owned_tasks(self, peer_id: str) -> str:
        return f"{self.tasks}owned:{peer_id}"

    def open_tasks(self, session_id: str) -> str:
        return f"{self.tasks}open:{session_id}"

    @property
    def tasks_ended(self) -> str:
        return f"{self.tasks}ended"


def _shard(entity_id: str) -> int:
    return zlib.crc32(entity_id.encode()) % SHARDS


def index_member(entity_id: str, peer_id: str) -> str:
    """The member naming a session or task in the shared ZSETs."""
    return json.dumps([entity_id, peer_id], separators=(",", ":"))


def parse_index_member(member: bytes | str) -> tuple[str, str]:
    """The (id, peer id) of an :func:`index_member`."""
    entity_id, peer_id = json.loads(member)
    return str(entity_id), str(peer_id)
