"""Session-store micro-benchmarks: memory, admission time and sweep cost against session count.

``python -m benchmarks.stores N [--window W]`` fills a fresh
:class:`~peer_grpc.stores.memory.sessions.MemorySessionStore` with N established sessions
and prints one JSON object:

- ``bytes_per_session``: what the store allocated per session (tracemalloc),
  everything included (the snapshot, its id and peer id, the token hash, the
  indexes, the expiry structure, the window), the retry cache aside (it is built
  with ``retry_cache_size=0``; ``retry_bytes_per_session`` is what a cache
  holding one outcome adds, and ``cached_admit_us`` an admission with it);
- ``admit_us``: the time of one validate-and-advance (``admit``), averaged over
  many, each its session's first in a new second at every size (see
  :func:`admission_time`);
- ``full_gc_ms``: one full pass of Python's cyclic garbage collector, which
  visits every snapshot: the timings below are taken with it paused;
- ``idle_sweep_us``: one sweep batch that finds nothing due;
- ``sweep_us_per_expired``, ``sweep_max_batch_ms``: sweeping when 1% of the
  sessions have expired, per expired session, and the longest single batch
  (the time the event loop is held).

Each size runs in a process of its own, so that one size's garbage never
counts against another's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import time
import tracemalloc
from typing import Any

from peer_grpc.core.retry import CallKey, answered
from peer_grpc.core.session import Session, SessionState
from peer_grpc.sessions.manager import SWEEP_BATCH, hash_session_token, new_session_token
from peer_grpc.stores.memory.sessions import MemorySessionStore

#: Seconds of idle timeout; the benchmark's clock stays far below it except when sweeping.
IDLE = 60.0
#: Admissions timed per size: enough to average over, few enough for a 1,000-session store.
TIMED_ADMISSIONS = 50_000
#: Calls each session has made before the benchmark's first.
PAST_CALLS = 1000
#: The request digest every benchmark call carries (what a 16-byte blake2b gives).
DIGEST = bytes(range(16))


def session_id(number: int) -> str:
    """A session id shaped like the server's (32 hex characters), made again on demand
    so that the benchmark holds no list of them beside the store's."""
    return f"{number:032x}"


def new_session(number: int, now: float, window: int, token_hash: bytes) -> Session:
    return Session(
        session_id=session_id(number),
        peer_id=f"service-{number:08d}",
        state=SessionState.HANDSHAKE_SENT,
        protocol_version="1.0",
        capabilities=(),
        created_at=now,
        last_activity=now,
        expires_at=now + IDLE,
        # A session some way into its life: numbers past the small ints Python shares.
        sequence_num=PAST_CALLS,
        highest_accepted=PAST_CALLS,
        window=window,
        token_hash=token_hash,
        lifetime_ends_at=now + 86_400,
    )


async def fill(store: MemorySessionStore, count: int, window: int) -> None:
    """Open ``count`` sessions and admit one call on each, as established peers have.

    They arrive evenly over one idle timeout, so their deadlines spread over as many
    seconds as a server's would.
    """
    key = CallKey("Ping", DIGEST)
    for number in range(count):
        now = number * IDLE / count
        # A token hash of its own per session, as real handshakes give.
        token_hash = hash_session_token(new_session_token())
        await store.create(new_session(number, now, window, token_hash))
        await store.admit(session_id(number), PAST_CALLS + 1, key, now, now + IDLE)


async def filled_and_measured(count: int, window: int) -> tuple[MemorySessionStore, float]:
    """A store of ``count`` sessions, and the bytes it allocated per session."""
    gc.collect()
    tracemalloc.start()
    store = MemorySessionStore(retry_cache_size=0)
    before = tracemalloc.get_traced_memory()[0]
    await fill(store, count, window)
    gc.collect()
    session_bytes = (tracemalloc.get_traced_memory()[0] - before) / count
    tracemalloc.stop()
    return store, session_bytes


async def retry_cache_costs(window: int) -> tuple[float, float]:
    """Bytes per session that a retry cache holding one outcome adds, and the time of an
    ``admit`` that remembers the call in it (on a store of 10,000 sessions)."""
    sample = 10_000
    tracemalloc.start()
    bare = MemorySessionStore(retry_cache_size=0)
    await fill(bare, sample, window)
    without = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del bare
    gc.collect()
    tracemalloc.start()
    cached = MemorySessionStore()
    await fill(cached, sample, window)
    for number in range(sample):
        outcome = answered(b"", PAST_CALLS + 1)
        await cached.record(session_id(number), PAST_CALLS + 1, outcome)
    with_cache = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (with_cache - without) / sample, await admission_time(cached, range(sample), IDLE - 1)


async def admission_time(store: MemorySessionStore, numbers: range, now: float) -> float:
    """Microseconds per ``admit`` from ``now`` on, on sessions among ``numbers``.

    The same work at every size: the sessions are taken in passes, each in a random
    order, and the clock moves a second between passes, so that every admission is its
    session's first in a new second (its deadline moves in the expiry wheel) whether the
    store holds a thousand sessions, each admitted many times, or a million, each
    admitted once. What remains to differ is the size.
    """
    key = CallKey("Ping", DIGEST)
    next_sequence: dict[int, int] = {}
    calls: list[tuple[str, int, float]] = []
    passes = 0
    while len(calls) < TIMED_ADMISSIONS:
        for number in random.sample(numbers, min(len(numbers), TIMED_ADMISSIONS - len(calls))):
            sequence = next_sequence.get(number, PAST_CALLS + 2)  # :func:`fill` admitted one
            next_sequence[number] = sequence + 1
            calls.append((session_id(number), sequence, now + passes))
        passes += 1
    started = time.perf_counter()
    for sid, sequence, at in calls:
        await store.admit(sid, sequence, key, at, at + 2 * IDLE)
    return (time.perf_counter() - started) / len(calls) * 1e6


async def sweep_costs(store: MemorySessionStore, count: int, doomed: int) -> dict[str, float]:
    """Sweep with nothing due, then with the first ``doomed`` sessions expired."""
    started = time.perf_counter()
    rounds = 1000
    for _ in range(rounds):
        await store.sweep(2.0, SWEEP_BATCH)
    idle_us = (time.perf_counter() - started) / rounds * 1e6

    # The rest stay active past the deadlines of the doomed, the first to arrive.
    for number in range(doomed, count):
        await store.touch(session_id(number), IDLE - 1, IDLE - 1 + 2 * IDLE)
    later = doomed * IDLE / count + IDLE
    batches: list[float] = []
    expired = 0
    more = True
    while more:
        started = time.perf_counter()
        result = await store.sweep(later + 1, SWEEP_BATCH)
        batches.append(time.perf_counter() - started)
        expired += result.expired
        more = result.more
    return {
        "idle_sweep_us": idle_us,
        "expired": expired,
        "sweep_us_per_expired": sum(batches) / max(expired, 1) * 1e6,
        "sweep_max_batch_ms": max(batches) * 1e3,
        "sweep_batches": len(batches),
    }


async def run(count: int, window: int) -> dict[str, Any]:
    store, session_bytes = await filled_and_measured(count, window)
    started = time.perf_counter()
    gc.collect()
    full_collection_ms = (time.perf_counter() - started) * 1e3
    # The timings are the store's own: a pass of the cyclic collector over a million
    # snapshots (reported above) would land in whichever batch it interrupted.
    gc.disable()
    try:
        doomed = max(count // 100, 1)
        result: dict[str, Any] = {
            "sessions": count,
            "window": window,
            "bytes_per_session": session_bytes,
            "full_gc_ms": full_collection_ms,
        }
        result.update(await sweep_costs(store, count, doomed))
        # After the sweep, on the sessions it left: later than every deadline it saw.
        result["admit_us"] = await admission_time(store, range(doomed, count), IDLE + 2)
        del store
        retry_bytes, cached_admit_us = await retry_cache_costs(window)
    finally:
        gc.enable()
    result.update(retry_bytes_per_session=retry_bytes, cached_admit_us=cached_admit_us)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sessions", type=int)
    parser.add_argument("--window", type=int, default=0, help="window width; 0: strict")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.sessions, args.window))), flush=True)


if __name__ == "__main__":
    main()
