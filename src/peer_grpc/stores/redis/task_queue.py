"""The Redis task queue: a stream with one consumer group that every runner reads.

DelegateTask stores a task and adds it to the queue stream in one script. Runners
claim with XREADGROUP (inside a script that also moves the task to WORKING, within
the running limit counted in Redis); a claimed task's queue entry stays in the
runner's pending entries list, and its idle time there is the runner's lease:
renewing resets it (XCLAIM of all the runner's entries, one script per tick), and
anyone's XAUTOCLAIM takes over entries idle longer than the lease. Every write by a
runner names its claim (its queue entry, never the same twice), and the script
refuses it if another claim holds the task by then.

A task snapshot is a stream entry (see :mod:`peer_grpc.stores.redis.task_scripts`);
:func:`encode_snapshot` and :func:`decode_snapshot` turn it into a :class:`Task`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, replace
from typing import Any

from peer_grpc.core.errors import (
    InternalError,
    InvalidTransition,
    TaskLimitReached,
    TaskNotFound,
)
from peer_grpc.core.task import Progress, Task, TaskChange, TaskState
from peer_grpc.stores.protocols import Claim, Enqueued, QueueLimits, ReclaimResult
from peer_grpc.stores.redis import task_scripts
from peer_grpc.stores.redis.connection import RedisClient, translate_unavailable, unavailable_errors
from peer_grpc.stores.redis.keys import RedisKeys
from peer_grpc.stores.redis.stream_watch import StreamWatch

__all__ = ["RedisTaskQueue", "decode_entry", "encode_snapshot"]

log = logging.getLogger(__name__)

#: Every so many reclaims, consumers idle an hour with nothing pending leave the group
#: (runners that were killed, and so never left it themselves).
_PRUNE_EVERY = 100
#: Tries of a change that lost the race to a concurrent change of the same task.
_CHANGE_TRIES = 32
#: How a snapshot field set by a script is read (see task_scripts).
_FIELD_PARSERS: dict[bytes, tuple[str, Any]] = {
    b"state": ("state", int),
    b"attempt": ("attempt", int),
    b"max_attempts": ("max_attempts", int),
    b"ordinal": ("ordinal", int),
    b"updated_at": ("updated_at", float),
    b"error_code": ("error_code", bytes.decode),
    b"error_message": ("error_message", bytes.decode),
}


#: The fields every snapshot's JSON holds, in order: those of the first release.
_ALWAYS = (
    "task_id", "task_type", "owner_peer_id", "session_id", "state", "created_at",
    "updated_at", "timeout", "result", "error_code", "error_message", "version",
    "ordinal", "attempt", "max_attempts",
)  # fmt: skip
#: Later fields, written only when set: a replica of an older release reads a snapshot
#: of a task that uses none of them, and an older snapshot reads as their defaults.
_OPTIONAL = tuple(
    (field.name, field.default)
    for field in fields(Task)
    if field.name not in _ALWAYS and field.default is not MISSING
)
_KNOWN = frozenset(field.name for field in fields(Task))


def encode_snapshot(task: Task) -> str:
    """The snapshot's JSON (the ``task`` field of its entry)."""
    # Field by field: dataclasses.asdict deep-copies, and costs twice as much.
    fields = {name: getattr(task, name) for name in _ALWAYS}
    fields["state"] = int(task.state)
    for name, default in _OPTIONAL:
        value = getattr(task, name)
        if value != default:
            fields[name] = value
    return json.dumps(fields, separators=(",", ":"))


def decode_snapshot(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Task:
    """The task a snapshot entry holds: its JSON, with the fields scripts set on top.

    Fields a newer release added are left out, so that a rolling upgrade's older
    replicas can still read its tasks."""
    raw: dict[str, Any] = json.loads(fields[b"task"])
    written_in = raw.get("attempt")
    for field, (name, parse) in _FIELD_PARSERS.items():
        value = fields.get(field)
        if value is not None:
            raw[name] = parse(value)
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    raw["version"] = int(entry_id.partition("-")[0])
    state = raw["state"] = TaskState(raw["state"])
    if not _KNOWN.issuperset(raw):
        raw = {name: value for name, value in raw.items() if name in _KNOWN}
    if "progress" in raw:
        raw["progress"] = Progress(*raw["progress"])
    # A script may have moved the task on from the snapshot its JSON was copied from
    # (requeued, claimed, or ended when its runner was lost): a question or an answer
    # belongs to the one state alone, and progress to the one run.
    if state is not TaskState.INPUT_REQUIRED:
        raw.pop("question", None)
    if state is not TaskState.WORKING:
        raw.pop("answer", None)
    if state is TaskState.SUBMITTED or raw.get("attempt") != written_in:
        # Queued again, or claimed for a run after the one that reported.
        raw.pop("progress", None)
        raw.pop("partial_result", None)
    return Task(**raw)


class RedisTaskQueue:
    """The queue of a :class:`~peer_grpc.stores.redis.RedisTaskStore` (its ``queue``).

    Args:
        client: the store's Redis client.
        keys: the store's key layout.
        retention: seconds a finished task is kept.
        retry_after: seconds callers are told to wait while Redis is away.
        watch: the store's stream watch, which also tells idle runners of new work.
    """

    def __init__(
        self,
        client: RedisClient,
        keys: RedisKeys,
        *,
        retention: float,
        retry_after: float,
        watch: StreamWatch,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._retention = retention
        self._retry_after = retry_after
        self._watch = watch
        self._delegate = client.register_script(task_scripts.DELEGATE)
        self._claim = client.register_script(task_scripts.CLAIM)
        self._move = client.register_script(task_scripts.MOVE)
        self._renew = client.register_script(task_scripts.RENEW)
        self._reclaim = client.register_script(task_scripts.RECLAIM)
        self._hand_back = client.register_script(task_scripts.HAND_BACK)
        #: The newest wake the last claim saw (see :meth:`wait_for_work`).
        self._last_wake = "0-0"
        #: Where the next reclaim goes on scanning the pending list.
        self._reclaim_cursor = "0-0"
        self._reclaims = 0

    async def enqueue(
        self,
        task: Task,
        payload: Mapping[str, Any],
        limits: QueueLimits | None,
        *,
        runner_id: str = "",
        claim: int = 0,
    ) -> Enqueued:
        """See :meth:`peer_grpc.stores.protocols.TaskQueue.enqueue`; ``limits`` None
        stores the task whatever the counts (a plain create)."""
        keys = self._keys
        args = [
            keys.tasks,
            encode_snapshot(task),
            json.dumps(payload, separators=(",", ":")),
            task_scripts.pack(
                task.task_id,
                int(task.state),
                task.max_attempts,
                task.session_id,
                task.owner_peer_id,
                repr(self._retention),
                repr(task.updated_at),
                limits.max_running if limits else 0,
                limits.max_per_session if limits else 0,
                limits.max_queued if limits else 0,
                runner_id,
                claim,
            ),
        ]
        with self._unavailable("queueing a task"):
            reply = await self._delegate(keys=[keys.task_counts], args=args)
        verdict = reply[0]
        if verdict == b"OK":
            return Enqueued(replace(task, ordinal=int(reply[1])), tuple(_claims(reply[2])))
        if verdict == b"COLLISION":
            raise ValueError("task id collision")
        assert limits is not None
        if verdict == b"SESSION_LIMIT":
            raise TaskLimitReached("session", limits.max_per_session, limits.retry_after)
        if limits.max_queued:
            raise TaskLimitReached("queue", limits.max_queued, limits.retry_after)
        raise TaskLimitReached("server", limits.max_running, limits.retry_after)

    async def claim(self, runner_id: str, count: int, now: float) -> Sequence[Claim]:
        with self._unavailable("claiming tasks"):
            last_wake, claims = await self._claim(
                keys=[self._keys.task_counts],
                args=[self._keys.tasks, runner_id, count, repr(now)],
            )
        self._last_wake = _bytes(last_wake).decode()
        return _claims(claims)

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 - a poll bound
        # Until a wake newer than the last claim saw: a task queued since then, which no
        # replica claimed as it queued it. The replica's one stream reader does the
        # waiting. Redis away: the next claim says so, and the runner backs off there.
        try:
            await asyncio.wait_for(
                self._watch.wait_after(self._keys.task_wake, self._last_wake), timeout
            )
        except TimeoutError:
            pass
        except unavailable_errors:
            await asyncio.sleep(min(timeout, self._retry_after))

    async def renew(
        self, runner_id: str, held: Sequence[Claim], now: float, orphan_after: float
    ) -> set[str]:
        args: list[str | int] = [self._keys.tasks, runner_id, _ms(orphan_after), repr(now)]
        for claim in held:
            args += [claim.task.task_id, claim.lease]
        with self._unavailable("renewing task leases"):
            lost, orphans = await self._renew(keys=[self._keys.task_counts], args=args)
        if orphans:
            log.warning(
                "%d tasks were claimed for runner %s but it never learned of them (a lost "
                "reply); they went back to the queue",
                orphans,
                runner_id,
            )
        return {task_id.decode() for task_id in lost}

    async def finish(self, claim: Claim, change: TaskChange, now: float) -> Task | None:
        task = latest = claim.task
        for _ in range(_CHANGE_TRIES):
            try:
                changed = latest.changed(change, now)
            except InvalidTransition:  # it ended, or went back to the queue
                return None
            verdict = await self.move(latest, changed, fence=claim.lease)
            if verdict == b"OK":
                return changed
            if verdict in (b"LOST", b"GONE"):
                return None
            found = await self.get(task.task_id)  # CONFLICT: judge the change against it
            if found is None:
                return None
            latest = found
        raise InternalError(f"task {task.task_id} kept changing under its end")

    async def reclaim(self, runner_id: str, lease: float, now: float, limit: int) -> ReclaimResult:
        self._reclaims += 1
        prune = "1" if self._reclaims % _PRUNE_EVERY == 0 else "0"
        args: list[str | int | float] = [
            self._keys.tasks,
            runner_id,
            _ms(lease),
            limit,
            repr(now),
            self._retention,
            self._reclaim_cursor,
            prune,
        ]
        with self._unavailable("reclaiming tasks"):
            requeued, ended, cursor = await self._reclaim(keys=[self._keys.task_counts], args=args)
        # XAUTOCLAIM scans a bounded stretch of the pending list per call: go on from
        # where it stopped, so that lapsed leases deep in a long list are found too.
        self._reclaim_cursor = _bytes(cursor).decode()
        return ReclaimResult(requeued=int(requeued), ended=int(ended))

    async def hand_back(self, runner_id: str, task_ids: Sequence[str], now: float) -> int:
        with self._unavailable("handing back tasks"):
            handed = await self._hand_back(
                keys=[self._keys.task_counts],
                args=[self._keys.tasks, runner_id, repr(now), repr(self._retention), *task_ids],
            )
        return int(handed)

    async def unfinished(self, session_id: str) -> Sequence[str]:
        with self._unavailable("listing a session's tasks"):
            members = await self._redis.smembers(self._keys.open_tasks(session_id))
        return sorted(_bytes(member).decode() for member in members)

    # The store's side: reading, following and changing one task.

    async def changes_after(self, task_id: str, version: int) -> Sequence[Task]:
        key = self._keys.task(task_id)
        while True:
            with self._unavailable("watching a task"):
                entries = await self._redis.xrange(key, min=f"{version + 1}-0")
                if entries:
                    return [decode_entry(entry) for entry in entries]
                if not await self._redis.exists(key):
                    raise TaskNotFound(f"no task {task_id}")
                # Until a newer entry comes, or the poll interval passes; the replica's
                # one reader waits for every watcher, which holds no connection.
                await self._watch.wait(key, version)

    async def get(self, task_id: str) -> Task | None:
        with self._unavailable("reading a task"):
            entries = await self._redis.xrevrange(self._keys.task(task_id), count=1)
        return decode_entry(entries[0]) if entries else None

    async def change(self, task_id: str, change: TaskChange, now: float) -> Task:
        """Apply ``change`` unfenced (CancelTask, a session's end); see TaskStore.change."""
        for _ in range(_CHANGE_TRIES):
            latest = await self.get(task_id)
            if latest is None:
                raise TaskNotFound(f"no task {task_id}")
            task = latest.changed(change, now)  # raises InvalidTransition
            verdict = await self.move(latest, task)
            if verdict == b"GONE":
                raise TaskNotFound(f"no task {task_id}")
            if verdict == b"OK":
                return task
        raise InternalError(
            f"task {task_id} kept changing under a change for {_CHANGE_TRIES} tries"
        )

    async def move(self, latest: Task, task: Task, *, fence: str | None = None) -> bytes:
        """Append ``task``, computed from ``latest``, if the store still holds ``latest``
        (and, with ``fence``, the hold of that queue entry still runs it): the MOVE script."""
        with self._unavailable("changing a task"):
            verdict: bytes = await self._move(
                keys=[self._keys.task_counts],
                args=[
                    self._keys.tasks,
                    encode_snapshot(task),
                    task_scripts.pack(
                        task.task_id,
                        latest.version,
                        int(task.state),
                        task.attempt,
                        "" if fence is None else fence,
                        repr(task.updated_at),
                        repr(self._retention),
                    ),
                ],
            )
        return verdict

    def _unavailable(self, what: str) -> Any:
        return translate_unavailable(what, self._retry_after)


def decode_entry(entry: Any) -> Task:
    """A task from a stream entry as redis-py reads it: (id, fields)."""
    return decode_snapshot(entry[0], entry[1])


def _claims(reply: Sequence[Any]) -> list[Claim]:
    claims = []
    for entry_id, flat, payload in reply:
        fields = {_bytes(flat[i]): _bytes(flat[i + 1]) for i in range(0, len(flat), 2)}
        task = decode_snapshot(_bytes(entry_id), fields)
        claims.append(Claim(task, json.loads(payload), lease=fields[b"entry"].decode()))
    return claims


def _bytes(value: bytes | str | int) -> bytes:
    # redis-py hands back bytes; a Lua number comes back an int.
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
