"""Where the Redis stores keep what: the key layout, in one place.

Every key starts with a prefix (``peer-grpc`` unless configured), so that several
deployments can share one Redis. The part in braces is the Redis Cluster hash
tag: keys with the same tag live in the same slot, which is what lets one Lua
script touch all of them atomically.

Per session (tag ``{s:<session id>}``; one script admits a call on all three)::

    <prefix>:{s:<id>}:session   HASH  the session: peer, state, times, the highest
                                      accepted sequence as two 32-bit halves (hi, lo),
                                      the server's seqnum, window width and ring
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

Shared indexes and counters (tag ``{global}``; one script updates them together)::

    <prefix>:{global}:peers          HASH  peer id -> its live session id
    <prefix>:{global}:handshaking    ZSET  live sessions in INITIAL or HANDSHAKE_SENT
    <prefix>:{global}:established    ZSET  live ESTABLISHED sessions
    <prefix>:{global}:terminated     ZSET  ended sessions kept for their retention
    <prefix>:{global}:expired        ZSET  likewise
    <prefix>:{global}:stats          HASH  created/expired/terminated/sequence_errors totals

Members of the session ZSETs are ``["<session id>","<peer id>"]`` (JSON), scored
by the idle deadline as it was when last looked at (live sets) or by when to
forget the session (ended sets); the sweep corrects live scores lazily. Activity
writes outside the session's own slot only as the admission script's side steps on a
single Redis: a session's first call moves it from ``handshaking`` to
``established``, and a refused sequence counts in ``stats``, in the same round trip
(issue 17). These global keys are what a Redis Cluster deployment must shard per
slot (issue 19); until then the Redis store runs on one Redis (or a primary with
replicas). Sessions keep their member in a ``member`` field of their hash for the
first of these. Members of ``tasks-ended`` are ``["<task id>","<peer id>"]``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from peer_grpc.core.session import SessionState

__all__ = ["DEFAULT_KEY_PREFIX", "RedisKeys", "index_member", "parse_index_member"]

#: The prefix of every key when none is configured.
DEFAULT_KEY_PREFIX = "peer-grpc"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Builds every key the Redis stores use (see the module's docstring)."""

    prefix: str = DEFAULT_KEY_PREFIX

    def session(self, session_id: str) -> tuple[str, str, str]:
        """The session's hash, retry record and its order, in that order."""
        tag = f"{self.prefix}:{{s:{session_id}}}"
        return f"{tag}:session", f"{tag}:calls", f"{tag}:order"

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

    def _global(self, name: str) -> str:
        return f"{self.prefix}:{{global}}:{name}"

    @property
    def peers(self) -> str:
        return self._global("peers")

    @property
    def stats(self) -> str:
        return self._global("stats")

    @property
    def tasks_ended(self) -> str:
        return f"{self.tasks}ended"

    @property
    def live_sets(self) -> tuple[str, str]:
        """The ZSETs of live sessions: handshaking, established."""
        return self._global("handshaking"), self._global("established")

    def state_set(self, state: SessionState) -> str:
        """The ZSET that holds sessions in ``state``."""
        if state in (SessionState.INITIAL, SessionState.HANDSHAKE_SENT):
            return self._global("handshaking")
        return self._global(state.name.lower())


def index_member(entity_id: str, peer_id: str) -> str:
    """The member naming a session or task in the shared ZSETs."""
    return json.dumps([entity_id, peer_id], separators=(",", ":"))


def parse_index_member(member: bytes | str) -> tuple[str, str]:
    """The (id, peer id) of an :func:`index_member`."""
    entity_id, peer_id = json.loads(member)
    return str(entity_id), str(peer_id)
